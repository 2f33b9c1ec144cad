"""Heralded counting on T3 data: raw records -> the counts object of ``labctl witness``.

Definitions
-----------
- Each sync period is one trial. A photon's micro-time is ``dtime * resolution`` (s, from the
  sync); it is a *pump* (herald) click when it falls in the pump window and a *read* click when it
  falls in the read window, a window ``[start, stop)`` being half-open. In dtime bins this is
  ``lo <= dtime < hi`` with the bounds from :func:`window_bins`.
- Per trial and channel a click is counted once (a trial where a detector clicked twice in the
  pump window is one herald on that detector; the extra clicks show in the diagnostics).
- ``coincidences[i][j]`` counts trials in which read detector ``i`` and herald detector ``j``
  both clicked in the same sync period (row = read detector, column = herald detector).
- Detectors 1 and 2 are, unless named, the two lowest input channels that have any photon.
- Trials ``N``: by default the number of sync periods from the start of the measurement (sync 0)
  to the end of the records: ``max(overflow correction at the end, last sync seen + 1)``, i.e.
  including the trials before the first click and every wrap the overflow records announce.
  ``trials_from="first"`` counts instead from the first to the last sync period in which a photon
  or marker was seen (``last - first + 1``). An explicit ``trials`` overrides both (use it when the
  experiment knows its trial count: hardware writes no record for the last < 1024 empty syncs).

Markers, overflow records and invalid records never count as clicks. Photons on channels other
than the two detectors are counted in the diagnostics only.

The hot path is one fused pass over raw uint32 records (numba, with a numpy twin giving identical
results); :class:`HeraldCounter` streams over chunks and carries the overflow correction and the
open trial across chunk boundaries.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .records import (INVALID, LAYOUT_HT, MARKER, OVERFLOW, PHOTON, RecordFormat, _decode_np, as_records,
                      record_format)
from ._jit import njit, want_numba

NCH = 64
_I64_MAX = np.iinfo(np.int64).max


def window_bins(start: float, stop: float, resolution: float) -> tuple[int, int]:
    """dtime bounds ``(lo, hi)`` such that ``start <= dtime*resolution < stop`` exactly when
    ``lo <= dtime < hi`` (times in s). Bins are clamped to ``[0, 2**31)``."""
    if not (resolution > 0):
        raise ValueError("resolution must be > 0 s")

    def first_at_or_above(t: float) -> int:
        if t <= 0:
            return 0
        x = t / resolution
        if x >= 2 ** 31:
            return 2 ** 31
        d = math.ceil(x)
        while d > 0 and (d - 1) * resolution >= t:
            d -= 1
        while d * resolution < t:
            d += 1
        return d

    return first_at_or_above(start), max(first_at_or_above(stop), first_at_or_above(start))


# --------------------------------------------------------------------------------------------
# accumulators
# --------------------------------------------------------------------------------------------

@dataclass
class HeraldTally:
    """Raw tallies for all 64 channels (what the kernels fill). Counts are plain integers."""

    photons: np.ndarray = field(default_factory=lambda: np.zeros(NCH, np.int64))       #: all photons
    pump_clicks: np.ndarray = field(default_factory=lambda: np.zeros(NCH, np.int64))   #: photons in pump window
    read_clicks: np.ndarray = field(default_factory=lambda: np.zeros(NCH, np.int64))   #: photons in read window
    outside: np.ndarray = field(default_factory=lambda: np.zeros(NCH, np.int64))       #: photons in neither
    pump_trials: np.ndarray = field(default_factory=lambda: np.zeros(NCH, np.int64))   #: trials with a pump click
    read_trials: np.ndarray = field(default_factory=lambda: np.zeros(NCH, np.int64))   #: trials with a read click
    coinc: np.ndarray = field(default_factory=lambda: np.zeros((NCH, NCH), np.int64))  #: [read i, pump j]
    pump_pump: np.ndarray = field(default_factory=lambda: np.zeros((NCH, NCH), np.int64))  #: [j<k] both heralded
    read_read: np.ndarray = field(default_factory=lambda: np.zeros((NCH, NCH), np.int64))  #: [i<k] both read
    #: [overflow correction, open trial's sync (-1 none), its pump mask, its read mask,
    #:  first event sync, last event sync]
    state: np.ndarray = field(default_factory=lambda: np.array([0, -1, 0, 0, _I64_MAX, -1], np.int64))
    #: [marker records, overflow records, invalid records, records]
    counters: np.ndarray = field(default_factory=lambda: np.zeros(4, np.int64))

    def copy(self) -> "HeraldTally":
        return HeraldTally(**{k: v.copy() for k, v in self.__dict__.items()})

    def arrays(self) -> tuple[np.ndarray, ...]:
        return (self.photons, self.pump_clicks, self.read_clicks, self.outside, self.pump_trials,
                self.read_trials, self.coinc, self.pump_pump, self.read_read, self.state, self.counters)


@njit
def _lsr1(m):  # pragma: no cover - jit
    """Logical shift right by one of an int64 bit mask."""
    return (m >> 1) & np.int64(0x7FFFFFFFFFFFFFFF)


@njit
def _add_row(mask, row, mat):  # pragma: no cover - jit
    """mat[row, j] += 1 for every bit j of mask."""
    j = 0
    while mask != 0:
        if mask & 1:
            mat[row, j] += 1
        mask = _lsr1(mask)
        j += 1


@njit
def _add_col(mask, col, mat):  # pragma: no cover - jit
    """mat[j, col] += 1 for every bit j of mask."""
    j = 0
    while mask != 0:
        if mask & 1:
            mat[j, col] += 1
        mask = _lsr1(mask)
        j += 1


@njit
def _add_pairs(mask, ch, mat):  # pragma: no cover - jit
    """mat[min(j, ch), max(j, ch)] += 1 for every bit j of mask (j != ch)."""
    j = 0
    while mask != 0:
        if mask & 1:
            if j < ch:
                mat[j, ch] += 1
            elif j > ch:
                mat[ch, j] += 1
        mask = _lsr1(mask)
        j += 1


@njit
def _herald_nb(recs, ht, v2, wrap, plo, phi, rlo, rhi, photons, pclk, rclk, outside, ptr, rtr,
               coinc, pp, rr, st, cnt):  # pragma: no cover - jit
    """Fused T3 records -> tallies. Two passes per block of 2048 records: a branch-free pass
    applies the overflow records and compacts the indices of all other records, then the few
    photons/markers are processed. Counts are updated when a channel first clicks in a window
    of the open trial, so no per-trial flush is needed."""
    base = st[0]
    cur = st[1]
    pm = st[2]
    rm = st[3]
    mn = st[4]
    mx = st[5]
    nmark = cnt[0]
    nofl = cnt[1]
    ninv = cnt[2]
    n = recs.shape[0]
    blk = 2048
    idx = np.empty(blk, np.int64)
    bases = np.empty(blk, np.int64)
    one = np.int64(1)
    if ht:  # special bit + channel 63
        omask = np.int64(0xFE000000)
        oval = np.int64(0xFE000000)
        cmask = np.int64(1023) if v2 else np.int64(0)
    else:  # channel 15 with dtime 0
        omask = np.int64(0xFFFF0000)
        oval = np.int64(0xF0000000)
        cmask = np.int64(0)
    for s0 in range(0, n, blk):
        s1 = min(n, s0 + blk)
        k = 0
        for i in range(s0, s1):
            r = np.int64(recs[i])
            isofl = (r & omask) == oval
            c = r & cmask
            c += c == 0
            idx[k] = i
            bases[k] = base
            k += 1 - isofl
            base += wrap * c * isofl
        nofl += (s1 - s0) - k
        for q in range(k):
            r = np.int64(recs[idx[q]])
            if ht:
                ch = (r >> 25) & 63
                ns = bases[q] + (r & 1023)
                dt = (r >> 10) & 32767
                if (r >> 31) != 0:
                    if ch == 0 or ch > 15:
                        ninv += 1
                    else:
                        nmark += 1
                        mn = min(mn, ns)
                        mx = max(mx, ns)
                    continue
            else:
                ch = r >> 28
                ns = bases[q] + (r & 0xFFFF)
                dt = (r >> 16) & 0xFFF
                if ch == 15:
                    if (dt & 15) == 0:
                        ninv += 1
                    else:
                        nmark += 1
                        mn = min(mn, ns)
                        mx = max(mx, ns)
                    continue
                if ch < 1 or ch > 4:
                    ninv += 1
                    continue
            photons[ch] += 1
            mn = min(mn, ns)
            mx = max(mx, ns)
            inp = (dt >= plo) & (dt < phi)
            inr = (dt >= rlo) & (dt < rhi)
            w = inp | inr
            pclk[ch] += inp
            rclk[ch] += inr
            outside[ch] += 1 - w
            keep = (ns == cur) | (not w)  # same trial, or a click that does not touch trials
            pm = pm if keep else 0
            rm = rm if keep else 0
            cur = ns if w else cur
            bit = one << ch
            newp = inp & ((pm & bit) == 0)
            newr = inr & ((rm & bit) == 0)
            ptr[ch] += newp
            rtr[ch] += newr
            if newp and (rm | pm) != 0:
                _add_col(rm, ch, coinc)
                _add_pairs(pm, ch, pp)
            pm |= bit if newp else 0
            if newr and (rm | pm) != 0:
                _add_row(pm, ch, coinc)
                _add_pairs(rm, ch, rr)
            rm |= bit if newr else 0
    st[0] = base
    st[1] = cur
    st[2] = pm
    st[3] = rm
    st[4] = mn
    st[5] = mx
    cnt[0] = nmark
    cnt[1] = nofl
    cnt[2] = ninv
    cnt[3] += n


def _bits(mask: int) -> list[int]:
    return [c for c in range(NCH) if (mask >> c) & 1]


def _flush_np(pmr: np.ndarray, rmr: np.ndarray, t: HeraldTally, sign: int = 1) -> None:
    """Add (``sign`` 1) or remove (-1) whole trials given their pump and read channel masks."""
    if pmr.size == 0:
        return
    union = int(np.bitwise_or.reduce(pmr | rmr)) & ((1 << 64) - 1)
    chans = _bits(union)
    p = {c: ((pmr >> c) & 1) for c in chans}
    r = {c: ((rmr >> c) & 1) for c in chans}
    for a in chans:
        t.pump_trials[a] += sign * int(p[a].sum())
        t.read_trials[a] += sign * int(r[a].sum())
        for b in chans:
            t.coinc[a, b] += sign * int((r[a] & p[b]).sum())
            if b > a:
                t.pump_pump[a, b] += sign * int((p[a] & p[b]).sum())
                t.read_read[a, b] += sign * int((r[a] & r[b]).sum())


def _herald_np(fmt: RecordFormat, recs: np.ndarray, bins: tuple[int, int, int, int], t: HeraldTally) -> None:
    """Pure-numpy twin of :func:`_herald_nb` (identical tallies). Every trial seen so far is
    counted, the open one included; the open trial's masks carry over to the next chunk."""
    plo, phi, rlo, rhi = bins
    st = t.state
    d, base = _decode_np(fmt, recs, int(st[0]))
    k = d.kind
    kc = np.bincount(k, minlength=5)
    t.counters += [kc[MARKER], kc[OVERFLOW], kc[INVALID], len(d)]
    ev = (k == PHOTON) | (k == MARKER)
    if ev.any():
        te = d.time[ev]
        st[4] = min(int(st[4]), int(te.min()))
        st[5] = max(int(st[5]), int(te.max()))
    st[0] = base
    ph = k == PHOTON
    ch = d.channel[ph].astype(np.int64)
    dt = d.dtime[ph].astype(np.int64)
    ns = d.time[ph]
    inp = (dt >= plo) & (dt < phi)
    inr = (dt >= rlo) & (dt < rhi)
    t.photons += np.bincount(ch, minlength=NCH)
    t.pump_clicks += np.bincount(ch[inp], minlength=NCH)
    t.read_clicks += np.bincount(ch[inr], minlength=NCH)
    t.outside += np.bincount(ch[~(inp | inr)], minlength=NCH)
    w = inp | inr
    if not w.any():
        return
    bit = np.left_shift(np.int64(1), ch[w])
    open_trial = st[1:4].copy()
    nsw = np.concatenate([[st[1]], ns[w]])
    bp = np.concatenate([[st[2]], np.where(inp[w], bit, 0)])
    br = np.concatenate([[st[3]], np.where(inr[w], bit, 0)])
    starts = np.flatnonzero(np.concatenate([[True], nsw[1:] != nsw[:-1]]))
    pmr = np.bitwise_or.reduceat(bp, starts)
    rmr = np.bitwise_or.reduceat(br, starts)
    _flush_np(pmr, rmr, t)
    _flush_np(open_trial[1:2], open_trial[2:3], t, sign=-1)  # was counted already
    st[1] = nsw[starts[-1]]
    st[2] = pmr[-1]
    st[3] = rmr[-1]


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------

@dataclass
class HeraldResult:
    """Finished tallies plus the trial count; :meth:`counts` gives the witness counts object."""

    tally: HeraldTally
    trials: int              #: N (see the module docstring)
    first_sync: int | None   #: first sync period with a photon or marker
    last_sync: int | None    #: last one
    end_sync: int            #: overflow correction at the end (syncs)

    def seen_channels(self) -> list[int]:
        return [int(c) for c in np.flatnonzero(self.tally.photons)]

    def detectors(self, channels: Sequence[int] | None = None) -> tuple[int, int]:
        """The two detectors: ``channels`` if given, else the two lowest channels with photons.
        Raises ValueError when fewer than two channels have photons."""
        if channels is not None:
            a, b = (int(c) for c in channels)
            for c in (a, b):
                if not 0 <= c < NCH:
                    raise ValueError(f"channel {c} is outside 0..{NCH - 1}")
            if a == b:
                raise ValueError("the two detectors must be different channels")
            return a, b
        seen = self.seen_channels()
        if len(seen) < 2:
            raise ValueError(f"need photons on two channels to pick the detectors, saw "
                             f"{seen or 'none'}")
        return seen[0], seen[1]

    def counts(self, channels: Sequence[int] | None = None) -> dict[str, Any]:
        """The counts object: ``trials``, ``pump`` [C(p1), C(p2)], ``read`` [C(r1), C(r2)],
        ``coincidences`` [[C(r1,p1), C(r1,p2)], [C(r2,p1), C(r2,p2)]]."""
        a, b = self.detectors(channels)
        t = self.tally
        return {
            "trials": int(self.trials),
            "pump": [int(t.pump_trials[a]), int(t.pump_trials[b])],
            "read": [int(t.read_trials[a]), int(t.read_trials[b])],
            "coincidences": [[int(t.coinc[a, a]), int(t.coinc[a, b])],
                             [int(t.coinc[b, a]), int(t.coinc[b, b])]],
        }

    def diagnostics(self, channels: Sequence[int] | None = None) -> dict[str, Any]:
        """Extra figures (not part of the counts-file format)."""
        a, b = self.detectors(channels)
        t = self.tally
        lo, hi = min(a, b), max(a, b)
        others = int(t.photons.sum() - t.photons[a] - t.photons[b])
        return {
            "channels": [a, b],
            "double_heralds": int(t.pump_pump[lo, hi]),
            "double_reads": int(t.read_read[lo, hi]),
            "pump_clicks": [int(t.pump_clicks[a]), int(t.pump_clicks[b])],
            "read_clicks": [int(t.read_clicks[a]), int(t.read_clicks[b])],
            "clicks_outside_windows": [int(t.outside[a]), int(t.outside[b])],
            "other_channel_photons": others,
            "photons": {str(c): int(n) for c, n in enumerate(t.photons) if n},
            "markers": int(t.counters[0]),
            "overflow_records": int(t.counters[1]),
            "invalid_records": int(t.counters[2]),
            "records": int(t.counters[3]),
            "first_sync": self.first_sync,
            "last_sync": self.last_sync,
            "end_sync": self.end_sync,
        }


class HeraldCounter:
    """Fused records -> heralded counts, fed chunk by chunk (state carried between chunks).

    ``pump_bins`` and ``read_bins`` are ``(lo, hi)`` dtime bounds (see :func:`window_bins`).
    """

    def __init__(self, fmt: RecordFormat | int | str, pump_bins: tuple[int, int],
                 read_bins: tuple[int, int], *, use_numba: bool | None = None) -> None:
        self.fmt = record_format(fmt)
        if not self.fmt.is_t3:
            raise ValueError(f"heralded counting needs T3 records, not {self.fmt.name}")
        self.bins = (int(pump_bins[0]), int(pump_bins[1]), int(read_bins[0]), int(read_bins[1]))
        self.use_numba = use_numba
        self.tally = HeraldTally()

    @classmethod
    def from_windows(cls, fmt: RecordFormat | int | str, pump_window: tuple[float, float],
                     read_window: tuple[float, float], resolution: float,
                     use_numba: bool | None = None) -> "HeraldCounter":
        """Windows ``(start, stop)`` in s from the sync; ``resolution`` is the dtime bin (s)."""
        return cls(fmt, window_bins(*pump_window, resolution), window_bins(*read_window, resolution),
                   use_numba=use_numba)

    def feed(self, records: object) -> None:
        """Process the next chunk of raw uint32 records."""
        recs = as_records(records)
        if not recs.size:
            return
        if want_numba(self.use_numba):
            f = self.fmt
            _herald_nb(recs, f.layout == LAYOUT_HT, f.version == 2, np.int64(f.wrap),
                       *(np.int64(b) for b in self.bins), *self.tally.arrays())
        else:
            _herald_np(self.fmt, recs, self.bins, self.tally)

    def result(self, *, trials: int | None = None, trials_from: str = "start") -> HeraldResult:
        """The tallies so far (a copy: feeding may go on) and the trial count."""
        t = self.tally.copy()
        st = t.state
        have = int(st[5]) >= 0
        first = int(st[4]) if have else None
        last = int(st[5]) if have else None
        end = int(st[0])
        if trials is not None:
            n = int(trials)
        elif trials_from == "start":
            n = max(end, (last + 1) if have else 0)
        elif trials_from == "first":
            n = (last - first + 1) if have else 0  # type: ignore[operator]
        else:
            raise ValueError(f"trials_from must be 'start' or 'first', not {trials_from!r}")
        return HeraldResult(t, n, first, last, end)


def count_heralds(fmt: RecordFormat | int | str, chunks: object, pump_bins: tuple[int, int],
                  read_bins: tuple[int, int], *, trials: int | None = None,
                  trials_from: str = "start", use_numba: bool | None = None) -> HeraldResult:
    """Convenience: run a :class:`HeraldCounter` over an iterable of record chunks (or one array)."""
    hc = HeraldCounter(fmt, pump_bins, read_bins, use_numba=use_numba)
    if isinstance(chunks, (np.ndarray, bytes, bytearray, memoryview)):
        chunks = [chunks]
    for c in chunks:  # type: ignore[union-attr]
        hc.feed(c)
    return hc.result(trials=trials, trials_from=trials_from)
