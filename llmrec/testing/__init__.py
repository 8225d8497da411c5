"""Contract suites and small fixtures a plug-in author runs on their own extension
(:mod:`llmrec.testing.backend`: serving backends)."""
