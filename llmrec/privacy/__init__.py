"""Privacy attacks: what a model still reveals (membership inference, forgotten-pair rank, attributes).

Not to be confused with the compliance audits of :mod:`llmrec.forget.audit` (does any artifact
still hold forgotten data?): these attack a model and measure how much it leaks.
"""

from __future__ import annotations

from typing import Any

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

#: from :mod:`llmrec.privacy.membership`, loaded on first use (it imports torch; the CLI, which
#: imports this package for the attackers' names, starts without it)
_MEMBERSHIP = (
    "MembershipResult",
    "membership_inference",
    "pair_features",
    "pair_ranks",
    "rank_summary",
    "sample_non_members",
)


def __getattr__(name: str) -> Any:
    if name in _MEMBERSHIP:
        from llmrec.privacy import membership

        return getattr(membership, name)
    raise AttributeError(f"module 'llmrec.privacy' has no attribute {name!r}")


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
