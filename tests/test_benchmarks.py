"""The benchmark scripts run and report what they promise (at tiny sizes; no timing assertions —
the figures themselves are measured by hand, see each script's docstring)."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def bench(name: str, *args: str, timeout: float = 120) -> str:
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / name), *args], cwd=REPO,
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    return out.stdout


def test_bench_io_compares_driver_and_raw_on_the_same_emulated_instruments():
    rows = json.loads(bench("bench_io.py", "--n", "20", "--repeat", "1", "--json"))
    ops = [r["operation"] for r in rows]
    assert any("AFG3152C" in o and "query" in o for o in ops)
    assert any("set + error check" in o for o in ops)
    assert any("VP1" in o for o in ops)
    for r in rows:
        for key in ("driver_us", "raw_us", "ratio", "driver_per_s"):
            assert math.isfinite(r[key]) and r[key] > 0, (r["operation"], key, r[key])
        assert r["ratio"] == pytest.approx(r["driver_us"] / r["raw_us"])
    # the set is compared against a replay of exactly the messages the driver sent
    set_row = next(r for r in rows if "set + error check" in r["operation"])
    assert "SOURce1:FREQuency:FIXed" in set_row["what"] and "ERR" in set_row["what"].upper()


def test_bench_compile_reports_the_budget_ratio():
    out = bench("bench_compile.py", "--repeat", "1")
    assert "x the 1 s budget" in out


def test_bench_twin_reports_each_stage():
    out = bench("bench_twin.py", "--trials", "1e6", "--repeat", "1", "--stream-trials", "1e5")
    for stage in ("events", "records", "stream", "count"):
        assert f"  {stage}" in out
    assert "ratio to goal" in out


def test_bench_tags_decodes_and_counts():
    out = bench("bench_tags.py", "--records", "2e4", "--numpy-records", "2e4", "--repeat", "1")
    assert "counts:" in out and "'coincidences'" in out
