"""The ledger-reads benchmark's options: a request count of zero or less is refused by the
parser, before a workspace is built (it printed a row of failed commands)."""

from __future__ import annotations

import argparse

import pytest

from scripts.benchmarks import ledger_reads


@pytest.mark.parametrize("size", ["0", "-5", "1e3", "0x10"])
def test_meaningless_sizes_are_refused(size, capsys):
    p = argparse.ArgumentParser()
    ledger_reads.configure(p)
    with pytest.raises(SystemExit) as exc:
        p.parse_args(["--sizes", size])
    assert exc.value.code == 2
    assert "--sizes" in capsys.readouterr().err


def test_sizes_default_to_the_acceptance_scale():
    p = argparse.ArgumentParser()
    ledger_reads.configure(p)
    assert p.parse_args([]).sizes == [10_000, 100_000, 1_000_000]
