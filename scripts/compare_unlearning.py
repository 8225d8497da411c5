#!/usr/bin/env python
"""Compare LLM and embedding unlearning on the same forget requests (wrapper of ``llmrec compare``).

Examples::

    # the default comparison: every method on 5% random users, LEGO on three attributes
    python scripts/compare_unlearning.py
    # a custom one, three seeds, LightGCN base
    python scripts/compare_unlearning.py --scenario core:5%users --methods retrain,finetune,alteraser \\
        --base lightgcn --seeds 3

Writes ``results.json``, ``results.csv``, ``results.md``, PNG plots and a self-contained
``report.html`` into ``WORKSPACE/runs/compare-TIME/``. All ``llmrec compare`` options apply.
"""

import sys

from llmrec.cli.main import main

DEFAULT = ["--scenario", "random:5%users", "--scenario", "attribute:gender,age,occupation"]

if __name__ == "__main__":
    args = sys.argv[1:]
    if "--scenario" not in args:
        args = DEFAULT + args
    raise SystemExit(main(["compare", *args]))
