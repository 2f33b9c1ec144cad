"""Record sources for the mock TimeHarp 260 library: where simulated time tags come from.

A **record source** is any object with ``next_records(max_records) -> np.ndarray`` (uint32 TTTR
records in the TimeHarp 260 format, at most ``max_records``). The mock library
(:mod:`sim_instruments.th260_mock`) pulls from it whenever the driver calls ``TH260_ReadFiFo``.
Optional members a source may have (the mock uses them when present):

==========================  ======================================================================
``start(settings: dict)``   called by ``TH260_StartMeas`` with the device settings (``mode``,
                            ``resolution_s``, ``sync_divider``, ``offset_s``, ``sync_offset_s``,
                            ``channel_offsets_s``, ``enabled``, ``acquisition_time_s``, ``model``);
                            a new measurement starts at time 0
``time_s``                  simulated time (s) up to which every record has been delivered; lets
                            time advance through stretches without records
``sync_period_s``           T3 time per ``nsync`` step (sync period times the divider)
``time_unit_s``             T2 time-tag unit (else the device resolution is used)
``sync_rate_hz``            sync input rate for ``TH260_GetSyncRate``
``count_rates_hz()``        per-input-channel rates for ``TH260_GetCountRate``
==========================  ======================================================================

The digital twin (``sim_instruments/twin``) plugs in the same way: give the mock an object with
``next_records`` (and ideally ``start`` and ``time_s``).

Shipped here: the record codecs (TimeHarp 260 = HydraHarp V2 layout, checked against PicoQuant's
``PTU/Python/Read_PTU.py`` in ``PicoQuant/PicoQuant-Time-Tagged-File-Format-Demos``, functions
``readHT3(version=2)`` / ``readHT2(version=2)``), :class:`SyntheticSource` (a pulsed experiment,
seeded) and :class:`ReplaySource` (raw record arrays, raw ``.out``/``.bin`` dumps as written by
PicoQuant's ``tttrmode`` demo, ``.npy``, and ``.ptu`` through :mod:`labctl.tags` when present).

Record layout (32 bits, little-endian words)::

    T3:  special(31) | channel(30..25, 6 bits) | dtime(24..10, 15 bits) | nsync(9..0, 10 bits)
    T2:  special(31) | channel(30..25, 6 bits) | timetag(24..0, 25 bits)

    special=1, channel=63: overflow; the nsync (T3) / timetag (T2) field holds the number of
                           wraps (0 means 1, V2 format); T3 wrap = 1024 syncs, T2 wrap = 2**25 units
    special=1, channel 1..15: marker (bit mask of the four marker inputs)
    special=1, channel 0 (T2 only): sync event
    special=0: photon on input channel ``channel`` (0-based)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Protocol, runtime_checkable

import numpy as np

T3_WRAP = 1024                 #: nsync steps per T3 overflow
T2_WRAP = 1 << 25              #: time-tag units per T2 overflow
OVERFLOW_CHANNEL = 63
T3_MAX_OVERFLOW_COUNT = (1 << 10) - 1
T2_MAX_OVERFLOW_COUNT = (1 << 25) - 1
DTIME_MAX = (1 << 15) - 1
NSYNC_MASK = (1 << 10) - 1
TIMETAG_MASK = (1 << 25) - 1
CHANNEL_MASK = 0x3F


@runtime_checkable
class RecordSource(Protocol):
    """What the mock library needs from a source of simulated TTTR records."""

    def next_records(self, max_records: int) -> np.ndarray:
        """Up to ``max_records`` uint32 records, in time order (may be empty)."""


# ---------------------------------------------------------------------------------------------
# codecs
# ---------------------------------------------------------------------------------------------

def _u32(a: Any) -> np.ndarray:
    return np.asarray(a, dtype=np.int64)


def encode_t3(special: Any, channel: Any, dtime: Any, nsync: Any) -> np.ndarray:
    """T3 record words from the four fields (arrays or scalars). Raises ValueError if a field is
    out of range (a bug in the caller, not a data condition)."""
    s, c, d, n = (_u32(x) for x in (special, channel, dtime, nsync))
    for name, v, hi in (("special", s, 1), ("channel", c, CHANNEL_MASK), ("dtime", d, DTIME_MAX),
                        ("nsync", n, NSYNC_MASK)):
        if v.size and (v.min() < 0 or v.max() > hi):
            raise ValueError(f"T3 {name} out of range 0..{hi}")
    return ((s << 31) | (c << 25) | (d << 10) | n).astype(np.uint32)


def encode_t2(special: Any, channel: Any, timetag: Any) -> np.ndarray:
    """T2 record words from the three fields."""
    s, c, t = (_u32(x) for x in (special, channel, timetag))
    for name, v, hi in (("special", s, 1), ("channel", c, CHANNEL_MASK), ("timetag", t, TIMETAG_MASK)):
        if v.size and (v.min() < 0 or v.max() > hi):
            raise ValueError(f"T2 {name} out of range 0..{hi}")
    return ((s << 31) | (c << 25) | t).astype(np.uint32)


def overflow_records(wraps: int, mode: str = "T3") -> np.ndarray:
    """Overflow records carrying ``wraps`` wraps in total (split so each holds at most the field's
    maximum; never uses the ambiguous count 0)."""
    cap = T3_MAX_OVERFLOW_COUNT if mode == "T3" else T2_MAX_OVERFLOW_COUNT
    wraps = int(wraps)
    if wraps <= 0:
        return np.empty(0, np.uint32)
    full, rest = divmod(wraps, cap)
    counts = np.array([cap] * full + ([rest] if rest else []), dtype=np.int64)
    return ((1 << 31) | (OVERFLOW_CHANNEL << 25) | counts).astype(np.uint32)


@dataclass
class Decoded:
    """Fields of a run of records plus the absolute time base.

    ``abs_time``: T3 -> absolute sync number (overflows x 1024 + nsync); T2 -> absolute time tag
    (overflows x 2**25 + timetag). For overflow records it is the time of the wrap.
    """

    special: np.ndarray
    channel: np.ndarray
    field: np.ndarray        #: nsync (T3) or timetag (T2)
    dtime: np.ndarray        #: T3 only (zeros in T2)
    abs_time: np.ndarray
    overflow: np.ndarray     #: bool mask of overflow records
    wraps: int               #: total wraps after this run (pass to the next call)

    @property
    def photon(self) -> np.ndarray:
        return self.special == 0


def decode(records: np.ndarray, mode: str = "T3", wraps: int = 0) -> Decoded:
    """Decode TimeHarp 260 records (V2 overflow semantics), continuing from ``wraps`` wraps."""
    r = np.asarray(records, dtype=np.uint32).astype(np.int64)
    special = (r >> 31) & 1
    channel = (r >> 25) & CHANNEL_MASK
    if mode == "T3":
        fld = r & NSYNC_MASK
        dtime = (r >> 10) & DTIME_MAX
        wrap = T3_WRAP
    else:
        fld = r & TIMETAG_MASK
        dtime = np.zeros_like(r)
        wrap = T2_WRAP
    ovf = (special == 1) & (channel == OVERFLOW_CHANNEL)
    step = np.where(ovf, np.where(fld == 0, 1, fld), 0)
    cum = np.cumsum(step) + int(wraps)
    abs_time = cum * wrap + np.where(ovf, 0, fld)
    total = int(cum[-1]) if cum.size else int(wraps)
    return Decoded(special, channel, fld, dtime, abs_time, ovf, total)


def events_to_t3(sync: np.ndarray, channel: np.ndarray, dtime: np.ndarray,
                 wraps_emitted: int) -> tuple[np.ndarray, int]:
    """Encode photon events (sorted by absolute sync number) as T3 records with the overflow
    records they need inserted before them. Returns (records, wraps emitted after them)."""
    sync = np.asarray(sync, np.int64)
    n = sync.size
    if n == 0:
        return np.empty(0, np.uint32), wraps_emitted
    blocks = sync // T3_WRAP
    prev = np.empty(n, np.int64)
    prev[0] = wraps_emitted
    prev[1:] = blocks[:-1]
    delta = blocks - prev
    if delta.min() < 0:
        raise ValueError("events are not sorted by sync number (or precede emitted overflows)")
    nov = (delta + T3_MAX_OVERFLOW_COUNT - 1) // T3_MAX_OVERFLOW_COUNT
    pos = np.arange(n) + np.cumsum(nov)
    out = np.empty(n + int(nov.sum()), np.uint32)
    out[pos] = encode_t3(0, channel, dtime, sync % T3_WRAP)
    if nov.any():
        # overflow records: event i is preceded by nov[i] records carrying delta[i] wraps
        owner = np.repeat(np.arange(n), nov)
        k = np.arange(owner.size) - np.repeat(np.cumsum(nov) - nov, nov)   # index within group
        counts = np.minimum(delta[owner] - k * T3_MAX_OVERFLOW_COUNT, T3_MAX_OVERFLOW_COUNT)
        mask = np.ones(out.size, bool)
        mask[pos] = False
        out[mask] = ((1 << 31) | (OVERFLOW_CHANNEL << 25) | counts).astype(np.uint32)
    return out, int(blocks[-1])


def events_to_t2(time: np.ndarray, channel: np.ndarray, special: np.ndarray,
                 wraps_emitted: int) -> tuple[np.ndarray, int]:
    """Encode T2 events (absolute time tags, sorted) with their overflow records inserted."""
    time = np.asarray(time, np.int64)
    n = time.size
    if n == 0:
        return np.empty(0, np.uint32), wraps_emitted
    blocks = time // T2_WRAP
    prev = np.empty(n, np.int64)
    prev[0] = wraps_emitted
    prev[1:] = blocks[:-1]
    delta = blocks - prev
    if delta.min() < 0:
        raise ValueError("events are not sorted by time")
    nov = (delta + T2_MAX_OVERFLOW_COUNT - 1) // T2_MAX_OVERFLOW_COUNT
    pos = np.arange(n) + np.cumsum(nov)
    out = np.empty(n + int(nov.sum()), np.uint32)
    out[pos] = encode_t2(special, channel, time % T2_WRAP)
    if nov.any():
        owner = np.repeat(np.arange(n), nov)
        k = np.arange(owner.size) - np.repeat(np.cumsum(nov) - nov, nov)
        counts = np.minimum(delta[owner] - k * T2_MAX_OVERFLOW_COUNT, T2_MAX_OVERFLOW_COUNT)
        mask = np.ones(out.size, bool)
        mask[pos] = False
        out[mask] = ((1 << 31) | (OVERFLOW_CHANNEL << 25) | counts).astype(np.uint32)
    return out, int(blocks[-1])


# ---------------------------------------------------------------------------------------------
# synthetic pulsed experiment
# ---------------------------------------------------------------------------------------------

def _seconds(x: Any, where: str) -> float:
    if isinstance(x, str):
        from labctl.units import parse_as

        return parse_as(x, "s", where=where)
    return float(x)


@dataclass
class Window:
    """At most one click per sync period, with ``probability``, uniform in [start_s, stop_s)
    after the sync (laser pulse) edge."""

    start_s: float
    stop_s: float
    probability: float

    def __post_init__(self) -> None:
        self.start_s = _seconds(self.start_s, "window start")
        self.stop_s = _seconds(self.stop_s, "window stop")
        self.probability = float(self.probability)
        if not (0.0 <= self.probability <= 1.0):
            raise ValueError(f"click probability {self.probability} is not within 0..1")
        if not (0.0 <= self.start_s < self.stop_s):
            raise ValueError(f"window {self.start_s}..{self.stop_s} s is empty or negative")


@dataclass
class ChannelModel:
    """One detector input: click windows plus dark counts (Poisson, uniform over the period)."""

    channel: int
    windows: list[Window] = field(default_factory=list)
    dark_rate_hz: float = 0.0

    @classmethod
    def from_spec(cls, spec: "ChannelModel | dict") -> "ChannelModel":
        """From a mapping as written in a station's ``sim: options`` (windows as
        ``[start, stop, probability]`` with times as numbers in s or strings like ``"10 ns"``)."""
        if isinstance(spec, ChannelModel):
            return spec
        wins = [w if isinstance(w, Window) else (Window(**w) if isinstance(w, dict) else Window(*w))
                for w in spec.get("windows", [])]
        return cls(int(spec["channel"]), wins, float(spec.get("dark_rate_hz", 0.0)))


def default_channels() -> list[ChannelModel]:
    """Two detectors, a herald-like window at 10–30 ns (p = 1 %) and a read-like window at
    200–220 ns (p = 0.5 %), 100 counts/s dark rate each."""
    return [ChannelModel(ch, [Window(10e-9, 30e-9, 0.01), Window(200e-9, 220e-9, 0.005)], 100.0)
            for ch in (0, 1)]


class SyntheticSource:
    """T3 (or T2) records of a pulsed experiment, reproducible from ``seed``.

    The sync input sees the laser pulses at ``sync_rate_hz`` (e.g. 20 kHz: one 50 µs trial per
    sync). Each detector channel clicks with a given probability per sync inside its windows, plus
    dark counts. The device settings passed to :meth:`start` shape the records as the hardware
    would: the sync divider (the micro-time then spans ``divider`` laser periods), the resolution
    (``dtime`` bin), the T3 offset, channel offsets, disabled channels. Events whose micro-time
    falls outside the 15-bit ``dtime`` range are not recorded (counted in ``out_of_range``).

    Overflow records follow the V2 format: wraps are accumulated and written (counts 1..1023)
    just before the next event, as the hardware does; decoders recover the absolute sync number.

    ``keep_truth=True`` stores every generated event (absolute sync or time tag, channel, dtime)
    in ``truth`` for tests.
    """

    mode: str

    def __init__(self, *, sync_rate_hz: float = 20e3, channels: Iterable[ChannelModel | dict] | None = None,
                 mode: str = "T3", resolution_s: float = 25e-12, sync_divider: int = 1,
                 seed: int | None = None, rng: np.random.Generator | None = None,
                 batch_syncs: int = 4096, max_syncs_per_call: int = 1 << 17,
                 max_time_s: float | None = None, keep_truth: bool = False) -> None:
        if sync_rate_hz <= 0:
            raise ValueError("sync_rate_hz must be positive")
        self.sync_rate_hz = float(sync_rate_hz)
        self.channels = [ChannelModel.from_spec(c) for c in (channels if channels is not None else default_channels())]
        self.rng = rng if rng is not None else np.random.default_rng(seed)
        self.batch_syncs = int(batch_syncs)
        self.max_syncs_per_call = int(max_syncs_per_call)
        self.max_time_s = max_time_s
        self.keep_truth = keep_truth
        self.settings: dict[str, Any] = {"mode": mode, "resolution_s": resolution_s,
                                         "sync_divider": int(sync_divider), "offset_s": 0.0,
                                         "sync_offset_s": 0.0, "channel_offsets_s": {}, "enabled": {}}
        self._reset()

    # -- configuration --------------------------------------------------------------------------
    def start(self, settings: dict[str, Any]) -> None:
        """A new measurement with the device's settings (called by the mock's StartMeas)."""
        for k in ("mode", "resolution_s", "sync_divider", "offset_s", "sync_offset_s",
                  "channel_offsets_s", "enabled"):
            if k in settings:
                self.settings[k] = settings[k]
        self._reset()

    def _reset(self) -> None:
        s = self.settings
        self.mode = str(s["mode"])
        self.resolution_s = float(s["resolution_s"])
        self.divider = max(1, int(s["sync_divider"]))
        self.laser_period_s = 1.0 / self.sync_rate_hz
        self._laser_idx = 0          # next laser pulse to generate
        self._wraps = 0              # overflow wraps already written
        self._last = 0               # absolute sync (T3) / time tag (T2) of the last event written
        self._pending = np.empty(0, np.uint32)
        self._pending_t = np.empty(0, np.float64)
        self._generated_s = 0.0      # time up to which events have been generated
        self.time_s = 0.0
        self.out_of_range = 0
        self.photons = 0
        self.truth: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    @property
    def sync_period_s(self) -> float:
        """Time per nsync step (T3): the laser period times the divider."""
        return self.laser_period_s * self.divider

    @property
    def time_unit_s(self) -> float:
        return self.resolution_s

    def count_rates_hz(self) -> list[float]:
        """Expected input rate of each channel (index = channel number)."""
        n = max((c.channel for c in self.channels), default=-1) + 1
        rates = [0.0] * max(n, 2)
        for c in self.channels:
            rates[c.channel] += self.sync_rate_hz * sum(w.probability for w in c.windows) + c.dark_rate_hz
        return rates

    # -- generation -----------------------------------------------------------------------------
    def _events(self, first: int, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Laser-pulse index and time after that pulse (s) and channel of every click in
        laser pulses first..first+count-1 (unsorted)."""
        rng = self.rng
        idx_parts, t_parts, ch_parts = [], [], []
        enabled = self.settings.get("enabled") or {}
        period = self.laser_period_s
        for cm in self.channels:
            if enabled and not enabled.get(cm.channel, enabled.get(str(cm.channel), True)):
                continue
            for w in cm.windows:
                if w.probability <= 0:
                    continue
                hit = np.flatnonzero(rng.random(count) < w.probability)
                idx_parts.append(hit)
                t_parts.append(rng.uniform(w.start_s, w.stop_s, hit.size))
                ch_parts.append(np.full(hit.size, cm.channel))
            if cm.dark_rate_hz > 0:
                k = rng.poisson(cm.dark_rate_hz * period, count)
                idx = np.repeat(np.arange(count), k)
                idx_parts.append(idx)
                t_parts.append(rng.uniform(0.0, period, idx.size))
                ch_parts.append(np.full(idx.size, cm.channel))
        if not idx_parts:
            return np.empty(0, np.int64), np.empty(0), np.empty(0, np.int64)
        return (np.concatenate(idx_parts).astype(np.int64) + first, np.concatenate(t_parts),
                np.concatenate(ch_parts).astype(np.int64))

    def _generate(self, count: int) -> None:
        """Generate ``count`` laser periods and append their records to the pending queue."""
        first = self._laser_idx
        laser, t, ch = self._events(first, count)
        self._laser_idx += count
        self._generated_s = self._laser_idx * self.laser_period_s
        s = self.settings
        offs = s.get("channel_offsets_s") or {}
        ch_off = np.array([float(offs.get(int(c), offs.get(str(int(c)), 0.0))) for c in range(64)])
        sync_off = float(s.get("sync_offset_s", 0.0))
        if self.mode == "T3":
            per = self.sync_period_s
            # time after the (divided) sync edge that starts the hardware period
            tt = (laser % self.divider) * self.laser_period_s + t + (ch_off[ch] if ch.size else 0.0) - sync_off
            hw = laser // self.divider
            shift = np.floor(tt / per).astype(np.int64)
            hw = hw + shift
            tt = tt - shift * per - float(s.get("offset_s", 0.0))
            dtime = np.floor(tt / self.resolution_s).astype(np.int64)
            ok = (dtime >= 0) & (dtime <= DTIME_MAX) & (hw >= 0)
            self.out_of_range += int((~ok).sum())
            hw, ch, dtime = hw[ok], ch[ok], dtime[ok]
            order = np.lexsort((ch, dtime, hw))
            hw, ch, dtime = hw[order], ch[order], dtime[order]
            # a negative offset can move an event of this batch's first period before the last
            # event already written (previous batch): the stream must stay in time order
            keep = hw >= self._last
            self.out_of_range += int((~keep).sum())
            hw, ch, dtime = hw[keep], ch[keep], dtime[keep]
            w0 = self._wraps
            recs, self._wraps = events_to_t3(hw, ch, dtime, w0)
            self.photons += hw.size
            if hw.size:
                self._last = int(hw[-1])
            if self.keep_truth:
                self.truth.append((hw, ch, dtime))
            # record times (s); an overflow record gets the time of its wrap
            times = decode(recs, "T3", w0).abs_time * per
        else:
            unit = self.resolution_s
            ph_t = laser * self.laser_period_s + t + (ch_off[ch] if ch.size else 0.0)
            first_hw = -(-first // self.divider)
            last_hw = (self._laser_idx - 1) // self.divider
            syn_t = np.arange(first_hw, last_hw + 1) * self.sync_period_s + sync_off
            tag = np.concatenate([np.floor(ph_t / unit), np.floor(syn_t / unit)]).astype(np.int64)
            chan = np.concatenate([ch, np.zeros(syn_t.size, np.int64)])
            spec = np.concatenate([np.zeros(ch.size, np.int64), np.ones(syn_t.size, np.int64)])
            ok = tag >= self._last
            self.out_of_range += int((~ok).sum())
            tag, chan, spec = tag[ok], chan[ok], spec[ok]
            order = np.lexsort((chan, spec, tag))
            tag, chan, spec = tag[order], chan[order], spec[order]
            w0 = self._wraps
            recs, self._wraps = events_to_t2(tag, chan, spec, w0)
            self.photons += int((spec == 0).sum())
            if tag.size:
                self._last = int(tag[-1])
            if self.keep_truth:
                self.truth.append((tag, chan, spec))
            times = decode(recs, "T2", w0).abs_time * unit
        self._pending = np.concatenate([self._pending, recs])
        self._pending_t = np.concatenate([self._pending_t, times])

    def next_records(self, max_records: int) -> np.ndarray:
        max_records = int(max_records)
        generated = 0
        while self._pending.size < max_records and generated < self.max_syncs_per_call:
            if self.max_time_s is not None and self._generated_s >= self.max_time_s:
                break
            n = self.batch_syncs
            if self.max_time_s is not None:
                n = min(n, max(1, math.ceil(self.max_time_s / self.laser_period_s) - self._laser_idx))
            self._generate(n)
            generated += n
        out = self._pending[:max_records]
        out_t = self._pending_t[:max_records]
        self._pending = self._pending[max_records:]
        self._pending_t = self._pending_t[max_records:]
        if self._pending.size:
            self.time_s = float(out_t[-1]) if out_t.size else self.time_s
        else:
            self.time_s = self._generated_s
        return out.copy()


# ---------------------------------------------------------------------------------------------
# replay
# ---------------------------------------------------------------------------------------------

class ReplaySource:
    """Replays recorded records: an array, a raw dump (``.out``/``.bin``/``.dat``: little-endian
    uint32, as PicoQuant's ``tttrmode`` demo writes), a ``.npy`` file, or a ``.ptu`` file (through
    :func:`labctl.tags.ptu.open_ptu`, which also gives mode, sync rate and resolution).

    ``loop=True`` starts over at the end (the time base continues: the overflow count is carried
    by the decoder in the mock, so a looped file is only self-consistent if it ends on a wrap).
    Every ``start()`` rewinds unless ``rewind_on_start=False``.
    """

    def __init__(self, data: np.ndarray | str | Path, *, mode: str | None = None,
                 sync_rate_hz: float | None = None, resolution_s: float | None = None,
                 loop: bool = False, rewind_on_start: bool = True) -> None:
        self.path: str | None = None
        file_mode = file_rate = file_res = None
        if isinstance(data, (str, Path)):
            self.path = str(data)
            records, file_mode, file_rate, file_res = _load_records(Path(data))
        else:
            records = np.ascontiguousarray(data, dtype=np.uint32)
        self.records = records
        self.mode = mode or file_mode or "T3"
        rate = sync_rate_hz if sync_rate_hz is not None else file_rate
        self.sync_rate_hz = float(rate) if rate else 0.0
        res = resolution_s if resolution_s is not None else file_res
        if res:
            self.time_unit_s = float(res) if self.mode == "T2" else None
        if self.mode == "T3" and self.sync_rate_hz:
            self.sync_period_s = 1.0 / self.sync_rate_hz
        self.loop = loop
        self.rewind_on_start = rewind_on_start
        self._pos = 0

    def start(self, settings: dict[str, Any]) -> None:
        if self.rewind_on_start:
            self._pos = 0

    def next_records(self, max_records: int) -> np.ndarray:
        n = self.records.size
        if self._pos >= n:
            if not self.loop or n == 0:
                return np.empty(0, np.uint32)
            self._pos = 0
        out = self.records[self._pos:self._pos + int(max_records)]
        self._pos += out.size
        return np.array(out, dtype=np.uint32)


def _load_records(path: Path) -> tuple[np.ndarray, str | None, float | None, float | None]:
    from labctl.errors import InputError

    if not path.exists():
        raise InputError(f"record file {path} does not exist", fix="give the path of a .ptu, .npy or raw .bin file")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return np.load(path).astype(np.uint32), None, None, None
    if suffix == ".ptu":
        try:
            from labctl.tags.ptu import open_ptu  # the project's PTU reader
        except ImportError:
            raise InputError(f"{path}: reading .ptu files needs labctl.tags.ptu", file=str(path),
                             fix="convert it to a raw .bin/.npy record dump") from None
        f = open_ptu(path)
        h = f.header
        mode = "T3" if getattr(h.fmt, "mode", 3) == 3 else "T2"
        res = h.resolution if mode == "T3" else h.global_resolution
        return np.array(f.records, dtype=np.uint32), mode, h.sync_rate, res
    raw = path.read_bytes()
    if len(raw) % 4:
        raise InputError(f"{path}: {len(raw)} bytes is not a whole number of 32-bit records",
                         file=str(path), fix="give a raw dump of uint32 records")
    return np.frombuffer(raw, dtype="<u4").astype(np.uint32), None, None, None


def make_source(spec: Any, *, rng: np.random.Generator | None = None) -> Any:
    """A record source from a station ``sim: options: source:`` value: an object with
    ``next_records`` (returned as is), a path (replay), or a mapping with ``kind: synthetic``
    (keyword arguments of :class:`SyntheticSource`) or ``kind: replay`` (``path`` and the
    keyword arguments of :class:`ReplaySource`)."""
    if spec is None:
        return SyntheticSource(rng=rng)
    if hasattr(spec, "next_records"):
        return spec
    if isinstance(spec, (str, Path)):
        return ReplaySource(spec)
    if isinstance(spec, dict):
        kw = dict(spec)
        kind = kw.pop("kind", "synthetic")
        if kind == "synthetic":
            if "seed" not in kw and rng is not None:
                kw["rng"] = rng
            if "sync_rate" in kw:
                from labctl.units import parse_as

                kw["sync_rate_hz"] = parse_as(kw.pop("sync_rate"), "Hz", where="source.sync_rate")
            return SyntheticSource(**kw)
        if kind == "replay":
            return ReplaySource(kw.pop("path"), **kw)
        raise ValueError(f"unknown record source kind {kind!r} (synthetic, replay)")
    raise TypeError(f"cannot make a record source from {spec!r}")


__all__ = ["RecordSource", "SyntheticSource", "ReplaySource", "ChannelModel", "Window", "Decoded",
           "decode", "encode_t3", "encode_t2", "overflow_records", "events_to_t3", "events_to_t2",
           "make_source", "default_channels", "T3_WRAP", "T2_WRAP", "DTIME_MAX", "OVERFLOW_CHANNEL"]
