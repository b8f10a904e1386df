"""The studies' resume (benchmarks/_common.py): a stored row is kept only when the installed asymret measured it."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from _common import MeasuredBy, source_fingerprint  # noqa: E402


def test_the_source_fingerprint_is_stable_within_one_install() -> None:
    assert source_fingerprint() == source_fingerprint()
    assert len(source_fingerprint()) == 16


def test_rows_another_asymret_measured_are_measured_again_once(tmp_path: Path, capsys) -> None:
    current = source_fingerprint()
    stored = {"kd/same": current, "kd/older": "0000000000000000"}  # "kd/unstamped": written before stamps existed
    measured_by = MeasuredBy(tmp_path / "out.json", stored, ["kd/same", "kd/older", "kd/unstamped"])
    assert measured_by.stale == {"kd/older", "kd/unstamped"}
    assert "2 stored row(s)" in capsys.readouterr().out
    assert measured_by.measure("kd/older") is True  # empty its stored runs, then measure
    assert measured_by.measure("kd/older") is False  # the next seed appends to the fresh runs
    assert measured_by.measure("kd/same") is False
    assert measured_by.rows == {"kd/same": current, "kd/older": current}  # unstamped, not measured: no stamp claimed


def test_nothing_is_said_when_every_row_is_current(tmp_path: Path, capsys) -> None:
    current = source_fingerprint()
    measured_by = MeasuredBy(tmp_path / "out.json", {"cell": current}, ["cell"])
    assert measured_by.stale == set()
    assert capsys.readouterr().out == ""
