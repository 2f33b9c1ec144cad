"""Heralded counting against a brute-force reference; streaming; numba == numpy; correlation."""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labctl.tags.correlate import cross_correlation, photon_times
from labctl.tags.herald import HeraldCounter, count_heralds, window_bins
from labctl.tags.records import MARKER, PHOTON, decode, encode, record_format

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PUMP = (10, 60)    # dtime bins [lo, hi)
READ = (100, 180)


def make_events(rng: np.random.Generator, fmt_name: str, n: int, span: int, channels: list[int],
                marker_rate: float = 0.05) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sorted T3 events; trials are crowded so several clicks share a sync period."""
    ns = np.sort(rng.integers(0, span, n))
    kind = np.where(rng.random(n) < marker_rate, MARKER, PHOTON)
    ch = np.where(kind == MARKER, rng.integers(1, 16, n), rng.choice(channels, n))
    dt = np.where(kind == PHOTON, rng.choice([rng.integers(0, 200), 20, 30, 120, 150, 199], n), 0)
    dt = np.where(kind == PHOTON, np.where(rng.random(n) < 0.5, rng.integers(0, 200, n), dt), 0)
    return ns, kind, ch, dt


def brute_force(ns: np.ndarray, kind: np.ndarray, ch: np.ndarray, dt: np.ndarray, end_sync: int,
                pump: tuple[int, int] = PUMP, read: tuple[int, int] = READ) -> dict:
    """Counts from the event list, straight from the definitions."""
    trials: dict[int, tuple[set, set]] = defaultdict(lambda: (set(), set()))
    seen = set()
    for n_, k, c, d in zip(ns.tolist(), kind.tolist(), ch.tolist(), dt.tolist()):
        if k != PHOTON:
            continue
        seen.add(c)
        if pump[0] <= d < pump[1]:
            trials[n_][0].add(c)
        if read[0] <= d < read[1]:
            trials[n_][1].add(c)
    a, b = sorted(seen)[:2]
    det = (a, b)
    last = int(ns.max()) if ns.size else -1
    return {
        "trials": max(end_sync, last + 1),
        "pump": [sum(d in p for p, _ in trials.values()) for d in det],
        "read": [sum(d in r for _, r in trials.values()) for d in det],
        "coincidences": [[sum(i in r and j in p for p, r in trials.values()) for j in det] for i in det],
        "double_heralds": sum(a in p and b in p for p, _ in trials.values()),
    }


@pytest.mark.parametrize("fmt_name,channels", [("TimeHarp260N_T3", [0, 1, 5]), ("HydraHarpV1_T3", [2, 3]),
                                                ("PicoHarp_T3", [1, 2, 4]), ("Generic_T3", [0, 63])])
@SETTINGS
@given(data=st.data())
def test_counts_match_brute_force_with_random_chunks(fmt_name: str, channels: list[int],
                                                     data: st.DataObject) -> None:
    fmt = record_format(fmt_name)
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1)))
    n = data.draw(st.integers(2, 300))
    span = data.draw(st.sampled_from([50, 3000, 300_000]))
    ns, kind, ch, dt = make_events(rng, fmt_name, n, span, channels)
    if len(set(ch[kind == PHOTON].tolist())) < 2:
        kind[:2] = PHOTON
        ch[:2] = channels[:2]
        dt[:2] = 20
    end = data.draw(st.one_of(st.none(), st.integers(0, 400_000)))
    recs = encode(fmt, ns, ch, dtime=dt, kind=kind, end=end,
                  max_overflow_count=data.draw(st.sampled_from([None, 1])))
    cuts = sorted(data.draw(st.lists(st.integers(0, recs.size), max_size=6)))
    chunks = [recs[a:b] for a, b in zip([0] + cuts, cuts + [recs.size])]
    use_numba = data.draw(st.booleans())
    res = count_heralds(fmt, chunks, PUMP, READ, use_numba=use_numba)
    ref = brute_force(ns, kind, ch, dt, (end // fmt.wrap) * fmt.wrap if end is not None else
                      (int(ns.max()) // fmt.wrap) * fmt.wrap)
    got = res.counts()
    assert got == {k: ref[k] for k in ("trials", "pump", "read", "coincidences")}
    assert res.diagnostics()["double_heralds"] == ref["double_heralds"]
    ph = kind == PHOTON
    assert res.diagnostics()["photons"] == {str(c): int((ch[ph] == c).sum()) for c in sorted(set(ch[ph].tolist()))}


@pytest.mark.parametrize("fmt_name", ["TimeHarp260P_T3", "HydraHarpV1_T3", "PicoHarp_T3"])
def test_numba_and_numpy_tallies_identical_on_random_words(fmt_name: str) -> None:
    """Unordered random records too (every record type, invalid codes, huge overflow counts)."""
    rng = np.random.default_rng(11)
    recs = rng.integers(0, 2 ** 32, 60_000, dtype=np.uint64).astype(np.uint32)
    recs[rng.random(recs.size) < 0.2] &= np.uint32(0x7FFFFFFF if fmt_name != "PicoHarp_T3" else 0x3FFFFFFF)
    bins = ((0, 9000), (4000, 30000))  # overlapping, to exercise both at once
    a = count_heralds(fmt_name, [recs[:12345], recs[12345:]], *bins, use_numba=True)
    b = count_heralds(fmt_name, [recs[:5], recs[5:40000], recs[40000:]], *bins, use_numba=False)
    for x, y in zip(a.tally.arrays(), b.tally.arrays()):
        assert np.array_equal(x, y)
    assert a.trials == b.trials
    assert a.tally.coinc.sum() > 0 and a.tally.pump_clicks.sum() > 0


def test_trial_split_across_chunks_counts_once() -> None:
    # one trial (sync 7) with heralds and reads on both detectors, cut between every record
    recs = encode("TimeHarp260N_T3", [7, 7, 7, 7, 7], [0, 1, 0, 1, 1], dtime=[20, 30, 120, 150, 160])
    for cut in range(recs.size + 1):
        for use_numba in (True, False):
            hc = HeraldCounter("TimeHarp260N_T3", PUMP, READ, use_numba=use_numba)
            hc.feed(recs[:cut])
            hc.feed(recs[cut:])
            c = hc.result().counts()
            assert c == {"trials": 8, "pump": [1, 1], "read": [1, 1], "coincidences": [[1, 1], [1, 1]]}
            d = hc.result().diagnostics()
            assert (d["double_heralds"], d["double_reads"], d["read_clicks"]) == (1, 1, [1, 2])


def test_trials_rules_and_detector_choice() -> None:
    recs = encode("TimeHarp260N_T3", [3000, 5000], [4, 2], dtime=[20, 120], end=10 * 1024 + 5)
    res = count_heralds("TimeHarp260N_T3", recs, PUMP, READ)
    assert res.trials == 10 * 1024                       # from sync 0 to the last wrap
    assert count_heralds("TimeHarp260N_T3", recs, PUMP, READ, trials_from="first").trials == 2001
    assert count_heralds("TimeHarp260N_T3", recs, PUMP, READ, trials=123).trials == 123
    assert res.detectors() == (2, 4)                      # the two lowest channels seen
    assert res.counts() == {"trials": 10240, "pump": [0, 1], "read": [1, 0], "coincidences": [[0, 0], [0, 0]]}
    assert res.counts([4, 2])["pump"] == [1, 0]
    with pytest.raises(ValueError):
        count_heralds("TimeHarp260N_T3", recs[:1], PUMP, READ).detectors()
    with pytest.raises(ValueError):
        HeraldCounter("TimeHarp260N_T2", PUMP, READ)
    empty = count_heralds("TimeHarp260N_T3", np.empty(0, np.uint32), PUMP, READ)
    assert empty.trials == 0 and empty.first_sync is None


@pytest.mark.parametrize("res", [25e-12, 16e-12, 1.5999999936067155e-11, 1e-9 / 3])
def test_window_bins_are_exact(res: float) -> None:
    for start, stop in [(0.0, 20e-9), (100e-9, 140e-9), (1e-12, 2.5e-11), (3 * res, 7 * res)]:
        lo, hi = window_bins(start, stop, res)
        for d in range(max(0, lo - 3), hi + 3):
            assert (lo <= d < hi) == (start <= d * res < stop), (start, stop, d)


def test_cross_correlation_finds_the_delay() -> None:
    rng = np.random.default_rng(5)
    a = np.sort(rng.integers(0, 10 ** 10, 20_000))
    b = np.sort(np.concatenate([a + 1234, rng.integers(0, 10 ** 10, 20_000)]))
    for use_numba in (True, False):
        edges, hist = cross_correlation(a, b, 100, 5000, use_numba=use_numba)
        assert edges[0] == -5000 and hist.size == 100
        k = int(np.argmax(hist))
        assert edges[k] <= 1234 < edges[k] + 100 and hist[k] >= 20_000
    x = cross_correlation(a, b, 37, 2000, use_numba=True)[1]
    y = cross_correlation(a, b, 37, 2000, use_numba=False)[1]
    assert np.array_equal(x, y)
    brute = np.array([(bb - aa) for aa in a[:300] for bb in b if -2035 <= bb - aa < 2035])
    part = cross_correlation(a[:300], b, 37, 2000)[1]
    assert part.sum() == brute.size


def test_photon_times_t3() -> None:
    recs = encode("TimeHarp260N_T3", [1, 2, 2], [0, 1, 0], dtime=[10, 20, 30])
    d = decode("TimeHarp260N_T3", recs)
    assert photon_times(d, 0, 1e-6, 25e-12).tolist() == [1_000_250, 2_000_750]
