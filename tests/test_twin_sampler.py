"""Event sampling and record encoding of the digital twin: exact laws, placement, dead time,
TimeHarp 260 T3 records, reproducibility."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from labctl.tags.herald import HeraldCounter
from labctl.tags.records import decode as tags_decode
from sim_instruments.twin.model import Component, Physics, marginals
from sim_instruments.twin.records import RecordEncoder, TaggerSettings
from sim_instruments.twin.sampler import (DARK, EXTRA, HERALD, READ, Events, bernoulli_positions,
                                          count_windows, distinct_uniform, sample_block)
from sim_instruments.twin.state import LightPulse

PUMP = LightPulse(1, 1.0e-6, 40e-9, np.array([0.5]))
READP = LightPulse(2, 1.123e-6, 1e-9, np.full(40, 0.6))
AUX = LightPulse(2, 6.163e-6, 1e-9, np.full(500, 0.5))


def toy_physics(*, dark=(0.0, 0.0), extras=(), period=50e-6, overlap=1.0 + 0j) -> Physics:
    """Large probabilities, so that modest blocks test the laws."""
    comp = Component(1.0, ps=np.array([[0.05, 0.04], [0.03, 0.06]]), y=np.array([[0.10, 0.08], [0.09, 0.12]]),
                     decay=np.array([0.9, 0.95]), occ=np.array([0.5, 0.3]), false_read=np.array([0.01, 0.02]),
                     false_herald=np.array([0.001, 0.002]), overlap=overlap)
    comp.extras = [np.array(e) for e in extras]
    return Physics(period, [comp], PUMP, READP, [AUX] * len(extras), [np.array(e) for e in extras],
                   np.array(dark, float), np.ones(2), 1.0 + 0j, {})


# ---- the per-trial law -----------------------------------------------------------------------------

def test_pattern_probabilities_keep_the_marginals_and_the_correlations():
    ph = toy_physics()
    c = ph.components[0]
    for c2 in (1.0, -1.0, 1j, 0.3):
        pr = ph.pattern_probs(c2)
        assert pr.sum() == pytest.approx(1.0) and (pr >= 0).all()
        m = marginals(pr)
        q = c.ps.sum(axis=0) + c.false_herald
        R = (c.y * c.occ[:, None]).sum(axis=0) + c.false_read
        assert m["herald"] == pytest.approx(q.tolist(), rel=1e-12)
        assert m["read"] == pytest.approx(R.tolist(), rel=1e-12)
        for i in range(2):
            for j in range(2):
                # E_ij from the amplitudes: sum of populations ± 2 sqrt(...) Re(W)
                sig = 1 if i == j else -1
                e = (c.ps[:, j] * c.y[:, i] * c.decay).sum() + 2 * sig * np.sqrt(
                    np.prod(c.ps[:, j] * c.y[:, i] * c.decay)) * (c2 * ph.phase_constant * c.overlap).real
                q_only = q[j] * (1 - q[1 - j])
                expect = q_only * (R[i] + e / q[j]) + q[0] * q[1] * (R[i] + e / q[j]
                                                                     + _e(c, c2 * ph.phase_constant, i, 1 - j) / q[1 - j])
                assert m["coincidence"][i][j] == pytest.approx(expect, rel=1e-10)


def _e(c, w, i, j):
    sig = 1 if i == j else -1
    return (c.ps[:, j] * c.y[:, i] * c.decay).sum() + 2 * sig * np.sqrt(
        np.prod(c.ps[:, j] * c.y[:, i] * c.decay)) * (w * c.overlap).real


def test_pattern_counts_are_multinomial():
    ph = toy_physics()
    pr = ph.pattern_probs(-1.0)
    rng = np.random.default_rng(7)
    n, blocks = 20_000, 30
    tot = np.zeros(16)
    for _ in range(blocks):
        ev, counts = sample_block(ph, pr, n, rng)
        assert counts.sum() == n
        tot += counts
    exp = pr * n * blocks
    keep = exp > 5
    chi2 = (((tot - exp) ** 2) / exp)[keep].sum()
    assert stats.chi2.sf(chi2, keep.sum() - 1) > 1e-3


def test_events_agree_with_their_pattern_counts_and_pulses():
    ph = toy_physics()
    pr = ph.pattern_probs(1j)
    ev, counts = sample_block(ph, pr, 50_000, np.random.default_rng(3))
    H = np.arange(16) % 4
    R = np.arange(16) // 4
    for det, bit in ((0, 1), (1, 2)):
        assert ((ev.source == HERALD) & (ev.detector == det)).sum() == counts[(H & bit) != 0].sum()
        assert ((ev.source == READ) & (ev.detector == det)).sum() == counts[(R & bit) != 0].sum()
    # one trial per pattern: distinct syncs among herald clicks of one detector
    for src in (HERALD, READ):
        for det in (0, 1):
            s = ev.sync[(ev.source == src) & (ev.detector == det)]
            assert np.unique(s).size == s.size
    th = ev.time[ev.source == HERALD]
    tr = ev.time[ev.source == READ]
    assert th.min() >= PUMP.start and th.max() <= PUMP.end
    assert tr.min() >= READP.start and tr.max() <= READP.end
    assert stats.kstest((th - PUMP.start) / PUMP.duration, "uniform").pvalue > 1e-3
    # sorted by (sync, time)
    key = ev.sync * 1.0 + ev.time / 50e-6
    assert np.all(np.diff(key) >= 0)


def test_placement_matches_independent_trials():
    """The sync indices of a pattern are a uniform subset: counts per tenth of the block are
    multinomial with equal cells."""
    ph = toy_physics()
    ev, _ = sample_block(ph, ph.pattern_probs(1.0), 200_000, np.random.default_rng(9))
    s = ev.sync[ev.source == HERALD]
    hist = np.bincount(s * 10 // 200_000, minlength=10)
    assert stats.chisquare(hist).pvalue > 1e-3


def test_bernoulli_positions_and_distinct_uniform():
    rng = np.random.default_rng(5)
    n, q = 1_000_000, 2e-4
    ks = [bernoulli_positions(rng, n, q) for _ in range(400)]
    sizes = np.array([k.size for k in ks])
    assert sizes.mean() == pytest.approx(n * q, rel=0.02)
    assert sizes.var() == pytest.approx(n * q * (1 - q), rel=0.15)          # binomial
    allpos = np.concatenate(ks)
    assert allpos.min() >= 0 and allpos.max() < n
    assert all(np.all(np.diff(k) > 0) for k in ks)
    assert stats.kstest(allpos / n, "uniform").pvalue > 1e-3
    dense = bernoulli_positions(rng, 10_000, 0.3)
    assert dense.size == pytest.approx(3000, abs=200)
    d = distinct_uniform(rng, 1000, 900)
    assert np.unique(d).size == 900 and d.max() < 1000
    d = distinct_uniform(rng, 10**9, 100_000)
    assert np.unique(d).size == 100_000 and np.all(np.diff(d) > 0)


def test_extra_pulses_and_dark_counts():
    ph = toy_physics(dark=(2000.0, 0.0), extras=[(0.01, 0.02)])
    n = 100_000
    ev, _ = sample_block(ph, ph.pattern_probs(1.0), n, np.random.default_rng(1))
    ex = ev.source == EXTRA
    assert (ex & (ev.detector == 0)).sum() == pytest.approx(n * 0.01, rel=0.1)
    assert (ex & (ev.detector == 1)).sum() == pytest.approx(n * 0.02, rel=0.08)
    t = ev.time[ex]
    assert t.min() >= AUX.start and t.max() <= AUX.end
    dk = ev.source == DARK
    assert dk.sum() == pytest.approx(n * 50e-6 * 2000.0, rel=0.1)            # Poisson(N T r)
    assert (ev.detector[dk] == 0).all()
    assert stats.kstest(ev.time[dk] / 50e-6, "uniform").pvalue > 1e-3


def test_dead_time_and_silent_detectors():
    from sim_instruments.twin.detection import apply_dead_time

    sync = np.array([5, 5, 5, 5, 9])
    det = np.array([0, 1, 0, 0, 0])
    t = np.array([1.000e-6, 1.010e-6, 1.030e-6, 1.060e-6, 1.0e-6])
    keep = apply_dead_time(sync, det, t, 50e-6, 50e-9)
    # 1.030 us lost (30 ns after 1.000), 1.060 us kept (60 ns after the last registered click);
    # detector 2 unaffected
    assert keep.tolist() == [True, True, False, True, True]
    keep = apply_dead_time(np.array([3, 4]), np.array([0, 0]), np.array([49.99e-6, 0.01e-6]), 50e-6, 50e-9)
    assert keep.tolist() == [True, False]                                    # 20 ns across syncs
    ph = toy_physics()
    ev, _ = sample_block(ph, ph.pattern_probs(1.0), 20_000, np.random.default_rng(2), silent=(True, False))
    assert ev.size and (ev.detector == 1).all()


# ---- records -----------------------------------------------------------------------------------------

def _events(sync, det, t):
    n = len(sync)
    return Events(np.array(sync, np.int64), np.array(det, np.int8), np.array(t, float), np.zeros(n, np.int8))


def test_records_decode_to_the_events():
    ph = toy_physics(dark=(100.0, 100.0), extras=[(1e-3, 1e-3)])
    ev, _ = sample_block(ph, ph.pattern_probs(1.0), 3_000_000, np.random.default_rng(4))
    enc = RecordEncoder(TaggerSettings(resolution=250e-12), 50e-6)
    recs = enc.encode(ev, 0, 3_000_000)
    d = tags_decode("TimeHarp260N_T3", recs)
    ph_ = d.kind == 0
    inrange = ev.time < 32768 * 250e-12
    assert ph_.sum() == inrange.sum() == enc.photons
    got = np.stack([d.time[ph_], d.dtime[ph_].astype(np.int64), d.channel[ph_].astype(np.int64)])
    want = np.stack([ev.sync[inrange], np.floor(ev.time[inrange] / 250e-12).astype(np.int64),
                     ev.detector[inrange].astype(np.int64)])
    assert np.array_equal(got, want[:, np.lexsort(want[::-1])])      # card order: sync, dtime, channel
    ovf = recs[d.kind == 2] & 1023
    assert ovf.min() >= 1 and ovf.max() <= 1023


def test_one_overflow_record_per_empty_stretch():
    enc = RecordEncoder(TaggerSettings(resolution=250e-12), 50e-6)
    ev = _events([10, 10 + 1024 * 1023 + 5, 10 + 1024 * 1023 + 5 + 1024 * 1500], [0, 1, 0], [1e-6, 2e-6, 3e-6])
    recs = enc.encode(ev, 0)
    kinds = (recs >> 25) & 0x7F
    assert recs.size == 3 + 1 + 2                   # 1023 wraps -> one record; 1500 -> two
    assert ((recs[kinds == 0x7F] & 1023).tolist()) == [1023, 1023, 477]
    d = tags_decode("TimeHarp260N_T3", recs)
    assert d.time[d.kind == 0].tolist() == ev.sync.tolist()


def test_tagger_settings_are_applied():
    ev = _events([0, 0, 1], [0, 1, 1], [1.0e-6, 1.0e-6, 9.0e-6])
    s = TaggerSettings(resolution=25e-12, offset=0.5e-6, channel_offsets={1: 100e-12}, enabled={0: False})
    recs = RecordEncoder(s, 50e-6).encode(ev, 0)
    d = tags_decode("TimeHarp260P_T3", recs)
    assert d.channel.tolist() == [1]                    # channel 0 disabled; 9 us - 0.5 us out of range
    assert d.dtime.tolist() == [round((1.0e-6 + 100e-12 - 0.5e-6) / 25e-12)]


def test_herald_counter_on_records_equals_counting_the_events():
    ph = toy_physics(dark=(5000.0, 5000.0))
    ev, _ = sample_block(ph, ph.pattern_probs(-1.0), 400_000, np.random.default_rng(8), jitter=50e-12)
    pw, rw = (0.99e-6, 1.05e-6), (1.113e-6, 1.173e-6)
    recs = RecordEncoder(TaggerSettings(resolution=250e-12), 50e-6).encode(ev, 0, 400_000)
    hc = HeraldCounter.from_windows("TimeHarp260N_T3", pw, rw, 250e-12)
    hc.feed(recs)
    assert hc.result(trials=400_000).counts(channels=(0, 1)) == count_windows(ev, pw, rw, 400_000, 250e-12)


def test_t2_records():
    ev = _events([0, 2], [0, 1], [1e-6, 2e-6])
    s = TaggerSettings(mode="T2", resolution=1e-12)
    recs = RecordEncoder(s, 50e-6).encode(ev, 0, 3)
    d = tags_decode("TimeHarp260P_T2", recs)
    syncs = d.time[d.kind == 3]
    assert syncs.tolist() == [0, 50_000_000, 100_000_000]
    assert d.time[d.kind == 0].tolist() == [1_000_000, 102_000_000]
