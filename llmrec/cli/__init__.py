"""The ``llmrec`` command line (:mod:`llmrec.cli.main`).

The command's process lets idle OpenMP threads sleep instead of spin (``OMP_WAIT_POLICY``, set
before torch is imported, unless the environment sets it): on a machine whose cores are shared,
spinning threads fight the other processes: on 2 cores at load 4, SmolLM2 took 17.7 s to read a
700-token prompt and 0.89 s per decoded token spinning, 5.4 s and 0.06 s sleeping
(docs/smollm2.md).
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
