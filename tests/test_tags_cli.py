"""``labctl tags`` through ``labctl.cli.main``: outputs, exit codes, and errors without tracebacks."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from labctl.cli import main
from labctl.tags.ptu import write_ptu
from labctl.tags.records import encode

TESTDATA = Path(__file__).parents[2] / "shared" / "testdata"
T3_FILE = TESTDATA / "hydraharp_v2_t3_beads.ptu"
T2_FILE = TESTDATA / "hydraharp_v2_t2.ptu"
INFO_KEYS = {"record_type", "mode", "records", "photons", "overflows", "markers", "global_resolution",
             "resolution", "first_time", "last_time"}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return rc, out, err


@pytest.fixture(scope="module")
def sim_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """TimeHarp 260 N T3, 1 us sync period, 25 ps bins: pump 0-20 ns, read 100-140 ns.

    Trials (syncs): 5 herald 1 + read 2; 9 herald 2 + read 1; 12 herald 1 only; 2000 read 1 only
    with a second click outside the windows; the records end with the wrap at sync 2048.
    """
    ns = [5, 5, 9, 9, 12, 2000, 2000]
    ch = [0, 1, 1, 0, 0, 0, 0]
    dt = [400, 4400, 10, 5000, 799, 5599, 9000]  # 25 ps bins: 10 ns, 110 ns, 0.25 ns, 125 ns, ...
    recs = encode("TimeHarp260N_T3", ns, ch, dtime=dt, end=3000)
    return write_ptu(tmp_path_factory.mktemp("cli") / "sim.ptu", recs, "TimeHarp260N_T3",
                     global_resolution=1e-6, resolution=25e-12)


def test_info_json_on_simulated_file(capsys: pytest.CaptureFixture[str], sim_file: Path) -> None:
    rc, out, _ = run(capsys, "tags", "info", str(sim_file), "--json")
    assert rc == 0
    info = json.loads(out)
    assert INFO_KEYS <= set(info)
    assert info["record_type"] == "TimeHarp260N_T3" and info["mode"] == "T3"
    assert info["photons"] == {"0": 5, "1": 2}
    assert info["first_time"] == pytest.approx(5e-6) and info["last_time"] == pytest.approx(2000e-6)
    assert info["overflows"] == 2 and info["overflow_wraps"] == 2


@pytest.mark.skipif(not T3_FILE.exists(), reason="../shared/testdata not present")
def test_info_on_real_files(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "tags", "info", str(T3_FILE), "--json", "--no-numba")
    assert rc == 0
    info = json.loads(out)
    assert info["photons"] == {"0": 52833, "1": 20954} and info["markers"] == 100
    rc, out, _ = run(capsys, "tags", "info", str(T2_FILE))
    assert rc == 0 and "HydraHarpV2_T2" in out and "305,565" in out


def test_herald_counts(capsys: pytest.CaptureFixture[str], sim_file: Path) -> None:
    args = ["tags", "herald", str(sim_file), "--pump-window", "0ns:20ns", "--read-window", "100 ns:140 ns"]
    rc, out, _ = run(capsys, *args, "--json")
    assert rc == 0
    counts = json.loads(out)
    assert counts == {"trials": 2048, "pump": [2, 1], "read": [2, 1], "coincidences": [[0, 1], [1, 0]]}
    rc, out, _ = run(capsys, *args)  # readable form is the counts file, as YAML
    assert rc == 0 and yaml.safe_load(out) == counts
    rc, out, _ = run(capsys, *args, "--json", "--channels", "1,0", "--trials", "5000", "--diagnostics")
    got = json.loads(out)
    assert got["trials"] == 5000 and got["pump"] == [1, 2] and got["coincidences"] == [[0, 1], [1, 0]]
    d = got["diagnostics"]
    assert d["channels"] == [1, 0] and d["double_heralds"] == 0 and d["clicks_outside_windows"] == [0, 1]
    rc, out, _ = run(capsys, *args, "--json", "--trials-from", "first")
    assert json.loads(out)["trials"] == 1996


def test_herald_input_errors(capsys: pytest.CaptureFixture[str], sim_file: Path, tmp_path: Path) -> None:
    base = ["tags", "herald", str(sim_file)]
    cases = [
        (["--pump-window", "0ns", "--read-window", "100ns:140ns"], "START:STOP"),
        (["--pump-window", "0ns:20", "--read-window", "100ns:140ns"], "no unit"),
        (["--pump-window", "20ns:0ns", "--read-window", "100ns:140ns"], "empty"),
        (["--pump-window", "0ns:120ns", "--read-window", "100ns:140ns"], "overlap"),
        (["--pump-window", "0ns:20ns", "--read-window", "100ns:140ns", "--channels", "0"], "--channels"),
        (["--pump-window", "0ns:20ns", "--read-window", "100ns:140ns", "--channels", "0,0"], "different"),
        (["--pump-window", "0ns:20ns", "--read-window", "100ns:140ns", "--trials", "1"], "fewer"),
        (["--pump-window", "0ns:20ns", "--read-window", "1ms:2ms"], "beyond"),
    ]
    for extra, msg in cases:
        rc, _, err = run(capsys, *base, *extra)
        assert rc == 2, extra
        assert msg in err, (extra, err)
    one = encode("TimeHarp260N_T3", [1], [0], dtime=[1])
    p = write_ptu(tmp_path / "one.ptu", one, "TimeHarp260N_T3", global_resolution=1e-6, resolution=25e-12)
    rc, _, err = run(capsys, "tags", "herald", str(p), "--pump-window", "0ns:20ns", "--read-window", "100ns:140ns")
    assert rc == 2 and "--channels" in err


def test_file_errors_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "garbage.ptu"
    bad.write_bytes(b"PQTTTR\0\0garbage")
    for argv in (["tags", "info", str(bad), "--json"], ["tags", "info", str(tmp_path / "missing.ptu")],
                 ["tags", "herald", str(bad), "--pump-window", "0ns:1ns", "--read-window", "2ns:3ns"]):
        rc, out, err = run(capsys, *argv)
        assert rc == 2 and out == ""
        assert err.startswith("labctl: ") and str(tmp_path) in err
    if T3_FILE.exists():
        trunc = tmp_path / "trunc.ptu"
        trunc.write_bytes(T3_FILE.read_bytes()[:3000])
        rc, _, err = run(capsys, "tags", "info", str(trunc), "--json")
        assert rc == 2 and "trunc.ptu" in err
        trunc.write_bytes(T3_FILE.read_bytes()[:-100])
        rc, _, err = run(capsys, "tags", "info", str(trunc), "--json")
        assert rc == 2 and "truncated" in err
        rc, _, err = run(capsys, "tags", "herald", str(T2_FILE), "--pump-window", "0ns:1ns",
                         "--read-window", "2ns:3ns")
        assert rc == 2 and "T3" in err


def test_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "tags")[0] == 2
    with pytest.raises(SystemExit) as e:
        main(["tags", "herald"])
    assert e.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_correlate(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    t = np.sort(rng.integers(0, 10 ** 11, 3000))  # ps, T2 with 1 ps resolution
    times = np.concatenate([t, t + 2500])
    chans = np.concatenate([np.zeros(3000, int), np.ones(3000, int)])
    order = np.argsort(times, kind="stable")
    recs = encode("TimeHarp260P_T2", times[order], chans[order])
    p = write_ptu(tmp_path / "c.ptu", recs, "TimeHarp260P_T2", global_resolution=1e-12)
    rc, out, _ = run(capsys, "tags", "correlate", str(p), "--channels", "0,1", "--bin", "1ns", "--range", "10ns",
                     "--json")
    assert rc == 0
    c = json.loads(out)
    assert c["peak_lag"] == pytest.approx(2.5e-9) and max(c["counts"]) == 3000
    rc, out, _ = run(capsys, "tags", "correlate", str(p), "--channels", "0,1")
    assert rc == 0 and "peak at 2.55 ns" in out  # bin centre, 100 ps bins
