"""The digital twin: reads the simulated instruments, produces the lab's time tags and fringes.

``Twin.attach(lab)`` makes the twin the record source of the mock TimeHarp 260 library in the
:class:`~sim_instruments.lab.SimLab` and the source of the Red Pitaya's fast and slow inputs, so
the unchanged drivers see the experiment: ``TimeHarp260.start`` / ``read_records`` stream T3
records of heralds, reads, auxiliary-pulse clicks and dark counts; ``RedPitaya.acquire`` returns
the balanced-detector fringe of the auxiliary pulse, which follows the fibre-stretcher voltage
the phase lock writes to the MDT694.

Every call that produces data reads the instruments' state first (AFG pulses and levels, AWG
serrodyne segments and sequence, VOA, lasers, stretcher, SNSPD bias), so a change between two
blocks takes effect in the next block. See ``docs/twin.md``.
"""
from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..record_sources import decode
from . import devices as dv
from .detection import latches_from_bias
from .interferometer import RP_BUFFER, RP_RATE, FringePulse, Interferometer, PhaseStats
from .model import N_PATTERNS, Physics, build_physics, marginals
from .params import TwinParams
from .records import RecordEncoder, TaggerSettings
from .sampler import Events, sample_block
from .state import LabState, Wiring, find_models, read_state

log = logging.getLogger("sim_instruments.twin")


@dataclass
class BlockTruth:
    """What the twin did in a block (for tests and diagnostics)."""

    n_trials: int
    first_sync: int                          #: absolute sync number of the block's first trial
    pattern_counts: np.ndarray               #: 16 core pattern counts (index H + 4 R)
    patterns: np.ndarray                     #: their per-trial probabilities (trial-weighted mean)
    expected: dict[str, Any]                 #: marginals and g2 of the core (per trial)
    phase: PhaseStats
    info: dict[str, Any]
    notes: tuple[str, ...]
    events: Events | None = None
    latched: tuple[bool, bool] = (False, False)
    chunks: int = 1

    def counts(self) -> dict[str, Any]:
        """Core counts as the witness counts object (heralds/reads of the core pulses only;
        dark counts and other pulses excluded)."""
        pc = self.pattern_counts
        h = np.arange(N_PATTERNS) % 4
        r = np.arange(N_PATTERNS) // 4
        return {"trials": int(self.n_trials),
                "pump": [int(pc[(h >> j) & 1 == 1].sum()) for j in range(2)],
                "read": [int(pc[(r >> i) & 1 == 1].sum()) for i in range(2)],
                "coincidences": [[int(pc[((r >> i) & 1 == 1) & ((h >> j) & 1 == 1)].sum()) for j in range(2)]
                                 for i in range(2)]}


class Twin:
    """The twin of one simulated station. Construct with :meth:`attach`."""

    def __init__(self, lab: Any, params: TwinParams | dict | None = None, seed: int | None = None,
                 wiring: Wiring | None = None) -> None:
        self.lab = lab
        self.params = TwinParams.from_mapping(params) if not isinstance(params, TwinParams) else params
        self.wiring = wiring or Wiring()
        self.models = find_models(lab, self.wiring)
        if seed is None:
            seed = getattr(lab, "seed", None)
        self.seed = seed
        ss = np.random.SeedSequence(seed)
        self.rng, rng_ifo = (np.random.Generator(np.random.PCG64(s)) for s in ss.spawn(2))
        self.ifo = Interferometer(self.params, rng_ifo)
        self.lock = threading.RLock()
        self.sync_abs = 0                     #: trials simulated since the twin started
        self.clock_s = 0.0                    #: simulated time (s)
        self.settings = self._default_settings()
        self.encoder: RecordEncoder | None = None
        self.meas_trials = 0                  #: trials of the current measurement generated
        self._meas_period = 0.0
        self._tacq: float | None = None
        self._gen_time = 0.0
        self._period_held = True
        self.meas_limit: int | None = None
        self._pending = np.empty(0, np.uint32)
        self._pending_sync = np.empty(0, np.int64)
        self._delivered_trials = 0
        self.time_s = 0.0                     #: mock-library clock: records delivered up to here
        self._cache: tuple[Any, Physics] | None = None
        self.truths: list[BlockTruth] = []    #: one per measurement chunk (bounded)
        self.last_phase: PhaseStats | None = None   #: residual-phase statistics of the last chunk
        m = self.models.get("stretcher")
        self._writes_mark = int(getattr(m, "set_count", 0)) if m is not None else 0
        self.block_info: dict[str, Any] = {}

    # ------------------------------------------------------------------------------------------
    # attaching
    # ------------------------------------------------------------------------------------------
    @classmethod
    def attach(cls, lab: Any, params: TwinParams | dict | None = None, seed: int | None = None,
               wiring: Wiring | None = None) -> "Twin":
        """Build the twin on ``lab`` (a SimLab), make it the record source of every mock TH260
        library in the lab and the input source of the Red Pitaya; bring instruments that are
        still in their power-up state to the lab's standing state (``params.standing_state``)."""
        twin = cls(lab, params, seed, wiring)
        lab.twin = twin
        from ..th260_mock import TH260MockLibrary

        for lib in lab.find(TH260MockLibrary) if hasattr(lab, "find") else []:
            lib.source = twin
            twin._tagger_lib = lib
            twin.settings = twin._default_settings()
        rp = twin.models.get("redpitaya")
        if rp is not None:
            rp.trace_source = twin._trace_source
            rp.input_source = twin._input_source
            rp.clock = lambda: twin.clock_s
        if twin.params.standing_state:
            twin.standing_state()
        return twin

    def _default_settings(self) -> TaggerSettings:
        lib = getattr(self, "_tagger_lib", None)
        if lib is not None and lib.devices:
            d = next(iter(lib.devices.values()))
            return TaggerSettings(resolution=d.base_resolution_ps * 1e-12 * (1 << d.binning))
        return TaggerSettings()

    def standing_state(self) -> list[str]:
        """Lasers on their sidebands (pump: blue sideband of device B, read: red; arm A is
        serrodyne-shifted onto A's) and SNSPDs biased, for instruments still at power-up values.
        Returns what was changed."""
        p = self.params
        done = []
        for role, kind in (("pump_laser", "pump"), ("read_laser", "read")):
            m = self.models.get(role)
            if m is not None and not m.output and abs(m.setpoint_nm - 1550.0) < 1e-9:
                wl = dv.sideband_wavelength(p.cavity_wavelength[1], p.mechanical_frequency[1], kind)
                m.setpoint_nm = round(wl * 1e9, 4)     # 0.1 pm: the laser piezo's fine tuning
                m.output = True
                m.moving = False
                done.append(f"{role}: {m.setpoint_nm:.4f} nm, on")
        sim = self.models.get("detector_bias")
        if sim is not None:
            for port in self.wiring.bias_ports:
                mod = sim.modules.get(port)
                if mod is not None and mod.voltage == 0.0 and not mod.output:
                    mod.voltage = round(p.bias_nominal, 3)
                    mod.output = True
                    done.append(f"SNSPD bias port {port}: {mod.voltage:.3f} V, on")
        return done

    # ------------------------------------------------------------------------------------------
    # state and physics
    # ------------------------------------------------------------------------------------------
    def state(self) -> LabState:
        """The instruments' state now (latching a detector whose bias is above the threshold)."""
        st = read_state(self.models, self.wiring, self.params)
        sim = self.models.get("detector_bias")
        relatch = False
        for j, b in enumerate(st.bias):
            if b.port is not None and not b.latched and latches_from_bias(b.volts, self.params):
                sim.set_latched(b.port, True)
                relatch = True
                log.warning("SNSPD %d latched: bias %.3f V above %.3f V", j + 1, b.volts, self.params.latch_bias)
        return read_state(self.models, self.wiring, self.params) if relatch else st

    def physics(self, state: LabState | None = None) -> Physics:
        st = state or self.state()
        key = st.signature()
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        ph = build_physics(st, self.params)
        ph.info["notes"] = st.notes
        for note in st.notes:
            log.warning("twin: %s", note)
        self._cache = (key, ph)
        return ph

    def _stretcher_writes(self, consume: bool = True) -> int | None:
        """Stretcher set points written since the previous data chunk (None without an MDT694)."""
        m = self.models.get("stretcher")
        if m is None or not hasattr(m, "set_count"):
            return None
        n = int(m.set_count) - self._writes_mark
        if consume:
            self._writes_mark = int(m.set_count)
        return n

    def _rate_latch(self, ph: Physics, st: LabState) -> bool:
        """Latch detectors whose click rate exceeds the limit; True if any did."""
        exp = ph.expected(1.0)
        changed = False
        sim = self.models.get("detector_bias")
        for j in range(2):
            per_trial = exp["herald"][j] + exp["read"][j] + sum(float(x[j]) for x in ph.extra_probs)
            rate = per_trial / ph.period + float(ph.dark_hz[j])
            b = st.bias[j]
            if rate > self.params.latch_count_rate and b.port is not None and not b.latched:
                sim.set_latched(b.port, True)
                log.warning("SNSPD %d latched: click rate %.3g Hz above %.3g Hz", j + 1, rate,
                            self.params.latch_count_rate)
                changed = True
        return changed

    def describe(self) -> dict[str, Any]:
        """The current physics in numbers: probabilities, occupations, overlaps, expected g2 at
        the current phase statistics (without advancing anything)."""
        with self.lock:
            st = self.state()
            ph = self.physics(st)
            c2 = self.ifo.peek_stats(st.stretcher_v, self._stretcher_writes(consume=False)).c2
            exp = ph.expected(c2)
            theta = float(np.angle(c2 * ph.phase_constant * np.mean([c.overlap for c in ph.components])))
            return {"period": ph.period, "c2": c2, "theta": theta, **ph.info,
                    "expected": {k: v for k, v in exp.items() if k != "patterns"},
                    "extra_probs": [x.tolist() for x in ph.extra_probs], "dark_hz": ph.dark_hz.tolist(),
                    "notes": list(st.notes)}

    # ------------------------------------------------------------------------------------------
    # sampling
    # ------------------------------------------------------------------------------------------
    def _chunk(self, n: int) -> tuple[Events, BlockTruth]:
        """Sample ``n`` trials from the current state and advance the clocks."""
        st = self.state()
        ph = self.physics(st)
        if self._rate_latch(ph, st):
            st = self.state()
            ph = self.physics(st)
        phase = self.ifo.block_stats(n * ph.period, st.stretcher_v, self._stretcher_writes())
        pat = ph.pattern_probs(phase.c2)
        p = self.params
        silent = [st.bias[j].latched for j in range(2)]
        ev, counts = sample_block(ph, pat, n, self.rng, detection_delay=p.detection_delay,
                                  jitter=p.timing_jitter, dead_time=p.dead_time, silent=tuple(silent))
        latched_now = list(silent)
        if p.latch_rate > 0:               # spontaneous latching: the detector goes quiet mid-block
            sim = self.models.get("detector_bias")
            for j in range(2):
                if silent[j] or st.bias[j].port is None:
                    continue
                t_latch = self.rng.exponential(1.0 / p.latch_rate)
                if t_latch < n * ph.period:
                    k = int(t_latch / ph.period)
                    ev = ev.take(~((ev.detector == j) & (ev.sync >= k)))
                    sim.set_latched(st.bias[j].port, True)
                    latched_now[j] = True
                    log.warning("SNSPD %d latched spontaneously after %d trials", j + 1, k)
        truth = BlockTruth(n, self.sync_abs, counts, pat, ph.expected(phase.c2), phase, ph.info, st.notes,
                           None, (latched_now[0], latched_now[1]))
        self.last_phase = phase
        self.sync_abs += n
        self.clock_s += n * ph.period
        return ev, truth

    def simulate_events(self, n_trials: int) -> tuple[Events, BlockTruth]:
        """Events of ``n_trials`` trials from the current state (sync indices from 0), and the
        truth; in pieces of at most ``max_chunk_trials`` (each reading the state anew)."""
        with self.lock:
            n_left = int(n_trials)
            parts: list[Events] = []
            truths: list[BlockTruth] = []
            done = 0
            while n_left > 0 or not truths:
                n = min(n_left, int(self.params.max_chunk_trials))
                ev, tr = self._chunk(n)
                ev.sync = ev.sync + done
                parts.append(ev)
                truths.append(tr)
                done += n
                n_left -= n
                if n == 0:
                    break
            ev = parts[0] if len(parts) == 1 else Events(*(np.concatenate([getattr(e, f) for e in parts])
                                                           for f in ("sync", "detector", "time", "source")))
            tr = _merge(truths)
            tr.events = ev
            return ev, tr

    def simulate_block(self, n_trials: int, settings: TaggerSettings | None = None) -> tuple[np.ndarray, BlockTruth]:
        """T3 (or T2) records of ``n_trials`` trials as one measurement from sync 0, and the
        truth (``truth.events`` holds the clicks before encoding)."""
        with self.lock:
            ev, tr = self.simulate_events(n_trials)
            st = settings or self.settings
            enc = RecordEncoder(st, self.physics().period, self.wiring.detector_channels)
            recs = enc.encode(ev, 0, int(n_trials))
            tr.info = {**tr.info, "out_of_range": enc.out_of_range, "photons_recorded": enc.photons}
            return recs, tr

    # ------------------------------------------------------------------------------------------
    # record source protocol of the mock TH260 library
    # ------------------------------------------------------------------------------------------
    @property
    def period(self) -> float:
        return self.physics().period

    @property
    def sync_rate_hz(self) -> float:
        return 1.0 / self.period

    @property
    def sync_period_s(self) -> float:
        return self.period * max(1, int(self.settings.sync_divider))

    def count_rates_hz(self) -> list[float]:
        """Expected click rate (Hz) per tagger input."""
        with self.lock:
            ph = self.physics()
            exp = ph.expected(1.0)
            rates = [0.0] * max(2, max(self.wiring.detector_channels) + 1)
            for j, ch in enumerate(self.wiring.detector_channels):
                per = exp["herald"][j] + exp["read"][j] + sum(float(x[j]) for x in ph.extra_probs)
                rates[ch] = per / ph.period + float(ph.dark_hz[j])
            return rates

    def start(self, settings: dict[str, Any]) -> None:
        """``TH260_StartMeas``: a new measurement from sync 0 with the device's settings."""
        with self.lock:
            self.settings = TaggerSettings.from_mock(settings)
            per = self.period
            self.encoder = RecordEncoder(self.settings, per, self.wiring.detector_channels)
            tacq = self.settings.acquisition_time
            if tacq is not None:
                x = float(tacq) / per
                self.meas_limit = int(round(x)) if abs(x - round(x)) < 1e-6 * max(1.0, x) else int(math.ceil(x))
            else:
                self.meas_limit = None
            self.meas_trials = 0
            self._meas_period = per          #: the sync period the measurement started with (s)
            self._tacq = None if tacq is None else float(tacq)
            self._gen_time = 0.0             #: measurement time generated so far (s)
            self._period_held = True         #: the sync period has not changed since start()
            self._delivered_trials = 0
            self._pending = np.empty(0, np.uint32)
            self._pending_sync = np.empty(0, np.int64)
            self.time_s = 0.0

    def begin_block(self, *, point: int = 0, block: int = 0, sync_start: int = 0,
                    seed: int | None = None) -> None:
        """Called by the runner before a block: with a seed, the block's random numbers depend
        only on (seed, point, block), so a resumed run reproduces its blocks."""
        with self.lock:
            s = self.seed if seed is None else seed
            if s is not None:
                ss = np.random.SeedSequence([int(s), 1 + int(point), 1 + int(block)])
                self.rng = np.random.Generator(np.random.PCG64(ss))
            self.block_info = {"point": point, "block": block, "sync_start": sync_start}

    def next_records(self, max_records: int) -> np.ndarray:
        """Up to ``max_records`` records of the running measurement, continuing where the last
        call stopped; new trials are sampled from the instruments' state at this call."""
        with self.lock:
            if self.encoder is None:
                self.start({"mode": self.settings.mode, "resolution_s": self.settings.resolution})
            enc = self.encoder
            max_records = int(max_records)
            guard = 0
            while self._pending.size < max_records and guard < 64:
                guard += 1
                ph = self.physics()
                if self.meas_limit is None:
                    left = None
                elif ph.period == self._meas_period and self._period_held:
                    left = self.meas_limit - self.meas_trials
                else:
                    # the trigger rate changed (a pulse generator rebooted): the acquisition time
                    # stays what it was, so the remaining time holds more or fewer syncs
                    self._period_held = False
                    left = max(0, int(math.ceil((self._tacq - self._gen_time) / ph.period - 1e-9)))
                if left is not None and left <= 0:
                    break
                per_trial = max(1e-9, sum(ph.expected(1.0)["herald"]) + sum(ph.expected(1.0)["read"])
                                + sum(float(x.sum()) for x in ph.extra_probs) + float(ph.dark_hz.sum()) * ph.period
                                + 1.0 / 1024.0 / max(1, enc.s.sync_divider) * 0.5)
                want = max_records - self._pending.size
                n = int(min(self.params.max_chunk_trials, max(1024, want / per_trial)))
                if left is not None:
                    n = min(n, left)
                ev, tr = self._chunk(n)
                self._keep_truth(tr)
                recs = enc.encode(ev, self.meas_trials, n)
                w0 = self._wraps_before(recs)
                syncs = decode(recs, enc.s.mode, w0).abs_time if enc.s.mode == "T3" else \
                    (decode(recs, "T2", w0).abs_time * enc.s.resolution / self.sync_period_s).astype(np.int64)
                self.meas_trials += n
                self._gen_time += n * ph.period
                self._pending = np.concatenate([self._pending, recs])
                self._pending_sync = np.concatenate([self._pending_sync, syncs])
            out = self._pending[:max_records]
            sy = self._pending_sync[:max_records]
            self._pending = self._pending[max_records:]
            self._pending_sync = self._pending_sync[max_records:]
            # exactly as many trials × the period as asked while the period held (no summed round-off)
            gen_time = self.meas_trials * self._meas_period if self._period_held else self._gen_time
            if self._pending.size:
                self.time_s = float(sy[-1]) * self.sync_period_s if sy.size else self.time_s
            else:
                self.time_s = gen_time
            return np.array(out, dtype=np.uint32)

    def _wraps_before(self, recs: np.ndarray) -> int:
        # the encoder already advanced its wrap count over these records: recover the start
        enc = self.encoder
        d = decode(recs, enc.s.mode, 0)
        return enc.wraps - d.wraps

    def _keep_truth(self, tr: BlockTruth) -> None:
        self.truths.append(tr)
        if len(self.truths) > 1000:
            del self.truths[:500]

    # ------------------------------------------------------------------------------------------
    # time and the phase lock
    # ------------------------------------------------------------------------------------------
    def advance(self, dt_s: float) -> None:
        """Let ``dt_s`` seconds pass without trials (the interferometer drifts)."""
        with self.lock:
            self.ifo.advance(dt_s)
            self.clock_s += dt_s

    def interferometer_phase(self) -> float:
        """φ0 now (rad), from the drift and the stretcher voltage."""
        st = self.models.get("stretcher")
        return self.ifo.phase(float(st.voltage) if st is not None else 0.0)

    def fringe_pulses(self, state: LabState | None = None) -> list[FringePulse]:
        """Light pulses of the read laser on the balanced detector with their fringe amplitudes."""
        st = state or read_state(self.models, self.wiring, self.params)
        p = self.params
        if not st.read_laser.on:
            return []
        laser = st.read_laser.power / p.laser_reference_power
        t_b = 10 ** (-(st.voa_db - p.voa_balanced) / 10.0)
        out = []
        for pl in st.read_pulses:
            power = (pl.peak / p.read_reference_level) ** 2 * laser
            g = 1.0 + 0j
            if st.eom is not None:
                t, env = pl.fine(min(0.25e-9, 0.5 / st.eom.rate))
                w = env ** 2
                g = complex(np.sum(w * np.exp(1j * st.eom.phase_at(t))) / max(w.sum(), 1e-300))
            out.append(FringePulse(pl.start, pl.end, p.fringe_amplitude * power * math.sqrt(t_b) * g))
        return out

    def fringe_voltage(self, noise: bool = True) -> float:
        """Balanced-detector voltage during the auxiliary (last read-laser) pulse now."""
        with self.lock:
            pulses = self.fringe_pulses()
            return self.ifo.fringe_voltage(self.interferometer_phase(), pulses[-1] if pulses else None, noise)

    def _lock_cycle(self) -> tuple[float, LabState]:
        st = read_state(self.models, self.wiring, self.params)
        ph = self.ifo.lock_cycle(st.stretcher_v, st.period)
        self.clock_s += st.period
        return ph, st

    def _trace_source(self, channel: int, n: int) -> np.ndarray:
        rp = self.models.get("redpitaya")
        with self.lock:
            if channel != self.wiring.lock_input:
                return rp.default_trace(channel, n)
            st = read_state(self.models, self.wiring, self.params)
            dec = int(float(rp.prop("decimation")))
            dt = dec / RP_RATE
            delay = int(float(rp.prop("trigger_delay")))
            t_trig = 0.0 if _last_trigger(rp).startswith("EXT") else float(self.ifo.rng.random()) * st.period
            t0 = t_trig + (delay - RP_BUFFER // 2) * dt
            first = int(math.floor(t0 / st.period))
            last = int(math.floor((t0 + n * dt) / st.period))
            # every repetition period the trace covers is one lock cycle (the phase moves on)
            phases = [self.ifo.lock_cycle(st.stretcher_v, st.period) for _ in range(last - first + 1)]
            self.clock_s += (last - first + 1) * st.period
            return self.ifo.render_trace(n, dt, t0, st.period, self.fringe_pulses(st), phases, first)

    def _input_source(self, pin: str, t: float) -> float:
        rp = self.models.get("redpitaya")
        with self.lock:
            if not self.params.boxcar_pin or pin.upper() != self.params.boxcar_pin.upper():
                return rp.default_input(pin, t)
            phase, st = self._lock_cycle()
            pulses = self.fringe_pulses(st)
            v = self.ifo.fringe_voltage(phase, pulses[-1] if pulses else None) - self.params.fringe_offset
            return self.params.boxcar_center + v


def _last_trigger(rp: Any) -> str:
    for msg in reversed(getattr(rp, "log", [])[-50:]):
        m = msg.strip().upper()
        if m.startswith("ACQ:TRIG ") :
            return m.split()[1]
    return "EXT_PE"


def _merge(truths: list[BlockTruth]) -> BlockTruth:
    if len(truths) == 1:
        return truths[0]
    n = sum(t.n_trials for t in truths)
    w = np.array([t.n_trials for t in truths], float) / max(n, 1)
    pat = sum(wi * t.patterns for wi, t in zip(w, truths))
    counts = sum(t.pattern_counts for t in truths)
    exp = marginals(pat)
    c2 = complex(sum(wi * t.phase.c2 for wi, t in zip(w, truths)))
    return BlockTruth(n, truths[0].first_sync, counts, pat, exp, PhaseStats(c2, truths[-1].phase.source),
                      truths[-1].info, truths[-1].notes, None,
                      tuple(any(t.latched[j] for t in truths) for j in range(2)), len(truths))
