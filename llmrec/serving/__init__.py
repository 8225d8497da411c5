"""Serving: CRAGRU's retrieval + LLM regeneration for one user, its served-score blend and the
served-recommendation log."""
