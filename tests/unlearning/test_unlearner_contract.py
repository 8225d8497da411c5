"""The contract every registered unlearning method keeps: one matrix, methods x checks
(:mod:`llmrec.testing.unlearners`, where the checks live for plug-in authors too).

The methods come from the registry when the tests are collected (:func:`method_cases`), so a new
``@register_method`` class is checked without editing this file.
"""

from __future__ import annotations

import numpy as np
import pytest

from llmrec.data.split import TEST, TRAIN
from llmrec.testing.unlearners import CHECKS, FORGET_USERS, method_cases, request_of
from llmrec.unlearning import make_task


@pytest.mark.parametrize("check", [pytest.param(c, id=c.__name__[6:]) for c in CHECKS])
@pytest.mark.parametrize("name", method_cases())
def test_unlearner_contract(name, check, tiny):
    check(name, tiny)


def test_the_requests_of_the_checks_are_real(tiny):
    """The checks' requests remove training data, and the held-out parts stay out of it."""
    task = make_task((tiny.ds, tiny.split), [request_of("user", tiny)], tiny.models["bpr"])
    assert len(task.forget[0]) > 0 and set(task.forget[0].tolist()) <= set(FORGET_USERS.tolist())
    assert not np.isin(task.train[0], FORGET_USERS).any()
    assert (tiny.split.mask(TEST) & tiny.split.mask(TRAIN)).sum() == 0
