"""Privacy attacks: what a model still reveals (membership inference, forgotten-pair rank, attributes).

Not to be confused with the compliance audits of :mod:`llmrec.forget.audit` (does any artifact
still hold forgotten data?): these attack a model and measure how much it leaks.
"""

from llmrec.privacy.attributes import (
    AGE_GROUPS,
    ATTACKERS,
    DEFAULT_ATTRIBUTES,
    age_group,
    attack,
    attribute_inference,
    attribute_labels,
    balanced_sample,
)
from llmrec.privacy.membership import (
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
    "attribute_inference",
    "balanced_sample",
    "membership_inference",
    "pair_features",
    "pair_ranks",
    "rank_summary",
    "sample_non_members",
]
