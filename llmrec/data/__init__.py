"""The data model: datasets (RecBole atomic files), splits, forget requests, the forget ledger
and the retained view every artifact is built from."""

from llmrec.data.dataset import DEFAULT_DATASET, Dataset, load_dataset
from llmrec.data.ledger import Ledger, LedgerEntry
from llmrec.data.parts import RetainedData
from llmrec.data.requests import (
    KINDS,
    ForgetRequest,
    load_requests,
    parse_requests,
    select_interactions,
    select_users,
)
from llmrec.data.retained import RetainedView
from llmrec.data.split import Split, leave_one_out, make_split, random_split
from llmrec.data.synthetic import SyntheticSpec, write_synthetic

__all__ = [
    "DEFAULT_DATASET",
    "KINDS",
    "Dataset",
    "ForgetRequest",
    "Ledger",
    "LedgerEntry",
    "RetainedData",
    "RetainedView",
    "Split",
    "SyntheticSpec",
    "leave_one_out",
    "load_dataset",
    "load_requests",
    "make_split",
    "parse_requests",
    "random_split",
    "select_interactions",
    "select_users",
    "write_synthetic",
]
