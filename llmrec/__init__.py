"""llmrec: recommendation unlearning with forget-aware retrieval + LLM regeneration and
embedding unlearners, side by side on one data model."""

__version__ = "0.1.0"
