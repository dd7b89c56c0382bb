"""`python -m benchmarks.decode` runs end to end on a small stream and says whether two
checkouts keep the same lines (here this checkout twice, so they must)."""

from __future__ import annotations

import pytest

from benchmarks.decode import ROOT, main


def test_the_decode_benchmark_compares_two_checkouts(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--mix", "400", "--cows", "3", "--rounds", "1", "--baseline", str(ROOT)]) == 0
    text = capsys.readouterr().out
    for shape in ("mix, single", "mix, arrays of 50", "cows, single", "cows, arrays of 50"):
        assert f"- {shape}: decode" in text
    assert text.count("lines and rejections identical") == 4
