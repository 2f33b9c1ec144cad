"""The twin inside a simulated station: it reads the instruments through their models and serves
the unchanged drivers (TimeHarp 260 mock library, Red Pitaya, SIM900, MDT694)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from labctl.tags.herald import HeraldCounter
from sim_instruments.th260_mock import TH260MockLibrary
from sim_instruments.twin import Twin
from sim_instruments.twin.scenarios import SimpleLock, witness_setup


@pytest.fixture(scope="module")
def setup():
    s = witness_setup(seed=21)
    yield s
    s.close()


def acquire(setup, n_trials: int) -> dict:
    """One block through the TimeHarp 260 driver, counted like the runner does."""
    tg = setup.station["tagger"]
    pw, rw = setup.windows()
    hc = HeraldCounter.from_windows("TimeHarp260N_T3", pw, rw, tg.resolution())
    tg.start(n_trials * 50e-6)
    while True:
        r = tg.read_records(timeout=0.2)
        if r.size:
            hc.feed(r)
        elif tg.wait(0):
            r = tg.read_records(timeout=0)
            if r.size:
                hc.feed(r)
                continue
            break
    tg.stop()
    return hc.result(trials=n_trials).counts(channels=(0, 1))


def test_attach_wires_the_twin_in(setup):
    lab = setup.lab
    libs = lab.find(TH260MockLibrary)
    assert libs and all(lib.source is setup.twin for lib in libs)
    assert lab.twin is setup.twin
    rp = lab.models["redpitaya"]
    assert rp.trace_source is not None and rp.input_source is not None
    # standing state: lasers on their sidebands (blue/red of device B), detectors biased
    pump, read = lab.models["pump_laser"], lab.models["read_laser"]
    assert pump.output and read.output
    assert pump.setpoint_nm == pytest.approx(1553.8 - 0.04144, abs=2e-4)     # ν_c + 5.145 GHz
    assert read.setpoint_nm == pytest.approx(1553.8 + 0.04144, abs=2e-4)
    sim = lab.models["snspd_bias"]
    assert all(sim.modules[p].output and sim.modules[p].voltage == pytest.approx(1.0) for p in (1, 2))
    tg = setup.station["tagger"]
    assert tg.sync_rate() == pytest.approx(20000, abs=1)
    rates = tg.count_rates()
    assert 20 < rates[0] < 60 and 30 < rates[1] < 90           # Hz: heralds, reads, aux, dark


def test_driver_stream_counts_match_the_model(setup):
    n = 20_000_000
    got = acquire(setup, n)
    exp = setup.twin.describe()["expected"]
    for j in range(2):
        m = exp["herald"][j] * n
        assert abs(got["pump"][j] - m) < 5 * math.sqrt(m)
        m = exp["read"][j] * n
        assert abs(got["read"][j] - m) < 5 * math.sqrt(m)
    assert setup.twin.meas_trials == n


def test_state_changes_between_blocks_take_effect(setup):
    st = setup.station
    n = 5_000_000
    base = acquire(setup, n)
    st["voa"].set_attenuation(40.0)                  # arm B's drive blocked
    try:
        less = acquire(setup, n)
        for j in range(2):                           # balanced arms: half the heralds remain
            assert less["pump"][j] == pytest.approx(base["pump"][j] / 2, rel=0.2)
    finally:
        st["voa"].set_attenuation(0.0)
    st["afg"].set_output(1, False)                   # no pump pulses: no heralds at all
    try:
        none = acquire(setup, n)
        assert none["pump"] == [0, 0] or sum(none["pump"]) < 3   # only dark counts could fall in
        assert sum(none["read"]) > 0
    finally:
        st["afg"].set_output(1, True)


def test_latching_by_bias_and_recovery(setup):
    bias = setup.station["snspd_bias"]
    sim = setup.lab.models["snspd_bias"]
    bias.set_bias(1.6, port=1)                        # above the 1.5 V switching threshold
    got = acquire(setup, 2_000_000)
    assert sim.modules[1].latched
    assert got["pump"][0] == 0 and got["read"][0] == 0 and got["pump"][1] > 0
    bias.set_bias(1.0, port=1)
    assert sim.modules[1].latched                     # stays latched until the bias is removed
    bias.reset_latch(0.0, port=1)
    assert not sim.modules[1].latched
    got = acquire(setup, 2_000_000)
    assert got["pump"][0] > 0


def test_latching_by_count_rate():
    s = witness_setup(seed=3, params={"latch_count_rate": 35.0})   # detector 2 clicks ~45 Hz
    try:
        counts = acquire(s, 1_000_000)
        sim = s.lab.models["snspd_bias"]
        assert sim.modules[2].latched and not sim.modules[1].latched
        assert counts["pump"][1] == 0 and counts["pump"][0] > 0
    finally:
        s.close()


def test_lower_bias_lowers_efficiency(setup):
    setup.station["snspd_bias"].set_bias(0.8, port=2)     # the sigmoid's half point
    try:
        info = setup.twin.describe()
        assert info["detector_factor"][1] == pytest.approx(0.5, rel=0.01)
    finally:
        setup.station["snspd_bias"].set_bias(1.0, port=2)


def test_fringe_trace_through_the_red_pitaya_driver(setup):
    rp = setup.station["redpitaya"]
    twin = setup.twin
    phase = twin.interferometer_phase()
    tr = rp.acquire(1024, 1, "EXT_PE")
    i0 = int(math.ceil(6.163e-6 / 8e-9)) + 1
    i1 = int(6.663e-6 / 8e-9) - 1
    base = tr[:700].mean()
    amp = tr[i0:i1].mean() - base
    p = twin.params
    expect = p.fringe_amplitude * (0.5 / 0.6) ** 2 * math.cos(phase + p.lock_offset)
    assert base == pytest.approx(p.fringe_offset, abs=1e-3)
    assert amp == pytest.approx(expect, abs=0.01)
    assert abs(tr[900:].mean() - base) < 2e-3                 # no light after the aux pulse


def test_phase_lock_through_the_drivers_sets_the_block_statistics():
    s = witness_setup(seed=8)
    try:
        lock = SimpleLock(s.station, 6.163e-6, 6.663e-6, gain_v_per_v=4.0)
        lock.run(120)
        stats = s.twin.ifo.block_stats(5000.0, 0.0)
        # each acquisition fills the 16384-sample buffer: 131 us = 3 repetition periods
        assert stats.source == "observed" and stats.cycles == 3 * 120
        window = np.fromiter(s.twin.ifo.observed, float)[-60:]
        c2 = np.mean(np.exp(2j * window))
        assert abs(c2) > 0.95                                  # locked: small residual
        assert math.cos(0.5 * np.angle(c2) + s.twin.params.lock_offset) == pytest.approx(0.0, abs=0.1)
        assert abs(np.mean(lock.errors[-30:])) < 0.01
    finally:
        s.close()


def test_reading_the_detector_without_a_lock_is_no_lock(setup):
    twin = setup.twin
    twin.simulate_events(1000)                           # a data block: counters reset
    rp = setup.station["redpitaya"]
    rp.read_voltage("AIN0")                              # e.g. a snapshot reads the boxcar pin
    for _ in range(5):
        rp.read_voltage("IN1")                           # a monitor: ~10 periods per read
    assert twin.ifo.cycles_since_block > twin.params.lock_min_cycles
    _, truth = twin.simulate_events(1000)
    assert truth.phase.source == "ideal"                 # nobody wrote the stretcher


def test_block_reproducibility_with_begin_block():
    def run(seed):
        s = witness_setup(seed=seed)
        try:
            s.twin.begin_block(point=0, block=3, sync_start=0, seed=99)
            recs, _ = s.twin.simulate_block(3_000_000)
            return recs
        finally:
            s.close()
    a, b = run(1), run(2)
    assert np.array_equal(a, b)                  # depends on (seed, point, block) only
    s = witness_setup(seed=5)
    try:
        r1, _ = s.twin.simulate_block(1_000_000)
        s2 = witness_setup(seed=5)
        r2, _ = s2.twin.simulate_block(1_000_000)
        s2.close()
        assert np.array_equal(r1, r2)
        r3, _ = s.twin.simulate_block(1_000_000)
        assert not np.array_equal(r1, r3)
    finally:
        s.close()


def test_free_running_awg_washes_out_the_serrodyne():
    s = witness_setup(seed=2)
    try:
        s.station["awg"].channel(1).continuous = True   # the AWG ignores the trigger: ramps drift
        info = s.twin.describe()
        assert any("continuously" in n for n in info["notes"])
        g = info["expected"]["g2"]
        assert abs(g[1][0] - g[0][0]) < 3.0                     # cross and same nearly equal
        assert info["overlap_abs_mean"] < 0.4
    finally:
        s.close()


def test_attach_without_tagger_or_redpitaya():
    from sim_instruments.lab import SimLab

    lab = SimLab(seed=1)
    twin = Twin.attach(lab, seed=1)
    recs, truth = twin.simulate_block(1000)          # no instruments: no light, dark counts only
    assert truth.counts()["pump"] == [0, 0]
