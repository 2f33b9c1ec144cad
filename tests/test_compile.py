"""Compilation: programs for the AFG, the serrodyne AWG and the tagger; exact serrodyne segments;
dphi on the read ramp; instrument limits enforced through the simulators; determinism."""
import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from labctl.cli import main
from labctl.config import load_station
from labctl.errors import InputError
from labctl.sequence import load_sequence, loads_sequence
from labctl.sequence.apply import apply_program
from labctl.sequence.compile import arbitrary_samples, compile_sequence
from labctl.station import Station

REPO = Path(__file__).resolve().parents[1]
CFG = load_station(REPO / "configs/lab.yaml")


def test_witness_programs():
    seq = load_sequence(REPO / "sequences/dlcz_witness.yaml")
    prog = compile_sequence(seq, CFG).points[0]
    afg = prog["afg"]
    assert afg["trigger"]["period"] == pytest.approx(50e-6)
    o1 = afg["outputs"]["1"]
    assert o1["mode"] == "pulse" and o1["width"] == pytest.approx(40e-9) and o1["delay"] == pytest.approx(1e-6)
    assert o1["high"] == pytest.approx(0.5)  # 0.7 % at the calibration point
    o2 = afg["outputs"]["2"]
    assert o2["mode"] == "arbitrary" and o2["pulses"] == ["read", "aux"]
    x = arbitrary_samples(o2)
    assert x[:40].min() == pytest.approx(1.0)          # read at full level (0.6 V = high)
    aux_start = round((6.163e-6 - 1.123e-6) * 1e9)
    assert x[aux_start + 10] == pytest.approx(0.5 / 0.6)
    assert x[100:aux_start - 1].max() == 0.0
    tag = prog["tagger"]
    assert tag["mode"] == "T3" and tag["windows"]["herald"]["start"] == pytest.approx(0.99e-6)


def test_serrodyne_segments_exact_and_signed():
    seq = load_sequence(REPO / "sequences/dlcz_witness.yaml")
    awg = compile_sequence(seq, CFG).points[0]["awg"]
    shifted = [s for s in awg["segments"] if s["shift_frequency"] != 0]
    assert sorted(s["shift_frequency"] for s in shifted) == [-45e6, 45e6]
    for s in awg["segments"]:
        n, fs, p = s["segment_length"], s["sample_rate"], s["periods_per_segment"]
        assert n % 32 == 0 and n >= 320 and fs <= 4.2e9 and p == int(p)
        assert abs(p * fs / n - abs(s["shift_frequency"])) < 1e-3
    # the ramps cover their pulses and end before the next one starts
    g = {x["pulse"]: x for x in awg["gates"]}
    assert g["pump"]["ramp_start"] <= 1e-6 and g["pump"]["ramp_end"] >= 1.04e-6
    assert g["pump"]["ramp_end"] <= g["read"]["pulse_start"]
    assert g["read"]["ramp_start"] <= 1.123e-6 and g["read"]["ramp_end"] >= 1.163e-6
    # dphi rides on the read ramp only; the pump ramp starts at phase 0
    for g in awg["gates"]:
        assert g["phase_at_pulse"] == pytest.approx(0.2 * math.pi if g["pulse"] == "read" else 0.0)
    # 2 Vpi at the EOM through the amplifier
    assert awg["eom_drive_vpp"] == pytest.approx(2 * 3.5)
    assert awg["amplitude"] == pytest.approx(7.0 / 10 ** (13 / 20), rel=1e-6)


def test_sequence_table_timing_matches_the_pulses():
    seq = load_sequence(REPO / "sequences/delay_sweep.yaml")
    comp = compile_sequence(seq, CFG, check=False)
    for k, pt in enumerate(comp.points):
        awg = pt["awg"]
        lengths = {s["segment"]: s["segment_length"] for s in awg["segments"]}
        t = 0.0
        starts = []
        for step in awg["sequence"]:
            starts.append(t)
            t += step["loops"] * lengths[step["segment"]] / awg["sample_rate"]
        ramps = [s for s, st in zip(starts, awg["sequence"]) if st["purpose"] in ("pump", "read")]
        assert ramps == pytest.approx([g["ramp_start"] for g in awg["gates"]], abs=1e-12)


def test_uploaded_ramps_give_their_pulses_the_right_phase():
    """Apply the compiled program to the simulated AWG and read back the uploaded samples: at the
    start of the read pulse the EOM phase is dphi, at the start of the pump pulse 0 (the ramps
    are referenced to their pulses, whatever the 32-sample grid of the sequence table)."""
    seq = load_sequence(REPO / "sequences/dlcz_witness.yaml")
    comp = compile_sequence(seq, CFG, check=False)
    prog = comp.points[0]["awg"]
    gates = {g["pulse"]: g for g in prog["gates"]}
    with Station(CFG, sim=True).connect(["awg"]) as st:
        apply_program(st["awg"], prog)
        model = st.lab.models["awg"]
        segs = {s["purpose"]: s for s in prog["segments"]}
        for name, want in (("read", 0.2 * np.pi), ("pump", 0.0)):
            v = model.segment_volts(1, segs[name]["segment"])
            phase = 2 * np.pi * (v / prog["amplitude"] + 0.5)   # EOM phase (mod 2 pi) of each sample
            k0 = (gates[name]["pulse_start"] - gates[name]["ramp_start"]) * prog["sample_rate"]
            k = int(np.floor(k0))
            f = segs[name]["shift_frequency"]
            # phase at the pulse start from the neighbouring sample, advanced by the ramp's slope
            at_start = phase[k] + 2 * np.pi * f * (k0 - k) / prog["sample_rate"]
            assert abs(np.angle(np.exp(1j * (at_start - want)))) < 2 * np.pi / 4096 * 4 + 2 * np.pi * abs(f) / prog["sample_rate"]
        ch = model.channel(1)
        assert ch["continuous"] is False and str(ch["trigger_source"]).upper().startswith("EXT")


def test_compilation_is_deterministic(capsys):
    args = ["compile", str(REPO / "sequences/phase_sweep.yaml"), "--config", str(REPO / "configs/lab.yaml"), "--json"]
    assert main(args) == 0
    a = capsys.readouterr().out
    assert main(args) == 0
    assert capsys.readouterr().out == a
    data = json.loads(a)
    assert len(data["awg"]["sweep"]) == 16


def _mutated(mut):
    s = yaml.safe_load((REPO / "sequences/dlcz_witness.yaml").read_text())
    mut(s)
    return loads_sequence(yaml.safe_dump(s, sort_keys=False), "mutated.yaml")


@pytest.mark.parametrize("mut,words", [
    (lambda s: s["pulses"][0].update(duration="2 ns"), ["afg", "width"]),                 # AFG minimum width
    (lambda s: s["pulses"][0].update(probability="10 %"), ["afg", "high"]),               # drive above the 1 V AOM limit
    (lambda s: (s.update(period="100 us"), s["pulses"][2].update(start="read.end + 17 us")),
     ["arbitrary record"]),                                                               # read + aux > 16 us
    (lambda s: (s["pulses"][1].update(start="pump.start + 45 ns"),
                s["windows"][0].update(duration="52 ns"),
                s["windows"][1].update(start="read.start - 2 ns", duration="50 ns")), ["serrodyne"]),  # ramps overlap
])
def test_instrument_limits_are_enforced(mut, words):
    try:
        seq = _mutated(mut)
    except InputError as e:  # some of these are caught before compilation
        msg = str(e)
    else:
        with pytest.raises(InputError) as e:
            compile_sequence(seq, CFG)
        msg = str(e.value)
    assert "mutated.yaml" in msg
    for w in words:
        assert w in msg, msg
