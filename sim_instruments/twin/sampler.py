"""Sampling events, not trials: the clicks of N sync periods from their exact probabilities.

For a block of N trials with the instruments in one state:

1. the trials that have any core click (probability 1 − π_0 each, independently) are the points
   of a Bernoulli process: their sync indices are cumulative sums of Geometric(1 − π_0) gaps,
   so their number K is Binomial(N, 1 − π_0) and they come out sorted;
2. the numbers of those trials with each of the 15 non-empty core patterns (herald × read on
   detectors 1, 2) are one multinomial draw Multinomial(K, π_k/(1 − π_0)), and the labels are
   shuffled over the K trials. Steps 1–2 together give the 16 pattern counts exactly
   Multinomial(N, π) and place them uniformly: exactly the law of N independent trials;
3. every other pulse (e.g. the auxiliary lock pulse) clicks on detector i in the trials of an
   independent Bernoulli(q_i) process (geometric gaps again), independently of the core;
4. dark counts: Poisson(N·T·rate) clicks per detector at uniform syncs and uniform times;
5. a click's time is drawn from its pulse's intensity profile (∝ V(t)²), delayed by the
   detection delay and blurred by the detector jitter; then the dead time of each detector removes
   clicks that follow a registered click too closely, and latched detectors are silent.

Cost grows with the number of clicks (about 1e-3 per trial here), not with N.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .detection import apply_dead_time
from .model import N_PATTERNS, Physics
from .state import LightPulse

#: event sources (``Events.source``)
HERALD, READ, EXTRA, DARK = 0, 1, 2, 3


@dataclass
class Events:
    """Clicks of a block: trial (sync) index from the block start, detector (0, 1), time after
    the trial's sync edge (s), source (HERALD, READ, EXTRA, DARK). Sorted by (sync, time)."""

    sync: np.ndarray
    detector: np.ndarray
    time: np.ndarray
    source: np.ndarray

    @property
    def size(self) -> int:
        return int(self.sync.size)

    def take(self, mask: np.ndarray) -> "Events":
        return Events(self.sync[mask], self.detector[mask], self.time[mask], self.source[mask])

    @classmethod
    def empty(cls) -> "Events":
        return cls(np.empty(0, np.int64), np.empty(0, np.int8), np.empty(0), np.empty(0, np.int8))


def distinct_uniform(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """``k`` distinct integers drawn uniformly from ``0 … n−1`` (a uniform random k-subset),
    sorted."""
    if k <= 0:
        return np.empty(0, np.int64)
    if k > n:
        raise ValueError(f"cannot draw {k} distinct values from {n}")
    if k > n // 4:
        return np.sort(rng.choice(n, size=k, replace=False)).astype(np.int64)
    got = _sorted_unique(rng.integers(0, n, size=k, dtype=np.int64))
    while got.size < k:          # duplicates are rejected and drawn again
        more = rng.integers(0, n, size=k - got.size, dtype=np.int64)
        got = _sorted_unique(np.concatenate([got, more]))
    return got


def bernoulli_positions(rng: np.random.Generator, n: int, q: float) -> np.ndarray:
    """Sorted indices of the successes among ``n`` independent Bernoulli(q) trials, from
    geometric gaps (exact; cost ∝ the number of successes)."""
    if n <= 0 or q <= 0.0:
        return np.empty(0, np.int64)
    if q >= 1.0:
        return np.arange(n, dtype=np.int64)
    if q > 0.05:        # dense: a plain draw per trial is cheaper
        return np.flatnonzero(rng.random(n) < q).astype(np.int64)
    parts = []
    pos = -1
    mean = n * q
    while True:
        m = int(mean + 6.0 * math.sqrt(mean + 1.0) + 16)
        gaps = rng.geometric(q, size=m)
        cs = pos + np.cumsum(gaps, dtype=np.int64)
        if cs[-1] >= n:
            parts.append(cs[cs < n])
            break
        parts.append(cs)
        pos = int(cs[-1])
        mean = (n - 1 - pos) * q
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _sorted_unique(x: np.ndarray) -> np.ndarray:
    x = np.sort(x)
    if x.size < 2:
        return x
    return x[np.concatenate([[True], x[1:] != x[:-1]])]


def sort_events(sync: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Order by (sync, time) for arrays made of a few sync-sorted runs (a stable sort on the
    sync merges the runs; only trials with several clicks need sorting by time)."""
    order = np.argsort(sync, kind="stable")
    s = sync[order]
    same = np.flatnonzero(s[1:] == s[:-1])
    if same.size:
        idx = np.unique(np.concatenate([same, same + 1]))
        sub = order[idx]
        order[idx] = sub[np.lexsort((t[sub], sync[sub]))]
    return order


def _times(pulse: LightPulse, rng: np.random.Generator, n: int) -> np.ndarray:
    return pulse.sample_times(rng.random(n))


def sample_block(phys: Physics, patterns: np.ndarray, n_trials: int, rng: np.random.Generator, *,
                 detection_delay: float = 0.0, jitter: float = 0.0, dead_time: float = 0.0,
                 silent: tuple[bool, bool] = (False, False)) -> tuple[Events, np.ndarray]:
    """Events of ``n_trials`` trials and the 16 core pattern counts (index H + 4 R)."""
    n = int(n_trials)
    counts = np.zeros(N_PATTERNS, np.int64)
    syncs, dets, times, srcs = [], [], [], []
    p_busy = float(1.0 - patterns[0]) if n > 0 else 0.0
    where = bernoulli_positions(rng, n, p_busy)
    busy = int(where.size)
    counts[0] = n - busy
    if busy > 0:
        counts[1:] = rng.multinomial(busy, np.asarray(patterns[1:]) / max(p_busy, 1e-300))
        labels = np.repeat(np.arange(1, N_PATTERNS), counts[1:])
        rng.shuffle(labels)
        H, R = labels % 4, labels // 4
        for bit, det in ((1, 0), (2, 1)):
            if phys.core_pump is not None:
                s = where[(H & bit) != 0]
                syncs.append(s)
                dets.append(np.full(s.size, det, np.int8))
                times.append(_times(phys.core_pump, rng, s.size))
                srcs.append(np.full(s.size, HERALD, np.int8))
            if phys.core_read is not None:
                s = where[(R & bit) != 0]
                syncs.append(s)
                dets.append(np.full(s.size, det, np.int8))
                times.append(_times(phys.core_read, rng, s.size))
                srcs.append(np.full(s.size, READ, np.int8))
    for pulse, probs in zip(phys.extra_pulses, phys.extra_probs):
        for det in range(2):
            s = bernoulli_positions(rng, n, float(probs[det]))
            m = int(s.size)
            syncs.append(s)
            dets.append(np.full(m, det, np.int8))
            times.append(_times(pulse, rng, m))
            srcs.append(np.full(m, EXTRA, np.int8))
    for det in range(2):
        lam = n * phys.period * float(phys.dark_hz[det])
        m = int(rng.poisson(lam)) if lam > 0 else 0
        syncs.append(np.sort(rng.integers(0, n, size=m, dtype=np.int64)))
        dets.append(np.full(m, det, np.int8))
        times.append(rng.random(m) * phys.period)
        srcs.append(np.full(m, DARK, np.int8))
    if not syncs:
        return Events.empty(), counts
    sync = np.concatenate(syncs).astype(np.int64)
    det = np.concatenate(dets).astype(np.int8)
    t = np.concatenate(times).astype(np.float64) + detection_delay
    src = np.concatenate(srcs).astype(np.int8)
    if jitter > 0 and t.size:
        t = t + rng.normal(0.0, jitter, t.size)
    ev = Events(sync, det, t, src).take(sort_events(sync, t))
    keep = np.ones(ev.size, bool)
    for d_ in range(2):
        if silent[d_]:
            keep &= ev.detector != d_
    if dead_time > 0:       # per detector, so a silent detector's clicks affect nothing
        keep &= apply_dead_time(ev.sync, ev.detector, ev.time, phys.period, dead_time)
    return (ev if keep.all() else ev.take(keep)), counts


def count_windows(ev: Events, herald: tuple[float, float], read: tuple[float, float], n_trials: int,
                  resolution: float | None = None, channels: tuple[int, int] = (0, 1)) -> dict:
    """Heralded counts straight from events, with the definitions of
    :class:`labctl.tags.herald.HeraldCounter`: per trial and detector one herald if a click falls
    in ``herald`` = [start, stop), one read likewise; ``coincidences[i][j]`` = trials with a read
    on i and a herald on j. With ``resolution`` the times are binned to the tagger's dtime first
    and the windows converted with :func:`labctl.tags.herald.window_bins` (identical counts to
    the records path)."""
    if resolution is not None:
        from labctl.tags.herald import window_bins

        x = np.floor(ev.time / resolution).astype(np.int64)
        hb, rb = window_bins(*herald, resolution), window_bins(*read, resolution)
        inh = (x >= hb[0]) & (x < hb[1])
        inr = (x >= rb[0]) & (x < rb[1])
    else:
        inh = (ev.time >= herald[0]) & (ev.time < herald[1])
        inr = (ev.time >= read[0]) & (ev.time < read[1])
    out = {"trials": int(n_trials), "pump": [0, 0], "read": [0, 0], "coincidences": [[0, 0], [0, 0]]}
    hs = [np.unique(ev.sync[inh & (ev.detector == j)]) for j in range(2)]
    rs = [np.unique(ev.sync[inr & (ev.detector == i)]) for i in range(2)]
    for j in range(2):
        out["pump"][j] = int(hs[j].size)
        out["read"][j] = int(rs[j].size)
    for i in range(2):
        for j in range(2):
            out["coincidences"][i][j] = int(np.intersect1d(rs[i], hs[j], assume_unique=True).size)
    return out
