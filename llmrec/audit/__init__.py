"""Audits of what a model still reveals: membership inference, forgotten-pair rank, attributes."""

from llmrec.audit.attributes import (
    AGE_GROUPS,
    ATTACKERS,
    DEFAULT_ATTRIBUTES,
    age_group,
    attack,
    attribute_labels,
    audit_attributes,
    balanced_sample,
)
from llmrec.audit.membership import (
    MembershipResult,
    membership_inference,
    pair_features,
    pair_ranks,
    rank_summary,
    sample_non_members,
)

__all__ = [
    "AGE_GROUPS",
    "ATTACKERS",
    "DEFAULT_ATTRIBUTES",
    "MembershipResult",
    "age_group",
    "attack",
    "attribute_labels",
    "audit_attributes",
    "balanced_sample",
    "membership_inference",
    "pair_features",
    "pair_ranks",
    "rank_summary",
    "sample_non_members",
]
