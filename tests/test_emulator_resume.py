"""Hardware-in-the-loop tier: a run against the emulated station (real sockets, pseudo-terminals,
pyvisa-py and pyserial) is killed with SIGKILL mid-point and resumed; every trial is counted
exactly once."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from labctl.verify import verify_run

REPO = Path(__file__).resolve().parents[1]
LABCTL = [sys.executable, "-m", "labctl.cli"]

pytestmark = pytest.mark.hil


@pytest.fixture
def emulated(tmp_path):
    out = tmp_path / "station.yaml"
    proc = subprocess.Popen(LABCTL + ["emulate", "--config", str(REPO / "configs/lab.yaml"), "--station-out", str(out)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    line = ""
    while time.time() - t0 < 60:
        line = proc.stdout.readline()
        if "ready" in line or proc.poll() is not None:
            break
    assert "ready" in line, proc.stderr.read() if proc.poll() is not None else "emulator not ready"
    yield out
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_killed_emulated_run_resumes_with_every_trial_once(emulated, tmp_path):
    run = tmp_path / "run"
    args = ["run", str(REPO / "sequences/phase_sweep.yaml"), "--config", str(emulated), "--out", str(run),
            "--seed", "9", "--trials", "4e6", "--block-trials", "1e6", "--progress", "off", "--no-plots"]
    proc = subprocess.Popen(LABCTL + args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    t0 = time.time()
    journal = run / "journal.jsonl"
    while time.time() - t0 < 120:
        if journal.exists() and journal.read_text().count('"type": "block"') >= 6:
            break
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    r = subprocess.run(LABCTL + ["run", "--resume", str(run), "--progress", "off", "--no-plots"], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rep = json.loads((run / "report.json").read_text())
    assert [p["counts"]["trials"] for p in rep["points"]] == [4_000_000] * 17
    with h5py.File(run / "run.h5", "r") as f:
        assert f.attrs["status"] == "complete"
        for name in f["points"]:
            b = f["points"][name]["blocks"][()]
            assert list(b["sync_start"]) == list(np.cumsum([0] + list(b["trials"][:-1])))
        res = {f["instruments"][n].attrs["resource"] for n in f["instruments"]}
    assert any(x.startswith("TCPIP0::127.0.0.1") for x in res) and any("/dev/pts/" in x for x in res)
    check = verify_run(run)  # every trial once, every block's counts recounted from its records
    assert check.ok, check.all_problems
    assert sum(pt.recounted_blocks for pt in check.points) == sum(pt.blocks for pt in check.points)
