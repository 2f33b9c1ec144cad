"""PicoQuant TTTR record codecs: T2 and T3 records of PicoHarp 300, HydraHarp 400 (v1 and v2
records), TimeHarp 260 NANO and PICO and the generic format (MultiHarp, PicoHarp 330).

Bit layouts, record-type codes and overflow rules follow PicoQuant's public demo code
(PicoQuant/PicoQuant-Time-Tagged-File-Format-Demos, ``PTU/Python/Read_PTU.py``: ``readPT2``,
``readPT3``, ``readHT2(version)``, ``readHT3(version)``); this module is an independent
implementation, not a copy.

Layouts (bit 31 first)
----------------------
- PicoHarp T2 (``PT``): channel 4 | time 28. Channel 15 is special: the low 4 time bits are marker
  bits, 0 meaning an overflow (time += 210698240).
- PicoHarp T3 (``PT``): channel 4 | dtime 12 | nsync 16. Channel 15 is special: dtime 0 is an
  overflow (nsync += 65536), otherwise a marker with the marker bits in dtime's low 4 bits.
  Photon channels are 1..4 as the hardware writes them.
- HydraHarp / TimeHarp 260 / generic T2 (``HT``): special 1 | channel 6 | time 25. Special with
  channel 63 is an overflow, channel 0 a sync record, 1..15 markers. The wrap is 2^25 except for
  HydraHarp v1 records, whose wrap is 33552000 (as in the demo code).
- HT T3: special 1 | channel 6 | dtime 15 | nsync 10, wrap 1024. Special with channel 63 is an
  overflow, 1..15 markers.
- Overflow count: HydraHarp v1 records and PicoHarp always count one wrap per overflow record; all
  other HT formats carry the number of wraps in the time/nsync field, 0 meaning 1.

Decoded output (one entry per record, see :class:`DecodedRecords`)
-----------------------------------------------------------------
- ``kind`` (uint8): :data:`PHOTON`, :data:`MARKER`, :data:`OVERFLOW`, :data:`SYNC` (HT T2 sync
  records) or :data:`INVALID` (reserved codes, e.g. an HT special record with channel 16..62).
- ``channel`` (int8): for photons the record's channel field (HT: input channel 0..63; PicoHarp
  T2: 0..4; PicoHarp T3: 1..4); for markers the marker bits (1..15); -1 for overflow and sync
  records; the raw channel field for invalid records.
- ``time`` (int64): absolute time with overflows applied. T2: in units of the global resolution
  (``MeasDesc_GlobalResolution``, usually 1 ps). T3: the absolute sync number (one unit = one sync
  period = the global resolution). For an overflow record: the overflow correction after it.
- ``dtime`` (uint16): T3 photons only, the micro-time in units of the resolution
  (``MeasDesc_Resolution``); 0 for everything else.

PicoHarp T2 markers keep the marker bits in the low 4 time bits, so their time is coarse by up to
15 units (as the vendor documents).

``overflows=False`` (``decode``, ``decode_chunk``, ``StreamDecoder``) leaves the overflow records
out of the output, as tttrlib and phconvert do; ``threads`` decodes in parallel; neither changes a
value. See ``docs/timetags.md``.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from ..errors import InputError
from ._jit import ctz, decode_threads, njit, popcount, want_numba

PHOTON = 0
MARKER = 1
OVERFLOW = 2
SYNC = 3
INVALID = 4
KIND_NAMES = ("photon", "marker", "overflow", "sync", "invalid")

LAYOUT_PT = "PT"  #: PicoHarp 300 bit layout
LAYOUT_HT = "HT"  #: HydraHarp / TimeHarp 260 / generic bit layout


@dataclass(frozen=True)
class RecordFormat:
    """One TTTR record type (``TTResultFormat_TTTRRecType``)."""

    code: int      #: the PTU record-type code, e.g. 0x00010305
    name: str      #: e.g. ``"TimeHarp260N_T3"``
    mode: int      #: 2 (T2) or 3 (T3)
    layout: str    #: LAYOUT_PT or LAYOUT_HT
    version: int   #: 1: one wrap per overflow record; 2: wrap count in the field (0 means 1)
    wrap: int      #: time (T2, global-resolution units) or nsync (T3) added per wrap

    @property
    def is_t3(self) -> bool:
        return self.mode == 3

    @property
    def mode_name(self) -> str:
        return f"T{self.mode}"

    @property
    def field_bits(self) -> int:
        """Width of the time (T2) or nsync (T3) field."""
        if self.layout == LAYOUT_PT:
            return 16 if self.is_t3 else 28
        return 10 if self.is_t3 else 25

    @property
    def dtime_bits(self) -> int:
        """Width of the T3 dtime field (0 for T2)."""
        if not self.is_t3:
            return 0
        return 12 if self.layout == LAYOUT_PT else 15

    @property
    def max_overflow_count(self) -> int:
        """Most wraps one overflow record can carry."""
        if self.layout == LAYOUT_PT or self.version == 1:
            return 1
        return (1 << self.field_bits) - 1

    def photon_channels(self) -> range:
        """Channel-field values that are photons."""
        if self.layout == LAYOUT_HT:
            return range(0, 64)
        return range(1, 5) if self.is_t3 else range(0, 5)


_FORMATS = (
    RecordFormat(0x00010303, "PicoHarp_T3", 3, LAYOUT_PT, 1, 65536),
    RecordFormat(0x00010203, "PicoHarp_T2", 2, LAYOUT_PT, 1, 210698240),
    RecordFormat(0x00010304, "HydraHarpV1_T3", 3, LAYOUT_HT, 1, 1024),
    RecordFormat(0x00010204, "HydraHarpV1_T2", 2, LAYOUT_HT, 1, 33552000),
    RecordFormat(0x01010304, "HydraHarpV2_T3", 3, LAYOUT_HT, 2, 1024),
    RecordFormat(0x01010204, "HydraHarpV2_T2", 2, LAYOUT_HT, 2, 1 << 25),
    RecordFormat(0x00010305, "TimeHarp260N_T3", 3, LAYOUT_HT, 2, 1024),
    RecordFormat(0x00010205, "TimeHarp260N_T2", 2, LAYOUT_HT, 2, 1 << 25),
    RecordFormat(0x00010306, "TimeHarp260P_T3", 3, LAYOUT_HT, 2, 1024),
    RecordFormat(0x00010206, "TimeHarp260P_T2", 2, LAYOUT_HT, 2, 1 << 25),
    RecordFormat(0x00010307, "Generic_T3", 3, LAYOUT_HT, 2, 1024),
    RecordFormat(0x00010207, "Generic_T2", 2, LAYOUT_HT, 2, 1 << 25),
)
FORMATS_BY_CODE: dict[int, RecordFormat] = {f.code: f for f in _FORMATS}
FORMATS_BY_NAME: dict[str, RecordFormat] = {f.name: f for f in _FORMATS}
FORMATS: tuple[RecordFormat, ...] = _FORMATS


def record_format(key: int | str | RecordFormat) -> RecordFormat:
    """Look a format up by PTU code (``0x00010305``) or name (``"TimeHarp260N_T3"``).

    Raises KeyError for an unknown one (file readers turn that into an InputError).
    """
    if isinstance(key, RecordFormat):
        return key
    if isinstance(key, str):
        if key in FORMATS_BY_NAME:
            return FORMATS_BY_NAME[key]
        low = {k.lower(): v for k, v in FORMATS_BY_NAME.items()}
        if key.lower() in low:
            return low[key.lower()]
        raise KeyError(f"unknown record format {key!r}; known: {', '.join(FORMATS_BY_NAME)}")
    code = int(key)
    if code not in FORMATS_BY_CODE:
        raise KeyError(f"unknown TTTR record type 0x{code & 0xFFFFFFFF:08X}")
    return FORMATS_BY_CODE[code]


# --------------------------------------------------------------------------------------------
# decoded data
# --------------------------------------------------------------------------------------------

@dataclass
class DecodedRecords:
    """Decoded records, one array entry per input record (units in the module docstring)."""

    fmt: RecordFormat
    kind: np.ndarray     #: uint8, PHOTON / MARKER / OVERFLOW / SYNC / INVALID
    channel: np.ndarray  #: int8
    time: np.ndarray     #: int64, T2: global-resolution units; T3: absolute sync number
    dtime: np.ndarray    #: uint16, T3 micro-time in resolution units (0 otherwise)

    def __len__(self) -> int:
        return int(self.kind.shape[0])

    @property
    def photon_mask(self) -> np.ndarray:
        return self.kind == PHOTON

    def counts(self) -> dict[str, object]:
        """Record counts: ``photons`` (channel -> count), ``markers``, ``overflows`` (records),
        ``syncs``, ``invalid``."""
        ph = self.channel[self.kind == PHOTON].astype(np.int64)
        photons: dict[int, int] = {}
        if ph.size:
            bc = np.bincount(ph - ph.min())
            photons = {int(c) + int(ph.min()): int(n) for c, n in enumerate(bc) if n}
        k = np.bincount(self.kind, minlength=5)
        return {"photons": photons, "markers": int(k[MARKER]), "overflows": int(k[OVERFLOW]),
                "syncs": int(k[SYNC]), "invalid": int(k[INVALID])}

    @classmethod
    def empty(cls, fmt: RecordFormat | int | str, n: int) -> "DecodedRecords":
        """Uninitialised arrays for ``n`` records (an ``out`` buffer for :func:`decode_chunk`)."""
        return _empty(record_format(fmt), int(n))

    @staticmethod
    def concat(parts: Sequence["DecodedRecords"], fmt: RecordFormat | None = None) -> "DecodedRecords":
        """Join decoded chunks (in order)."""
        if not parts:
            if fmt is None:
                raise ValueError("concat of no parts needs fmt")
            return _empty(fmt, 0)
        return DecodedRecords(parts[0].fmt, np.concatenate([p.kind for p in parts]),
                              np.concatenate([p.channel for p in parts]),
                              np.concatenate([p.time for p in parts]),
                              np.concatenate([p.dtime for p in parts]))


def _empty(fmt: RecordFormat, n: int) -> DecodedRecords:
    return DecodedRecords(fmt, np.empty(n, np.uint8), np.empty(n, np.int8), np.empty(n, np.int64),
                          np.empty(n, np.uint16))


def as_records(data: object) -> np.ndarray:
    """View ``data`` (bytes-like with a length that is a multiple of 4, or an integer array) as a
    native uint32 array without copying where possible."""
    if isinstance(data, np.ndarray):
        arr = np.asarray(data)  # drops the memmap subclass, keeps the buffer
        if arr.dtype != np.uint32:
            if arr.dtype.kind in "ui" and arr.dtype.itemsize == 4:
                arr = arr.astype(np.uint32, copy=False) if arr.dtype.isnative else arr.astype(np.uint32)
            else:
                arr = arr.astype(np.uint32)
        return np.ascontiguousarray(arr.reshape(-1))
    buf = memoryview(data).cast("B")  # type: ignore[arg-type]
    if len(buf) % 4:
        raise ValueError(f"{len(buf)} bytes is not a whole number of 4-byte records")
    return np.frombuffer(buf, dtype="<u4").astype(np.uint32, copy=False)


# --------------------------------------------------------------------------------------------
# kernels (numba and numpy give identical results)
# --------------------------------------------------------------------------------------------
#
# Typical T3 data are mostly overflow records (one per 1024 syncs when the photon rate is below
# the sync rate). Each kernel walks super-blocks of _SUPER records, each in one of two modes
# chosen from the density of non-overflow records ("events") in the previous super-block:
#
# - sparse (at most half of the records are events): blocks of 64 records. A branch-free pass,
#   which LLVM vectorises, builds a bit mask of the records that are not overflow records and
#   checks whether any overflow record of the block adds more than one wrap. The overflow
#   correction before record k is then ``base + wrap * (overflow records before k)``, a popcount
#   of the mask (with multi-wrap records, a 65-entry prefix sum). The per-record decoder writes
#   the whole block as overflow records with vector stores; every kernel then visits the few
#   events by their set bits (count trailing zeros), so overflow records cost no branch.
# - dense: record by record (`_classify`), which the branch predictor handles well there.
#
# Both modes give identical results; only the speed differs (synthetic 10 % photon data: ~3x the
# record-by-record loop; dense real files: within a few % of it). `_scan_nb` (branch-free)
# counts the non-overflow records and wraps of a part, for the parallel decoder's prefix sums.
#
# Notes for editing: the block loops must run to a bound LLVM can see is a whole number of
# blocks (``n - n % _BLOCK``), or nothing is vectorised; helper functions taking arrays cost a
# call and reference counting, so they are called once per super-block, not per block.

_BLOCK = 64
_SUPER = 1 << 16  # records per mode decision; a multiple of _BLOCK


def _kernel_args(fmt: RecordFormat) -> tuple:
    """(ht, t3, v2, wrap, omask, oval, cmask): the format flags, the wrap, and the overflow test
    ``(record & omask) == oval`` with ``record & cmask`` the wrap count (0 meaning 1)."""
    ht = fmt.layout == LAYOUT_HT
    if ht:
        omask, oval = 0xFE000000, 0xFE000000           # special bit + channel 63
        cmask = ((1023 if fmt.is_t3 else 0x1FFFFFF) if fmt.version == 2 else 0)
    elif fmt.is_t3:
        omask, oval, cmask = 0xFFFF0000, 0xF0000000, 0  # channel 15, dtime 0
    else:
        omask, oval, cmask = 0xF000000F, 0xF0000000, 0  # channel 15, marker bits 0
    return (ht, fmt.is_t3, fmt.version == 2, np.int64(fmt.wrap), np.uint32(omask), np.uint32(oval),
            np.uint32(cmask))


@njit
def _classify(r, ht, t3, v2, wrap, base):  # pragma: no cover - jit
    """One record (as int64) -> (kind, channel, time, dtime, overflow correction after it)."""
    if ht:
        ch = (r >> 25) & 63
        field = (r & 1023) if t3 else (r & 0x1FFFFFF)
        if (r >> 31) == 0:
            return 0, ch, base + field, ((r >> 10) & 32767) if t3 else 0, base
        if ch == 63:
            cnt = field
            if cnt == 0 or not v2:
                cnt = 1
            base += wrap * cnt
            return 2, -1, base, 0, base
        if ch == 0:
            if t3:
                return 4, 0, base + field, 0, base
            return 3, -1, base + field, 0, base
        if ch <= 15:
            return 1, ch, base + field, 0, base
        return 4, ch, base + field, 0, base
    ch = r >> 28
    if t3:
        field = r & 0xFFFF
        dt = (r >> 16) & 0xFFF
        mk = dt & 15
        is_ofl = dt == 0
    else:
        field = r & 0x0FFFFFFF
        dt = 0
        mk = field & 15
        is_ofl = mk == 0
    if ch == 15:
        if is_ofl:
            base += wrap
            return 2, -1, base, 0, base
        if mk != 0:
            return 1, mk, base + field, 0, base
        return 4, 15, base + field, 0, base
    ok = (ch >= 1 and ch <= 4) if t3 else (ch <= 4)
    return (0 if ok else 4), ch, base + field, dt, base


@njit
def _scan_nb(recs, omask, oval, cmask):  # pragma: no cover - jit
    """(records that are not overflow records, wraps the overflow records add). Branch-free."""
    ev = 0
    wraps = 0
    for i in range(recs.shape[0]):
        r = recs[i]
        ofl = (r & omask) == oval
        c = np.int64(r & cmask)
        ev += 1 - np.int64(ofl)
        wraps += np.int64(ofl) * (c + np.int64(c == 0))
    return ev, wraps


@njit
def _decode_sparse(recs, ht, t3, v2, wrap, omask, oval, cmask, base, pre, kind, chan, time,
                   dtime):  # pragma: no cover - jit
    """The records (a multiple of _BLOCK) in blocks of 64 -> (base after, events).
    pre: scratch for 65 int64."""
    all1 = ~np.uint64(0)
    ev = 0
    nfull = recs.shape[0] - recs.shape[0] % _BLOCK  # == n; spelt so LLVM sees whole blocks
    for s0 in range(0, nfull, _BLOCK):
        m = np.uint64(0)      # bit k: record s0 + k is not an overflow record
        multi = np.uint32(0)  # an overflow record adding more than one wrap
        for k in range(_BLOCK):  # branch-free: vectorised
            r = recs[s0 + k]
            ofl = (r & omask) == oval
            m |= np.uint64(not ofl) << np.uint64(k)
            multi |= np.uint32(ofl) & np.uint32((r & cmask) > np.uint32(1))
        # all as overflow records first (vectorised), then the other records over them
        if multi != 0:  # wraps up to record k from a prefix sum
            s = np.int64(0)
            for k in range(_BLOCK):
                r = recs[s0 + k]
                c = np.int64(r & cmask)
                s += np.int64((r & omask) == oval) * (c + np.int64(c == 0))
                pre[k + 1] = s
            for k in range(_BLOCK):
                time[s0 + k] = base + wrap * pre[k + 1]
        else:  # one wrap per overflow record: a popcount
            for k in range(_BLOCK):
                upto = ~((all1 << np.uint64(k)) << np.uint64(1))      # bits 0..k
                time[s0 + k] = base + wrap * (k + 1 - np.int64(popcount(m & upto)))
        for k in range(_BLOCK):
            kind[s0 + k] = 2
            chan[s0 + k] = -1
            dtime[s0 + k] = 0
        done = 0
        while m != 0:
            k = np.int64(ctz(m))
            m &= m - np.uint64(1)
            w = pre[k] if multi != 0 else k - done
            k_, c_, t_, d_, _b = _classify(np.int64(recs[s0 + k]), ht, t3, v2, wrap, base + wrap * w)
            kind[s0 + k] = k_
            chan[s0 + k] = c_
            time[s0 + k] = t_
            dtime[s0 + k] = d_
            done += 1
        base += wrap * (pre[_BLOCK] if multi != 0 else _BLOCK - done)
        ev += done
    return base, ev


@njit
def _decode_dense(recs, ht, t3, v2, wrap, base, kind, chan, time, dtime):  # pragma: no cover - jit
    """The records one by one -> (base after, events)."""
    ev = 0
    for i in range(recs.shape[0]):
        k_, c_, t_, d_, base = _classify(np.int64(recs[i]), ht, t3, v2, wrap, base)
        kind[i] = k_
        chan[i] = c_
        time[i] = t_
        dtime[i] = d_
        ev += k_ != 2
    return base, ev


@njit
def _decode_nb(recs, ht, t3, v2, wrap, omask, oval, cmask, base, kind, chan, time,
               dtime):  # pragma: no cover - jit
    """Every record -> kind/chan/time/dtime[i]; returns the overflow correction after them."""
    n = recs.shape[0]
    pre = np.zeros(_BLOCK + 1, np.int64)
    dense = False
    for a in range(0, n, _SUPER):
        b = min(n, a + _SUPER)
        c = a if dense else b - (b - a) % _BLOCK
        base, ev = _decode_sparse(recs[a:c], ht, t3, v2, wrap, omask, oval, cmask, base, pre,
                                  kind[a:c], chan[a:c], time[a:c], dtime[a:c])
        base, ev2 = _decode_dense(recs[c:b], ht, t3, v2, wrap, base, kind[c:b], chan[c:b],
                                  time[c:b], dtime[c:b])
        dense = 2 * (ev + ev2) > b - a
    return base


@njit
def _events_sparse(recs, ht, t3, v2, wrap, omask, oval, cmask, base, pre, kind, chan, time,
                   dtime):  # pragma: no cover - jit
    """The non-overflow records among ``recs`` (a multiple of _BLOCK) -> kind/chan/time/dtime[0..j),
    in blocks of 64; returns (base after, j)."""
    j = 0
    nfull = recs.shape[0] - recs.shape[0] % _BLOCK
    for s0 in range(0, nfull, _BLOCK):
        m = np.uint64(0)
        multi = np.uint32(0)
        for k in range(_BLOCK):
            r = recs[s0 + k]
            ofl = (r & omask) == oval
            m |= np.uint64(not ofl) << np.uint64(k)
            multi |= np.uint32(ofl) & np.uint32((r & cmask) > np.uint32(1))
        if multi != 0:
            s = np.int64(0)
            for k in range(_BLOCK):
                r = recs[s0 + k]
                c = np.int64(r & cmask)
                s += np.int64((r & omask) == oval) * (c + np.int64(c == 0))
                pre[k + 1] = s
        done = 0
        while m != 0:
            k = np.int64(ctz(m))
            m &= m - np.uint64(1)
            w = pre[k] if multi != 0 else k - done
            k_, c_, t_, d_, _b = _classify(np.int64(recs[s0 + k]), ht, t3, v2, wrap, base + wrap * w)
            kind[j] = k_
            chan[j] = c_
            time[j] = t_
            dtime[j] = d_
            j += 1
            done += 1
        base += wrap * (pre[_BLOCK] if multi != 0 else _BLOCK - done)
    return base, j


@njit
def _events_dense(recs, ht, t3, v2, wrap, base, kind, chan, time, dtime):  # pragma: no cover - jit
    """The non-overflow records one by one -> kind/chan/time/dtime[0..j); returns (base, j)."""
    j = 0
    for i in range(recs.shape[0]):
        k_, c_, t_, d_, base = _classify(np.int64(recs[i]), ht, t3, v2, wrap, base)
        if k_ != 2:
            kind[j] = k_
            chan[j] = c_
            time[j] = t_
            dtime[j] = d_
            j += 1
    return base, j


@njit
def _events_nb(recs, ht, t3, v2, wrap, omask, oval, cmask, base, kind, chan, time,
               dtime):  # pragma: no cover - jit
    """The records that are not overflow records -> kind/chan/time/dtime[0..j); returns
    (j, overflow correction after the records)."""
    n = recs.shape[0]
    pre = np.zeros(_BLOCK + 1, np.int64)
    j = 0
    dense = False
    for a in range(0, n, _SUPER):
        b = min(n, a + _SUPER)
        c = a if dense else b - (b - a) % _BLOCK
        base, e1 = _events_sparse(recs[a:c], ht, t3, v2, wrap, omask, oval, cmask, base, pre,
                                  kind[j:], chan[j:], time[j:], dtime[j:])
        j += e1
        base, e2 = _events_dense(recs[c:b], ht, t3, v2, wrap, base, kind[j:], chan[j:], time[j:],
                                 dtime[j:])
        j += e2
        dense = 2 * (e1 + e2) > b - a
    return j, base


@njit
def _summary_sparse(recs, ht, t3, v2, wrap, omask, oval, cmask, base, pre, photons, kinds,
                    mm):  # pragma: no cover - jit
    """Count the records (a multiple of _BLOCK) in blocks of 64; mm: [first photon, last photon,
    last event]. Returns (base after, events)."""
    nfull = recs.shape[0] - recs.shape[0] % _BLOCK
    first = mm[0]
    last = mm[1]
    last_ev = mm[2]
    ev = 0
    for s0 in range(0, nfull, _BLOCK):
        m = np.uint64(0)
        multi = np.uint32(0)
        for k in range(_BLOCK):
            r = recs[s0 + k]
            ofl = (r & omask) == oval
            m |= np.uint64(not ofl) << np.uint64(k)
            multi |= np.uint32(ofl) & np.uint32((r & cmask) > np.uint32(1))
        if multi != 0:
            s = np.int64(0)
            for k in range(_BLOCK):
                r = recs[s0 + k]
                c = np.int64(r & cmask)
                s += np.int64((r & omask) == oval) * (c + np.int64(c == 0))
                pre[k + 1] = s
        done = 0
        while m != 0:
            k = np.int64(ctz(m))
            m &= m - np.uint64(1)
            w = pre[k] if multi != 0 else k - done
            k_, c_, t_, d_, _b = _classify(np.int64(recs[s0 + k]), ht, t3, v2, wrap, base + wrap * w)
            kinds[k_] += 1
            if k_ == 0:
                photons[c_] += 1
                first = min(first, t_)
                last = max(last, t_)
            if k_ == 0 or k_ == 1 or k_ == 3:
                last_ev = max(last_ev, t_)
            done += 1
        kinds[2] += _BLOCK - done
        base += wrap * (pre[_BLOCK] if multi != 0 else _BLOCK - done)
        ev += done
    mm[0] = first
    mm[1] = last
    mm[2] = last_ev
    return base, ev


@njit
def _summary_dense(recs, ht, t3, v2, wrap, base, photons, kinds, mm):  # pragma: no cover - jit
    """Count the records one by one; returns (base after, events)."""
    first = mm[0]
    last = mm[1]
    last_ev = mm[2]
    ev = 0
    for i in range(recs.shape[0]):
        k_, c_, t_, d_, base = _classify(np.int64(recs[i]), ht, t3, v2, wrap, base)
        kinds[k_] += 1
        ev += k_ != 2
        if k_ == 0:
            photons[c_] += 1
            first = min(first, t_)
            last = max(last, t_)
        if k_ == 0 or k_ == 1 or k_ == 3:
            last_ev = max(last_ev, t_)
    mm[0] = first
    mm[1] = last
    mm[2] = last_ev
    return base, ev


@njit
def _summary_nb(recs, ht, t3, v2, wrap, omask, oval, cmask, st, photons,
                kinds):  # pragma: no cover - jit
    """Counts without per-record output. st: [base, first photon, last photon, last event]."""
    n = recs.shape[0]
    base = st[0]
    mm = st[1:4].copy()
    pre = np.zeros(_BLOCK + 1, np.int64)
    dense = False
    for a in range(0, n, _SUPER):
        b = min(n, a + _SUPER)
        c = a if dense else b - (b - a) % _BLOCK
        base, e1 = _summary_sparse(recs[a:c], ht, t3, v2, wrap, omask, oval, cmask, base, pre,
                                   photons, kinds, mm)
        base, e2 = _summary_dense(recs[c:b], ht, t3, v2, wrap, base, photons, kinds, mm)
        dense = 2 * (e1 + e2) > b - a
    st[0] = base
    st[1:4] = mm


def _decode_np(fmt: RecordFormat, recs: np.ndarray, base: int) -> tuple[DecodedRecords, int]:
    """Pure-numpy twin of the numba kernels."""
    r = recs.astype(np.int64)
    n = r.shape[0]
    t3 = fmt.is_t3
    if fmt.layout == LAYOUT_HT:
        special = (r >> 31) != 0
        ch = (r >> 25) & 63
        field = r & (1023 if t3 else 0x1FFFFFF)
        dt = ((r >> 10) & 32767) if t3 else np.zeros(n, np.int64)
        ofl = special & (ch == 63)
        cnt = np.where((field == 0) | (fmt.version == 1), 1, field)
        kind = np.where(special, np.where(ch <= 15, MARKER, INVALID), PHOTON)
        chan = ch.copy()
        sync0 = special & (ch == 0)
        if t3:
            kind[sync0] = INVALID
        else:
            kind[sync0] = SYNC
            chan[sync0] = -1
    else:
        ch = r >> 28
        if t3:
            field = r & 0xFFFF
            dt = (r >> 16) & 0xFFF
        else:
            field = r & 0x0FFFFFFF
            dt = np.zeros(n, np.int64)
        special = ch == 15
        mk = (dt & 15) if t3 else (field & 15)
        ofl = special & ((dt == 0) if t3 else (mk == 0))
        cnt = np.ones(n, np.int64)
        ok = ((ch >= 1) & (ch <= 4)) if t3 else (ch <= 4)
        kind = np.where(special, np.where(mk != 0, MARKER, INVALID), np.where(ok, PHOTON, INVALID))
        chan = np.where(special, np.where(mk != 0, mk, 15), ch)
    kind = np.where(ofl, OVERFLOW, kind).astype(np.uint8)
    chan = np.where(ofl, -1, chan).astype(np.int8)
    with np.errstate(over="ignore"):
        steps = np.where(ofl, cnt, 0) * np.int64(fmt.wrap)
        after = np.cumsum(steps, dtype=np.int64) + np.int64(base)
        time = np.where(ofl, after, after + field)
    dtime = np.where(special, 0, dt).astype(np.uint16)
    new_base = int(after[-1]) if n else int(base)
    return DecodedRecords(fmt, kind, chan, time.astype(np.int64), dtime), new_base


#: records per thread below which a decode stays on one thread
PARALLEL_MIN = 1 << 21
#: in automatic mode (``use_numba=None``) the first this many records of a process are decoded
#: with numpy: loading even cached numba kernels costs ~0.4 s (numba's target initialisation),
#: more than numpy needs for them, so small files are quick from the command line
NUMPY_WARMUP = 1 << 18
_warmup_left = NUMPY_WARMUP


def _use_numba(use_numba: bool | None, n: int) -> bool:
    """want_numba, except that automatic mode spends the numpy warm-up budget first (results are
    identical either way)."""
    global _warmup_left
    if not want_numba(use_numba):
        return False
    if use_numba is None and _warmup_left > 0 and n <= _warmup_left:
        _warmup_left -= n
        return False
    _warmup_left = 0
    return True


_POOL: tuple[int, int, ThreadPoolExecutor] | None = None  # (pid, workers, pool)
_POOL_LOCK = threading.Lock()


def _pool(workers: int) -> ThreadPoolExecutor:
    """The decoder thread pool (re-created after a fork or when more workers are wanted)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL[0] != os.getpid() or _POOL[1] < workers:
            if _POOL is not None and _POOL[0] == os.getpid():
                _POOL[2].shutdown(wait=False)
            _POOL = (os.getpid(), workers, ThreadPoolExecutor(workers, thread_name_prefix="labctl-decode"))
        return _POOL[2]


def _wrap64(x: int) -> int:
    """x as int64 arithmetic would have it (two's complement wrap-around)."""
    return (x + 2 ** 63) % 2 ** 64 - 2 ** 63


def _arrays(d: DecodedRecords, lo: int = 0, hi: int | None = None) -> tuple[np.ndarray, ...]:
    return d.kind[lo:hi], d.channel[lo:hi], d.time[lo:hi], d.dtime[lo:hi]


def _view(d: DecodedRecords, m: int) -> DecodedRecords:
    return DecodedRecords(d.fmt, *_arrays(d, 0, m))


def _shrink(d: DecodedRecords, m: int) -> DecodedRecords:
    """Cut arrays this module allocated to their first m entries; realloc in place (no copy)
    where the allocator allows, else a copy."""
    if len(d) == m:
        return d
    arrs = []
    for a in (d.kind, d.channel, d.time, d.dtime):  # the arrays themselves, not views
        try:
            a.resize(m, refcheck=False)
        except (ValueError, MemoryError):  # pragma: no cover - numpy declined
            a = a[:m].copy()
        arrs.append(a)
    return DecodedRecords(d.fmt, *arrs)


def _alloc_events(fmt: RecordFormat, recs: np.ndarray, upper: int, args: tuple) -> DecodedRecords:
    """Output for the events of ``recs``: ``upper`` entries (untouched pages cost nothing),
    or, when that much address space is refused, exactly as many as a scan counts."""
    try:
        return _empty(fmt, upper)
    except MemoryError:
        return _empty(fmt, int(_scan_nb(recs, *args[4:])[0]))


def _threads_for(n: int, threads: int | None) -> int:
    return max(1, min(decode_threads(threads), n // PARALLEL_MIN))


def _decode_parallel(fmt: RecordFormat, recs: np.ndarray, base: int, overflows: bool,
                     out: DecodedRecords | None, nt: int, args: tuple) -> tuple[DecodedRecords, int]:
    """Block-parallel decode over ``nt`` threads; identical to the serial kernels.

    Pass 1 (branch-free, vectorised) scans every part but the last for its number of
    non-overflow records and of wraps, in ``nt`` pieces each; exclusive prefix sums give each
    part its overflow correction and its output offset; pass 2 decodes the parts in parallel
    into their slices of the output.
    """
    n = recs.shape[0]
    wrap, omask, oval, cmask = int(args[3]), args[4], args[5], args[6]
    edges = [(n * p // nt) // _BLOCK * _BLOCK for p in range(nt)] + [n]
    pool = _pool(nt)
    pieces = []
    for p in range(nt - 1):
        a, b = edges[p], edges[p + 1]
        cut = [a + (b - a) * q // nt for q in range(nt)] + [b]
        pieces += [(p, cut[q], cut[q + 1]) for q in range(nt)]
    scans = list(pool.map(lambda t: _scan_nb(recs[t[1]:t[2]], omask, oval, cmask), pieces))
    events = [0] * nt
    wraps = [0] * nt
    for (p, _a, _b), (e, w) in zip(pieces, scans):
        events[p] += int(e)
        wraps[p] += int(w)
    bases = [int(base)]
    offs = [0]
    for p in range(nt - 1):
        bases.append(_wrap64(bases[-1] + wrap * wraps[p]))
        offs.append(offs[-1] + (edges[p + 1] - edges[p] if overflows else events[p]))
    size = offs[-1] + (n - edges[-2])  # exact with overflow records, else an upper bound
    if out is not None:
        dest = out
    else:
        try:
            dest = _empty(fmt, size)
        except MemoryError:  # count the last part's events too
            size = offs[-1] + int(_scan_nb(recs[edges[-2]:], omask, oval, cmask)[0])
            dest = _empty(fmt, size)
    tops = offs[1:] + [size]

    def work(p: int) -> tuple[int, int]:
        r = recs[edges[p]:edges[p + 1]]
        o = _arrays(dest, offs[p], tops[p])
        if overflows:
            return r.shape[0], int(_decode_nb(r, *args, np.int64(bases[p]), *o))
        j, b = _events_nb(r, *args, np.int64(bases[p]), *o)
        return int(j), int(b)

    done = list(pool.map(work, range(nt)))
    for p in range(nt - 1):  # the scans and the decoders agree by construction
        assert done[p] == (offs[p + 1] - offs[p], bases[p + 1]), "parallel decode out of step"
    m = offs[-1] + done[-1][0]
    res = _view(dest, m) if out is not None else _shrink(dest, m)
    return res, done[-1][1]


def decode_chunk(fmt: RecordFormat | int | str, recs: np.ndarray, base: int = 0,
                 use_numba: bool | None = None, *, overflows: bool = True,
                 out: DecodedRecords | None = None,
                 threads: int | None = None) -> tuple[DecodedRecords, int]:
    """Decode one chunk of uint32 records starting from overflow correction ``base``.

    Returns the decoded records and the overflow correction after the chunk (same units as
    ``time``), to pass as ``base`` for the next chunk.

    ``overflows=False`` leaves the overflow records out of the output (their corrections are
    still applied): one entry per photon, marker, sync or invalid record, as tttrlib and
    phconvert return them. ``out``: decode into these arrays (from :meth:`DecodedRecords.empty`,
    at least ``len(recs)`` entries) instead of new ones, and return views of them — for
    streaming loops that reuse one buffer. ``threads``: decode on up to this many threads, for chunks
    of at least ``PARALLEL_MIN`` records per thread (default: ``LABCTL_THREADS`` — a number or
    ``auto`` — else 1); the result does not depend on it.
    """
    fmt = record_format(fmt)
    recs = as_records(recs)
    n = recs.shape[0]
    if out is not None and len(out) < n:
        raise ValueError(f"out holds {len(out)} entries, the chunk has {n} records")
    if not _use_numba(use_numba, n):
        d, new_base = _decode_np(fmt, recs, base)
        if not overflows:
            keep = d.kind != OVERFLOW
            d = DecodedRecords(fmt, *(a[keep] for a in _arrays(d)))
        if out is not None:
            for a, b in zip(_arrays(out), _arrays(d)):
                a[:len(d)] = b
            d = _view(out, len(d))
        return d, new_base
    args = _kernel_args(fmt)
    nt = _threads_for(n, threads)
    if nt > 1:
        return _decode_parallel(fmt, recs, int(base), overflows, out, nt, args)
    if overflows:
        dest = out if out is not None else _empty(fmt, n)
        new_base = _decode_nb(recs, *args, np.int64(base), *_arrays(dest))
        return (_view(dest, n) if out is not None else dest), int(new_base)
    dest = out if out is not None else _alloc_events(fmt, recs, n, args)
    m, new_base = _events_nb(recs, *args, np.int64(base), *_arrays(dest))
    return (_view(dest, int(m)) if out is not None else _shrink(dest, int(m))), int(new_base)


class Summary:
    """Running counts over chunks of records, without per-record output (for file summaries).

    Attributes: ``photons`` (int64[64], per channel), ``kinds`` (int64[5], records per kind),
    ``base`` (overflow correction so far), ``first``/``last`` (earliest/latest photon time or
    None), ``last_event`` (latest photon, marker or sync time; -2**63 if none). Times in the format's
    units (T2: global resolution; T3: syncs).
    """

    _MAX = np.iinfo(np.int64).max
    _MIN = np.iinfo(np.int64).min

    def __init__(self, fmt: RecordFormat | int | str, use_numba: bool | None = None) -> None:
        self.fmt = record_format(fmt)
        self.use_numba = use_numba
        self.photons = np.zeros(64, np.int64)
        self.kinds = np.zeros(5, np.int64)
        self._st = np.array([0, self._MAX, self._MIN, self._MIN], np.int64)

    def feed(self, records: object) -> None:
        recs = as_records(records)
        f = self.fmt
        if _use_numba(self.use_numba, recs.shape[0]):
            _summary_nb(recs, *_kernel_args(f), self._st, self.photons, self.kinds)
            return
        d, base = _decode_np(f, recs, int(self._st[0]))
        self._st[0] = base
        self.kinds += np.bincount(d.kind, minlength=5)[:5]
        ph = d.kind == PHOTON
        if ph.any():
            self.photons += np.bincount(d.channel[ph].astype(np.int64), minlength=64)[:64]
            self._st[1] = min(int(self._st[1]), int(d.time[ph].min()))
            self._st[2] = max(int(self._st[2]), int(d.time[ph].max()))
        ev = ph | (d.kind == MARKER) | (d.kind == SYNC)
        if ev.any():
            self._st[3] = max(int(self._st[3]), int(d.time[ev].max()))

    @property
    def base(self) -> int:
        return int(self._st[0])

    @property
    def first(self) -> int | None:
        return int(self._st[1]) if self.kinds[PHOTON] else None

    @property
    def last(self) -> int | None:
        return int(self._st[2]) if self.kinds[PHOTON] else None

    @property
    def last_event(self) -> int:
        return int(self._st[3])


def decode(fmt: RecordFormat | int | str, data: object, *, base: int = 0,
           use_numba: bool | None = None, overflows: bool = True,
           threads: int | None = None) -> DecodedRecords:
    """Decode a whole buffer of records (bytes-like or uint32 array) in one piece.

    ``overflows=False``: without the overflow records (see :func:`decode_chunk`, also for
    ``threads``)."""
    f = record_format(fmt)
    return decode_chunk(f, as_records(data), base, use_numba, overflows=overflows, threads=threads)[0]


class StreamDecoder:
    """Decode records arriving in chunks of any size; the overflow correction and any partial
    record at the end of a chunk carry over, so the result equals decoding in one piece."""

    def __init__(self, fmt: RecordFormat | int | str, *, base: int = 0,
                 use_numba: bool | None = None, overflows: bool = True,
                 threads: int | None = None) -> None:
        self.fmt = record_format(fmt)
        self.base = int(base)  #: overflow correction so far (time units of the format)
        self.records = 0       #: records decoded so far
        self.use_numba = use_numba
        self.overflows = overflows  #: False: overflow records are left out of the output
        self.threads = threads
        self._tail = b""

    @property
    def pending_bytes(self) -> int:
        """Bytes of an incomplete record held back for the next chunk."""
        return len(self._tail)

    def feed(self, data: object) -> DecodedRecords:
        """Decode the next chunk: bytes-like (any length) or a uint32 array."""
        if isinstance(data, np.ndarray) and not self._tail:
            recs = as_records(data)
        else:
            raw = self._tail + (data.tobytes() if isinstance(data, np.ndarray)
                                else bytes(memoryview(data).cast("B")))  # type: ignore[arg-type]
            cut = len(raw) - len(raw) % 4
            self._tail = raw[cut:]
            recs = np.frombuffer(raw[:cut], dtype="<u4").astype(np.uint32, copy=False)
        out, self.base = decode_chunk(self.fmt, recs, self.base, self.use_numba,
                                      overflows=self.overflows, threads=self.threads)
        self.records += recs.shape[0]
        return out

    def close(self, file: str | None = None) -> None:
        """Finish; an incomplete record left over is an InputError (truncated data)."""
        if self._tail:
            raise InputError(f"data ends inside a record ({len(self._tail)} of 4 bytes)",
                             file=file, fix="the file or stream is truncated; record it again")


# --------------------------------------------------------------------------------------------
# encoders
# --------------------------------------------------------------------------------------------

def _overflow_word(fmt: RecordFormat, count: np.ndarray) -> np.ndarray:
    if fmt.layout == LAYOUT_PT:
        return np.full(count.shape, 0xF0000000, np.uint32)
    return (np.uint32(0xFE000000) | count.astype(np.uint32)).astype(np.uint32)


def encode(fmt: RecordFormat | int | str, time: Iterable[int] | np.ndarray,
           channel: Iterable[int] | np.ndarray | int = 0, *,
           dtime: Iterable[int] | np.ndarray | int | None = None,
           kind: Iterable[int] | np.ndarray | int | None = None,
           base: int = 0, end: int | None = None,
           max_overflow_count: int | None = None) -> np.ndarray:
    """Encode events into records, inserting overflow records where the time field wraps.

    ``time``: absolute, non-decreasing (T2: global-resolution units; T3: sync number), ``>= base``.
    ``channel``: photon channel field (see the module docstring), or marker bits for markers
    (ignored for sync records). ``dtime``: T3 micro-time in resolution units. ``kind``: PHOTON
    (default), MARKER, or SYNC (HT T2 only). ``base``: overflow correction already applied by
    earlier records (a multiple of the wrap). ``end``: if given, trailing overflow records make
    the decoder's overflow correction reach ``(end // wrap) * wrap``, so the records cover the
    time up to ``end``. ``max_overflow_count``: most wraps per overflow record (default: what
    the format allows; 1 mimics hardware that writes one overflow record per wrap).

    Raises ValueError for events the format cannot hold.
    """
    f = record_format(fmt)
    t = np.asarray(time, dtype=np.int64).reshape(-1)
    n = t.shape[0]
    ch = np.broadcast_to(np.asarray(channel, dtype=np.int64), (n,))
    kd = np.broadcast_to(np.asarray(PHOTON if kind is None else kind, dtype=np.int64), (n,))
    dt = np.broadcast_to(np.asarray(0 if dtime is None else dtime, dtype=np.int64), (n,))
    wrap = f.wrap
    if base % wrap:
        raise ValueError(f"base {base} is not a multiple of the wrap {wrap}")
    if n and (t[0] < base or np.any(np.diff(t) < 0)):
        raise ValueError("event times must be non-decreasing and >= base")
    maxc = f.max_overflow_count if max_overflow_count is None else max(1, min(int(max_overflow_count),
                                                                             f.max_overflow_count))
    _check_events(f, kd, ch, dt)

    q = t // wrap
    qend = [end // wrap] if end is not None else []
    qall = np.concatenate([[base // wrap], q, qend]).astype(np.int64)
    gaps = np.maximum(np.diff(qall), 0)          # wraps before each event (+ trailing)
    k = -(-gaps // maxc)                          # overflow records per gap
    csk = np.cumsum(k)
    total = n + (int(csk[-1]) if csk.size else 0)
    out = np.empty(total, np.uint32)
    pos = np.arange(n, dtype=np.int64) + csk[:n]  # where the events go
    if total > n:  # every overflow record carries maxc wraps, except the last of each gap
        out.fill(_overflow_word(f, np.array([maxc]))[0])
        gap_end = np.concatenate([pos, [total]]) if end is not None else pos
        has = gaps > 0
        out[gap_end[has] - 1] = _overflow_word(f, gaps[has] - (k[has] - 1) * maxc)
    out[pos] = _event_words(f, kd, ch, dt, t - q * wrap)
    return out


def _check_events(f: RecordFormat, kd: np.ndarray, ch: np.ndarray, dt: np.ndarray) -> None:
    allowed = {PHOTON, MARKER} | ({SYNC} if (f.layout == LAYOUT_HT and not f.is_t3) else set())
    bad = ~np.isin(kd, list(allowed))
    if bad.any():
        raise ValueError(f"{f.name} cannot hold records of kind {int(kd[bad][0])}")
    pc = f.photon_channels()
    ph = kd == PHOTON
    if np.any(ph & ((ch < pc.start) | (ch >= pc.stop))):
        raise ValueError(f"{f.name}: photon channel outside {pc.start}..{pc.stop - 1}")
    mk = kd == MARKER
    if np.any(mk & ((ch < 1) | (ch > 15))):
        raise ValueError(f"{f.name}: marker bits must be 1..15")
    if f.is_t3 and np.any(ph & ((dt < 0) | (dt >= (1 << f.dtime_bits)))):
        raise ValueError(f"{f.name}: dtime outside 0..{(1 << f.dtime_bits) - 1}")


def _event_words(f: RecordFormat, kd: np.ndarray, ch: np.ndarray, dt: np.ndarray,
                 field: np.ndarray) -> np.ndarray:
    if f.layout == LAYOUT_HT:
        special = (kd != PHOTON).astype(np.int64)
        chf = np.where(kd == SYNC, 0, ch)
        dtf = np.where(kd == PHOTON, dt, 0) if f.is_t3 else 0
        w = (special << 31) | (chf << 25) | field
        if f.is_t3:
            w = w | (dtf << 10)
    elif f.is_t3:
        mk = kd == MARKER
        w = np.where(mk, (15 << 28) | (ch << 16) | field, (ch << 28) | (dt << 16) | field)
    else:
        mk = kd == MARKER
        w = np.where(mk, (15 << 28) | (field & ~np.int64(15)) | ch, (ch << 28) | field)
    return np.asarray(w, dtype=np.int64).astype(np.uint32)


class StreamEncoder:
    """Encode events in pieces (e.g. block by block from a simulation); carries the overflow
    correction so the concatenated output equals one :func:`encode` call."""

    def __init__(self, fmt: RecordFormat | int | str, *, max_overflow_count: int | None = None) -> None:
        self.fmt = record_format(fmt)
        self.base = 0
        self.max_overflow_count = max_overflow_count

    def encode(self, time: np.ndarray, channel: np.ndarray | int = 0, *,
               dtime: np.ndarray | int | None = None, kind: np.ndarray | int | None = None,
               end: int | None = None) -> np.ndarray:
        t = np.asarray(time, dtype=np.int64).reshape(-1)
        out = encode(self.fmt, t, channel, dtime=dtime, kind=kind, base=self.base, end=end,
                     max_overflow_count=self.max_overflow_count)
        last = [self.base // self.fmt.wrap]
        if t.size:
            last.append(int(t[-1]) // self.fmt.wrap)
        if end is not None:
            last.append(int(end) // self.fmt.wrap)
        self.base = max(last) * self.fmt.wrap
        return out
