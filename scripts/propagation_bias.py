#!/usr/bin/env python
"""Propagation bias of unlearning methods on users similar to the forgotten (``llmrec bias``).

Example::

    python scripts/propagation_bias.py --scenario random:5%users --methods retrain,finetune,alteraser

For the forgotten users' neighbours (top-k cosine of original interaction rows) and as many random
controls, reports mean ΔNDCG@K and top-K divergence against the retrained gold and against the
original model, and the excess (neighbours − controls). Writes the same report files as
``compare_unlearning.py``.
"""

import sys

from llmrec.cli.main import main

if __name__ == "__main__":
    args = sys.argv[1:]
    if "--scenario" not in args:
        args = ["--scenario", "random:5%users", *args]
    raise SystemExit(main(["bias", *args]))
