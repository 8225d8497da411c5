"""Ranking evaluation with RecBole's full-ranking protocol."""

from llmrec.evaluation.metrics import METRICS, ranking_metrics
from llmrec.evaluation.ranking import UserItemCSR, evaluate_model, evaluate_ranking

__all__ = ["METRICS", "UserItemCSR", "evaluate_model", "evaluate_ranking", "ranking_metrics"]
