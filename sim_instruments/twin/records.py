"""Clicks → TimeHarp 260 records, as the card writes them.

T3 (the DLCZ mode): one record per photon, ``channel`` = the detector's input (0 = SNSPD 1,
1 = SNSPD 2), ``nsync`` = sync count modulo 1024, ``dtime`` = time after the (divided) sync edge
in units of the resolution, minus the T3 offset; photons whose dtime falls outside the 15-bit range
are not recorded (the card's T3 window). Overflow records carry the number of wraps (V2 format:
one record for up to 1023 wraps, so an empty stretch of up to 1023 wraps is one record), written
before the next photon. Channel offsets and the sync offset shift the times; disabled inputs
record nothing. T2: absolute time tags with a sync record per (divided) sync edge.

The codecs are :func:`sim_instruments.record_sources.events_to_t3` / ``events_to_t2`` (checked
against PicoQuant's ``Read_PTU.py``); this module applies the device settings.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..record_sources import DTIME_MAX, events_to_t2, events_to_t3
from .sampler import Events


@dataclass
class TaggerSettings:
    """The device settings the mock library passes at ``TH260_StartMeas`` (SI units)."""

    mode: str = "T3"
    resolution: float = 250e-12
    sync_divider: int = 1
    offset: float = 0.0
    sync_offset: float = 0.0
    channel_offsets: dict[int, float] = field(default_factory=dict)
    enabled: dict[int, bool] = field(default_factory=dict)
    acquisition_time: float | None = None

    @classmethod
    def from_mock(cls, s: dict[str, Any]) -> "TaggerSettings":
        return cls(mode=str(s.get("mode", "T3")), resolution=float(s.get("resolution_s", 250e-12)),
                   sync_divider=int(s.get("sync_divider", 1)), offset=float(s.get("offset_s", 0.0)),
                   sync_offset=float(s.get("sync_offset_s", 0.0)),
                   channel_offsets={int(k): float(v) for k, v in (s.get("channel_offsets_s") or {}).items()},
                   enabled={int(k): bool(v) for k, v in (s.get("enabled") or {}).items()},
                   acquisition_time=s.get("acquisition_time_s"))


class RecordEncoder:
    """Encodes blocks of events of one measurement, carrying the overflow state between blocks.
    ``channels``: tagger input of detector 1 and 2; ``period``: laser (trial) period (s)."""

    def __init__(self, settings: TaggerSettings, period: float, channels: tuple[int, int] = (0, 1)) -> None:
        self.s = settings
        self.period = float(period)
        self.channels = np.array(channels, np.int64)
        self.wraps = 0
        self.last = -1            #: last written hardware sync (T3) / time tag (T2)
        self.out_of_range = 0
        self.photons = 0

    @property
    def sync_period(self) -> float:
        return self.period * self.s.sync_divider

    def encode(self, ev: Events, first_trial: int, n_trials: int | None = None) -> np.ndarray:
        """Records of ``ev`` whose trial indices count from ``first_trial`` (trials since the
        measurement started); ``n_trials``: the block's length (T2 sync records)."""
        s = self.s
        ch = self.channels[ev.detector.astype(np.int64)] if ev.size else np.empty(0, np.int64)
        if s.enabled:
            table = np.array([s.enabled.get(c, True) for c in range(64)], bool)
            on = table[ch]
            ev, ch = ev.take(on), ch[on]
        offs = np.array([s.channel_offsets.get(int(c), 0.0) for c in range(64)])
        laser = ev.sync + int(first_trial)
        if s.mode == "T3":
            per = self.sync_period
            div = s.sync_divider
            tt = (laser % div) * self.period + ev.time + offs[ch] - s.sync_offset
            hw = laser // div
            shift = np.floor(tt / per).astype(np.int64)
            hw = hw + shift
            tt = tt - shift * per - s.offset
            dtime = np.floor(tt / s.resolution).astype(np.int64)
            ok = (dtime >= 0) & (dtime <= DTIME_MAX) & (hw >= 0)
            hw, ch, dtime = hw[ok], ch[ok], dtime[ok]
            key = (hw << 21) | (dtime << 6) | ch        # (hw, dtime, channel) order
            if key.size > 1 and np.any(key[1:] < key[:-1]):
                order = np.argsort(key, kind="stable")  # nearly sorted: a few runs to merge
                hw, ch, dtime = hw[order], ch[order], dtime[order]
            keep = hw >= self.last
            self.out_of_range += int((~ok).sum() + (~keep).sum())
            hw, ch, dtime = hw[keep], ch[keep], dtime[keep]
            recs, self.wraps = events_to_t3(hw, ch, dtime, self.wraps)
            if hw.size:
                self.last = int(hw[-1])
            self.photons += int(hw.size)
            return recs
        # T2: absolute tags plus one sync record per divided sync edge
        unit = s.resolution
        if n_trials is None:
            n_trials = int(ev.sync.max()) + 1 if ev.size else 0
        t_ph = laser * self.period + ev.time + offs[ch]
        first_hw = -(-int(first_trial) // s.sync_divider)
        last_hw = (int(first_trial) + max(n_trials, 1) - 1) // s.sync_divider
        t_sy = np.arange(first_hw, last_hw + 1) * self.sync_period + s.sync_offset
        tag = np.concatenate([np.floor(t_ph / unit), np.floor(t_sy / unit)]).astype(np.int64)
        chan = np.concatenate([ch, np.zeros(t_sy.size, np.int64)])
        spec = np.concatenate([np.zeros(ch.size, np.int64), np.ones(t_sy.size, np.int64)])
        ok = tag >= max(self.last, 0)
        self.out_of_range += int((~ok).sum())
        tag, chan, spec = tag[ok], chan[ok], spec[ok]
        order = np.lexsort((chan, spec, tag))
        tag, chan, spec = tag[order], chan[order], spec[order]
        recs, self.wraps = events_to_t2(tag, chan, spec, self.wraps)
        if tag.size:
            self.last = int(tag[-1])
        self.photons += int((spec == 0).sum())
        return recs
