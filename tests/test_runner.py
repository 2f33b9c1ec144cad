"""End-to-end runs on the simulated station: report and run file, Ctrl-C, SIGKILL and resume,
bad output folders, the journal's crash safety."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from labctl.cli import main
from labctl.errors import InputError, Interrupted
from labctl.runner import Runner, RunOptions
from labctl.storage import BlockEntry, Journal
from labctl.verify import verify_run

REPO = Path(__file__).resolve().parents[1]
LABCTL = [sys.executable, "-m", "labctl.cli"]
SEQ = str(REPO / "sequences/dlcz_witness.yaml")
PHASE = str(REPO / "sequences/phase_sweep.yaml")
CFG = str(REPO / "configs/lab.yaml")


def test_dry_run_writes_report_run_file_and_plots(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["run", SEQ, "--config", CFG, "--sim", "--out", str(out), "--seed", "3", "--trials", "4e5",
               "--block-trials", "1e5", "--progress", "off"])
    assert rc == 0
    rep = json.loads((out / "report.json").read_text())
    for key in ("sequence", "trials", "points", "witness", "lock", "faults", "files"):
        assert key in rep
    assert rep["trials"] == 400000 and rep["status"] == "complete"
    pt = rep["points"][0]
    assert set(pt) >= {"parameters", "counts", "g2", "Rm"}
    assert pt["counts"]["trials"] == 400000
    assert all(Path(p).exists() for p in rep["files"]["plots"])
    with h5py.File(out / "run.h5", "r") as f:
        assert f.attrs["status"] == "complete"
        assert "period" in f["provenance/sequence"][()].decode()
        assert "AFG3152C" in f["instruments/afg"].attrs["idn"]
        blocks = f["points/p000/blocks"][()]
        assert len(blocks) == 4 and blocks["trials"].sum() == 400000
        assert list(blocks["sync_start"]) == [0, 100000, 200000, 300000]
        recs = f["points/p000/records"][()]
        assert recs.size == blocks["records_count"].sum()
    capsys.readouterr()
    assert main(["analyze", str(out), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["witness"] == rep["witness"]
    assert main(["plot", str(out), "--out", str(tmp_path / "plots")]) == 0


def test_unwritable_output_is_refused_before_the_run(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):  # running as root: permissions do not stop us
            target = Path("/proc/labctl-cannot-write-here")
        else:
            target = ro / "run"
        rc = main(["run", SEQ, "--config", CFG, "--sim", "--out", str(target), "--trials", "1e3"])
        err = capsys.readouterr().err
        assert rc == 2 and "output folder" in err and "Traceback" not in err
    finally:
        ro.chmod(0o700)


def _start(out, *extra):
    return subprocess.Popen(LABCTL + ["run", PHASE, "--config", CFG, "--sim", "--out", str(out), "--seed", "5",
                                      "--progress", "off", *extra],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_blocks(out, n, proc, timeout=60):
    t0 = time.time()
    while time.time() - t0 < timeout:
        j = out / "journal.jsonl"
        if j.exists() and j.read_text().count('"type": "block"') >= n:
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_sigkill_then_resume_counts_every_trial_once(tmp_path):
    out = tmp_path / "killed"
    proc = _start(out, "--trials", "3e6", "--block-trials", "2e5")
    assert _wait_blocks(out, 7, proc), proc.stderr.read().decode() if proc.poll() is not None else "too slow"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = [json.loads(l) for l in (out / "journal.jsonl").read_text().splitlines() if '"type": "block"' in l]
    r = subprocess.run(LABCTL + ["run", "--resume", str(out), "--progress", "off"], cwd=REPO, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "safe state" in r.stderr  # the dead run's instruments were made safe first
    rep = json.loads((out / "report.json").read_text())
    assert [p["counts"]["trials"] for p in rep["points"]] == [3_000_000] * 17
    with h5py.File(out / "run.h5", "r") as f:
        for name in f["points"]:
            b = f["points"][name]["blocks"][()]
            starts = list(b["sync_start"])
            assert starts == sorted(starts) and starts == list(np.cumsum([0] + list(b["trials"][:-1])))
            # the resumed blocks see light: the safe state after the crash zeroed the SNSPD bias,
            # the run biased them again (calibration.snspd)
            assert ((b["p1"] + b["r1"]) > 0).all() and ((b["p2"] + b["r2"]) > 0).all()
            assert f["points"][name]["records"].size == b["records_count"].sum()
    after = [json.loads(l) for l in (out / "journal.jsonl").read_text().splitlines() if '"type": "block"' in l]
    assert after[:len(before)] == before  # nothing committed before the kill was rewritten
    check = verify_run(out)  # every trial once, every block's counts recounted from its records
    assert check.ok, check.all_problems
    assert sum(pt.recounted_blocks for pt in check.points) == sum(pt.blocks for pt in check.points)


@pytest.mark.slow
def test_ctrl_c_stops_safely_and_keeps_the_data(tmp_path):
    out = tmp_path / "interrupted"
    proc = _start(out, "--trials", "2e9", "--block-trials", "1e6")
    assert _wait_blocks(out, 2, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()
    assert b"Traceback" not in err
    with h5py.File(out / "run.h5", "r") as f:
        assert f.attrs["status"] == "interrupted"
        assert f["points/p000/blocks"].shape[0] >= 2
    events = [json.loads(l) for l in (out / "journal.jsonl").read_text().splitlines()]
    assert events[-1]["type"] == "status" and events[-1]["status"] == "interrupted"


def test_resumed_report_covers_every_process(tmp_path):
    """Lock telemetry and faults of the interrupted process are in the final report and run file."""
    out = tmp_path / "twice"
    proc = subprocess.Popen(LABCTL + ["run", SEQ, "--config", CFG, "--sim", "--out", str(out), "--seed", "5",
                                      "--progress", "off", "--no-plots", "--trials", "3e7", "--block-trials", "2e6",
                                      "--faults", str(REPO / "configs/faults/latched_detector.yaml")],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert _wait_blocks(out, 4, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()
    r = subprocess.run(LABCTL + ["run", "--resume", str(out), "--progress", "off", "--no-plots"], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    journal = [json.loads(l) for l in (out / "journal.jsonl").read_text().splitlines()]
    blocks = [e for e in journal if e["type"] == "block"]
    latched = [e for e in journal if e["type"] == "fault" and e["kind"] == "latched_detector"]
    assert len(blocks) == 15 and len(latched) == 2  # the plan's latch met once by each process
    rep = json.loads((out / "report.json").read_text())
    assert rep["lock"]["blocks"] == 15
    assert sum(f["kind"] == "latched_detector" for f in rep["faults"]) == 2
    with h5py.File(out / "run.h5", "r") as f:
        assert f["telemetry/rms_error"].shape == (15,)


def test_signals_wait_for_a_safe_point():
    """The first Ctrl-C / SIGTERM is noted and acted on at the next safe point, never in the
    middle of a commit or of the run's ending; a second one outside a commit stops at once."""
    r = Runner(RunOptions())
    r._on_signal(signal.SIGINT, None)
    assert r._pending_signal == "SIGINT"
    with pytest.raises(Interrupted, match="SIGINT"):
        r.check_interrupt()
    r._critical = 1
    r.check_interrupt()                   # a block being committed: wait
    r._on_signal(signal.SIGTERM, None)    # even when asked twice
    r._critical = 0
    with pytest.raises(Interrupted):
        r._on_signal(signal.SIGTERM, None)  # asked again outside a commit: at once
    r._finishing = True
    r._on_signal(signal.SIGINT, None)     # the run is ending: noted, never raised
    r.check_interrupt()


def test_journal_survives_a_torn_write(tmp_path):
    j = Journal(tmp_path)
    for b in range(3):
        j.commit_block(BlockEntry(0, b, 10, 10 * b, [10, 1, 0, 0, 1, 0, 0, 0, 0], 0, 0),
                       np.arange(5, dtype=np.uint32) + 100 * b)
    j.close()
    # a block in flight: records appended, journal line cut in the middle
    with open(tmp_path / "records/p000.u32", "ab") as f:
        f.write(np.arange(7, dtype="<u4").tobytes())
    with open(tmp_path / "journal.jsonl", "a") as f:
        f.write('{"type": "block", "point": 0, "blo')
    j2 = Journal(tmp_path)
    assert [b.block for b in j2.blocks] == [0, 1, 2]
    assert j2.records(0).size == 15
    assert list(j2.records(0)[5:10]) == [100, 101, 102, 103, 104]
    j2.commit_block(BlockEntry(0, 3, 10, 30, [10, 0, 0, 0, 0, 0, 0, 0, 0], 0, 0), np.array([7], np.uint32))
    j2.close()
    j3 = Journal(tmp_path)
    assert [b.block for b in j3.blocks] == [0, 1, 2, 3] and j3.records(0)[-1] == 7


def test_a_planned_fault_that_never_triggers_is_reported_as_such(tmp_path, capsys):
    plan = tmp_path / "plan.yaml"
    plan.write_text("- instrument: afg\n  kind: timeout\n  after_commands: 100000\n"
                    "- instrument: afg\n  kind: error_queue\n  after_commands: 20\n")
    out = tmp_path / "run"
    rc = main(["run", SEQ, "--config", CFG, "--sim", "--faults", str(plan), "--out", str(out), "--seed", "2",
               "--trials", "2e5", "--progress", "off", "--no-plots"])
    assert rc == 0
    faults = json.loads((out / "report.json").read_text())["faults"]
    never = [f for f in faults if f.get("injected") is False]
    assert [(f["kind"], f["line"]) for f in never] == [("timeout", 1)]
    assert "after 100000 commands" in never[0]["message"]
    assert any(f["kind"] == "instrument_error" for f in faults)  # the error-queue entry was met
    err = capsys.readouterr().err
    assert "planned faults never triggered: 1" in err and "faults met: 1" in err


def _prepared_runner(tmp_path, station_text):
    cfg = tmp_path / "station.yaml"
    cfg.write_text(station_text)
    r = Runner(RunOptions(sequence=SEQ, config=str(cfg), sim=True, out=tmp_path / "run", seed=1))
    r._load()
    r.manifest = {}
    r._connect()
    r.station["snspd_bias"].safe_state()  # what the end of the previous run left: 0 V, off
    return r


def test_detectors_get_their_calibrated_bias_back(tmp_path):
    r = _prepared_runner(tmp_path, Path(CFG).read_text())
    try:
        r._detectors_to_setpoints()
        sim = r.station["snspd_bias"]
        for port in (1, 2):
            assert sim.bias(port) == pytest.approx(1.0) and sim.port(port).output is True
    finally:
        r.station.close()


def test_unbiased_detectors_without_a_calibrated_bias_stop_the_run_before_it_starts(tmp_path):
    text = Path(CFG).read_text()
    start, end = text.index("  snspd:"), text.index("  aom:")
    r = _prepared_runner(tmp_path, text[:start] + text[end:])
    try:
        with pytest.raises(InputError, match="detector_1 is not biased") as e:
            r._detectors_to_setpoints()
        assert "calibration: {snspd: {detector_1: {bias:" in e.value.render()
    finally:
        r.station.close()


def test_a_fault_that_fired_before_a_resume_is_not_reported_as_never_triggered(tmp_path):
    from labctl.faults import loads_fault_plan

    r = Runner(RunOptions())
    r.plan = loads_fault_plan("- {instrument: afg, kind: latency, delay: 1 ms, after_commands: 5}\n"
                              "- {instrument: awg, kind: timeout, after_commands: 100000}\n", "plan.yaml")
    r.journal = Journal(tmp_path)
    r.journal.event("injected", pid=os.getpid() + 1, fault=0, time=1.0, instrument="afg", kind="latency",
                    details="+1 ms")  # written by the process that was killed
    rep = r._faults_for_report()
    never = [f for f in rep if f.get("injected") is False]
    assert [f["kind"] for f in never] == ["timeout"]
    assert [f["kind"] for f in rep if f.get("injected") is True] == ["latency"]
    r.journal.close()


def test_a_pulse_generator_rebooting_mid_run_is_reprogrammed_and_no_trial_is_miscounted(tmp_path):
    """The AFG makes the 20 kHz trigger; rebooted mid-run it comes back at its power-on 1 MHz:
    blocks whose syncs do not match their trials are discarded, every instrument re-programmed."""
    plan = tmp_path / "reboot.yaml"
    plan.write_text("- {instrument: afg, kind: reboot, at_s: 1.0}\n")
    out = tmp_path / "run"
    r = subprocess.run(LABCTL + ["run", SEQ, "--config", CFG, "--sim", "--faults", str(plan), "--out", str(out),
                                 "--seed", "4", "--trials", "3e7", "--block-trials", "2e6", "--progress", "off",
                                 "--no-plots"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rep = json.loads((out / "report.json").read_text())
    kinds = {f["kind"] for f in rep["faults"]}
    assert kinds & {"sync", "lock_lost"}, rep["faults"]
    assert rep["points"][0]["counts"]["trials"] == 30_000_000
    check = verify_run(out)
    assert check.ok, check.all_problems


@pytest.mark.parametrize("plan, rc, kinds", [
    # a laser that keeps hopping: blocks repeated a few times, then a clean stop (not for ever)
    ("- {instrument: pump_laser, kind: mode_hop, every: 2}\n", 3, {"mode_hop", "unrecoverable"}),
    # a reply lost by the lock's detector during lock cycles: that instrument reconnected, run goes on
    ("- {instrument: redpitaya, kind: timeout, after_commands: 500}\n", 0, {"timeout"}),
])
def test_repeated_and_lock_path_faults_end_cleanly(tmp_path, capsys, plan, rc, kinds):
    p = tmp_path / "plan.yaml"
    p.write_text(plan)
    out = tmp_path / "run"
    got = main(["run", SEQ, "--config", CFG, "--sim", "--faults", str(p), "--out", str(out), "--seed", "1",
                "--trials", "1e7", "--progress", "off", "--no-plots"])
    assert got == rc, capsys.readouterr().err[-2000:]
    faults = json.loads((out / "report.json").read_text())["faults"]
    assert kinds <= {f["kind"] for f in faults}
    if rc == 0:
        assert any(f["kind"] == "timeout" and f["instrument"] == "redpitaya" for f in faults)
        assert verify_run(out).ok


def test_an_injected_fault_is_listed_even_when_its_instrument_had_another_fault(tmp_path):
    r = Runner(RunOptions())
    r.journal = Journal(tmp_path)
    r.fault("timeout", "awg", "retry 1 after reconnecting")
    r.injector = type("Inj", (), {"events": [
        {"fault": 0, "instrument": "awg", "kind": "latency", "time": 0.1, "details": "+300 ms"},
        {"fault": 1, "instrument": "awg", "kind": "timeout", "time": 0.5, "details": "reply lost"}]})()
    rep = r._faults_for_report()
    assert [(f["kind"], f.get("injected")) for f in rep] == [("timeout", None), ("latency", True)]
    r.journal.close()
