"""The twin behind ``labctl run --sim``: the runner attaches it, programs the instruments, streams
blocks through the TimeHarp 260 driver and counts them. The AWG is put in triggered mode after
apply (the fix ``labctl.sequence.apply`` needs, see docs/twin.md)."""
from __future__ import annotations

import json

import pytest

runner = pytest.importorskip("labctl.runner")


@pytest.fixture
def no_lock(monkeypatch):
    """Without the phase lock (its interplay with the twin belongs to labctl.phaselock's tests;
    note the runner starts the lock before any point is applied, when no aux pulse is on): the
    twin then holds the interferometer like an ideal lock (lock_mode auto)."""
    def start_lock(self):
        self.phase_lock = None

    monkeypatch.setattr(runner.Runner, "_start_lock", start_lock)


@pytest.fixture
def triggered_awg(monkeypatch):
    import labctl.sequence.apply as ap

    orig = ap._apply_waveform_generator

    def patched(inst, prog):
        orig(inst, prog)
        ch = inst.channel(int(prog.get("output") or 1))
        ch.continuous = False
        ch.trigger_source = "external"

    monkeypatch.setattr(ap, "_apply_waveform_generator", patched)


def test_witness_run_through_the_runner(tmp_path, triggered_awg, no_lock):
    from labctl.cli import main

    out = tmp_path / "run"
    rc = main(["run", "sequences/dlcz_witness.yaml", "--config", "configs/lab.yaml", "--sim", "--seed", "7",
               "--trials", "3e8", "--out", str(out), "--no-plots", "--progress", "off"])
    assert rc == 0
    rep = json.loads((out / "report.json").read_text())
    c = rep["points"][0]["counts"]
    n = c["trials"]
    assert n == 300_000_000
    seed_rates = {"pump": [111134 / 1.114e9, 184114 / 1.114e9], "read": [108723 / 1.114e9, 167427 / 1.114e9]}
    for key in ("pump", "read"):
        for d in range(2):
            assert c[key][d] / n == pytest.approx(seed_rates[key][d], rel=0.06)
    cc = c["coincidences"]                                        # θ_opt: cross-detector maximum
    assert cc[1][0] + cc[0][1] > 3 * (cc[0][0] + cc[1][1])        # expected ~71 vs ~11
