"""Experiments: the comparison harness (``compare/``), the CRAGRU scenario and the paper's
protocol. Scripts and ``llmrec compare`` import them; nothing below this layer does."""
