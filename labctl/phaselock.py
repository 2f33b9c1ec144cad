"""Fiber-stretcher phase lock of the interferometer.

Riedinger et al. 2018, Supplementary "Phase stabilization of the interferometer": an auxiliary pulse
~5 µs after the read pulse (read laser, serrodyne off) travels both interferometer arms, is picked
up behind the filters by a balanced detector, and a PID drives a fiber stretcher so that the
relative path length — the interferometer phase — stays put "on a slow timescale (i.e. with the
experiment repetition period of 50 µs)".

Here, once per 50 µs cycle:

1. the fringe voltage ``s`` is read through the Red Pitaya driver (``read_voltage(pin)``: one SCPI
   query on a slow input ``AIN0``–``AIN3``; or, batched, one ``acquire`` holding several cycles —
   :class:`TraceReader`);
2. ``s`` is turned into a phase error with the calibrated fringe ``s = offset + A cos φ``
   (:meth:`PhaseLock.calibrate_fringe` sweeps the stretcher and fits ``A``, ``offset``, the volts
   per 2π and the phase at 0 V): ``φ̂ = sign(sin φ0) · arccos((s − offset)/A)``, error
   ``e = φ̂ − φ0`` — exact on the fringe side of the set point, so the loop gain does not depend
   on how far the phase has wandered;
3. simple-pid's ``PID`` (``sample_time=None``, called with the explicit ``dt`` of the cycle) turns
   ``e`` into a stretcher voltage; the MDT694 gets it with ``set_voltage(v, confirm=False)``
   (one serial write, no read).

Phase convention: φ increases with the stretcher voltage (φ = φ_0V + 2π·V/V_2π). A single
balanced-detector quadrature cannot tell the direction of the phase, so this is a definition; the
set point ``setpoint_rad`` is a point on the fringe in this convention (π/2: the falling zero
crossing of a balanced signal, the steepest point). Set points within ``tolerance_rad`` (and
0.2 rad) of a fringe extremum (0, π) are refused: the fringe has no slope there.

Range: when the output would come within ``rail_margin_v`` of a rail, the output jumps by one
fringe (the calibrated V_2π) towards the centre; the interferometer sees the same phase and the
lock holds. After each jump the phase step seen by the detector refines V_2π (a 2 % error in V_2π
would otherwise kick the phase by 0.13 rad per jump).

Lock loss: the error beyond ``tolerance_rad`` for ``loss_cycles`` consecutive cycles, the signal
far outside the calibrated fringe, or the fringe amplitude collapsing. The last one is invisible
at a zero crossing (no light reads as "on the set point"), so by default a small square-wave
dither (``dither_rad``, ±0.02 rad, alternating each update; it costs ⟨1−cos δφ⟩ = 2e-4 of
fringe visibility, 8e-4 of the DLCZ interference, which sees 2φ) is added to the output and demodulated to measure the fringe slope. On lock loss the
lock re-acquires: it scans the stretcher over 1.5 fringes around the centre of its range, re-fits
amplitude, offset and phase (V_2π kept), refuses a collapsed fringe (state ``no_fringe``, scanning
again every ``rescan_cycles``), moves to the set point and closes the loop again.

``locked`` is what suspenders check: True while the loop is in the ``locked`` state and the last
error is within ``tolerance_rad``. Telemetry per block (:class:`LockTelemetry`): error mean/RMS
(rad, over closed-loop cycles), output voltage, locked fraction, jumps, lock losses, re-locks.

The error is measured through the detector: its RMS includes the detector noise converted to
phase (σ_V/(A·|sin φ0|)), so it is an upper bound of the true residual phase error.

Performance (simulated RedPitaya + MDT694 through their drivers and ``ModelTransport``): see
``docs/phaselock.md``. In the lab the MDT694's RS-232 link (~0.6 ms per set) limits per-cycle
updates to ~1.5 kHz — enough for the drift the supplement's slow lock fights — and the batched
reader keeps the acquisition side cheap.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import numpy as np
from simple_pid import PID

from . import units as _units
from .errors import InputError, InstrumentError

log = logging.getLogger("labctl.phaselock")

TWO_PI = 2.0 * math.pi

IDLE = "idle"
SCANNING = "scanning"
LOCKING = "locking"
LOCKED = "locked"
NO_FRINGE = "no_fringe"
STATES = (IDLE, SCANNING, LOCKING, LOCKED, NO_FRINGE)

#: Red Pitaya fast inputs (a per-cycle read_voltage on them is a 1024-sample acquisition: slow)
FAST_INPUTS = {"IN1": 1, "IN2": 2}
RP_BUFFER = 16384


def _wrap(x: float) -> float:
    """``x`` wrapped into (−π, π]."""
    y = math.fmod(x + math.pi, TWO_PI)
    if y <= 0.0:
        y += TWO_PI
    return y - math.pi


def _finite(name: str, value: Any, *, positive: bool = False, nonneg: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise InputError(f"phase lock: {name} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or (positive and v <= 0) or (nonneg and v < 0):
        need = "positive" if positive else "non-negative" if nonneg else "finite"
        raise InputError(f"phase lock: {name} = {value!r} must be {need}")
    return v


def _count(name: str, value: Any, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise InputError(f"phase lock: {name} = {value!r} must be a whole number >= {low}")
    return int(value)


# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LockGains:
    """PID gains in phase units: ``kp`` (rad of correction per rad of error), ``ki`` (1/s),
    ``kd`` (s). With one update per period T, the integral corrects a fraction ``ki·T`` of the
    error per update (default 3000/s × 50 µs = 0.15: ~0.3 ms settling, ~500 Hz bandwidth);
    keep ``kp + ki·T·batch`` below ~1 for a stable loop."""

    kp: float = 0.3
    ki: float = 3000.0
    kd: float = 0.0

    def __post_init__(self) -> None:
        for k in ("kp", "ki", "kd"):
            _finite(f"gains.{k}", getattr(self, k), nonneg=True)
        if self.kp == 0 and self.ki == 0:
            raise InputError("phase lock: gains kp and ki are both 0 (no feedback)",
                             fix="e.g. gains: {kp: 0.3, ki: 3 kHz}")


@dataclass(frozen=True)
class FringeCalibration:
    """``signal = offset_v + amplitude_v · cos(phase_at_zero_rad + 2π · V / volts_per_2pi)``."""

    amplitude_v: float
    offset_v: float
    volts_per_2pi: float
    phase_at_zero_rad: float
    residual_rms_v: float = 0.0
    points: int = 0
    span_v: tuple[float, float] = (math.nan, math.nan)

    @property
    def rad_per_volt(self) -> float:
        return TWO_PI / self.volts_per_2pi

    def phase(self, piezo_v: float) -> float:
        """Interferometer phase (rad, unwrapped) at stretcher voltage ``piezo_v``."""
        return self.phase_at_zero_rad + piezo_v * self.rad_per_volt

    def signal(self, phase_rad: float) -> float:
        """Detector voltage at ``phase_rad``."""
        return self.offset_v + self.amplitude_v * math.cos(phase_rad)

    @property
    def fringes_in_span(self) -> float:
        lo, hi = self.span_v
        return (hi - lo) / self.volts_per_2pi if math.isfinite(lo) and math.isfinite(hi) else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {"amplitude_v": self.amplitude_v, "offset_v": self.offset_v,
                "volts_per_2pi": self.volts_per_2pi, "phase_at_zero_rad": self.phase_at_zero_rad,
                "residual_rms_v": self.residual_rms_v, "points": self.points, "span_v": list(self.span_v)}


def _linear_fringe(v: np.ndarray, s: np.ndarray, freq: float) -> tuple[float, float, float, float]:
    """Least squares of s = off + a cos(2πfv) + b sin(2πfv): (off, A, φ, rms residual)."""
    w = TWO_PI * freq * v
    X = np.column_stack([np.ones_like(v), np.cos(w), np.sin(w)])
    coef, *_ = np.linalg.lstsq(X, s, rcond=None)
    off, a, b = (float(c) for c in coef)
    resid = s - X @ coef
    return off, math.hypot(a, b), math.atan2(-b, a), float(np.sqrt(np.mean(resid ** 2)))


def fit_fringe(volts: Sequence[float], signal: Sequence[float], volts_per_2pi: float | None = None,
               *, name: str = "phase lock") -> FringeCalibration:
    """Fit ``signal = off + A cos(φ0 + 2π V / V_2π)`` to a stretcher sweep.

    With ``volts_per_2pi`` given only amplitude, offset and phase are fitted (linear least
    squares); otherwise the period too: a grid of candidate periods (0.1-fringe steps from 0.8
    fringes per sweep to a quarter of the points), then ``scipy.optimize.least_squares`` on all four
    parameters. The sweep must cover at least one fringe to fit the period. Raises
    InstrumentError when no fringe is found (amplitude below 3× the residual)."""
    from scipy.optimize import least_squares

    v = np.asarray(volts, dtype=float).reshape(-1)
    s = np.asarray(signal, dtype=float).reshape(-1)
    if v.size != s.size or v.size < 8:
        raise InputError(f"{name}: fringe fit needs >= 8 (voltage, signal) points, got {v.size}/{s.size}")
    if not (np.all(np.isfinite(v)) and np.all(np.isfinite(s))):
        raise InstrumentError(name, "calibrate_fringe", "non-finite values in the stretcher sweep")
    span = float(v.max() - v.min())
    if span <= 0:
        raise InputError(f"{name}: the sweep has no voltage span")
    if volts_per_2pi is not None:
        v2pi = _finite("volts_per_2pi", volts_per_2pi, positive=True)
        off, amp, phi, rms = _linear_fringe(v, s, 1.0 / v2pi)
    else:
        fmax = max(1.0, v.size / 4.0) / span
        grid = np.arange(0.8 / span, fmax, 0.1 / span)
        if grid.size == 0:
            grid = np.array([1.0 / span])
        best = min(grid, key=lambda f: _linear_fringe(v, s, f)[3])
        off, amp, phi, rms = _linear_fringe(v, s, best)
        x0 = [off, amp * math.cos(phi), -amp * math.sin(phi), best]

        def resid(p: np.ndarray) -> np.ndarray:
            w = TWO_PI * p[3] * v
            return p[0] + p[1] * np.cos(w) + p[2] * np.sin(w) - s

        sol = least_squares(resid, x0, x_scale=[max(amp, 1e-9)] * 3 + [1.0 / span])
        o, a, b, f = (float(x) for x in sol.x)
        if f <= 0:
            raise InstrumentError(name, "calibrate_fringe", "fringe period fit failed")
        off, amp, phi = o, math.hypot(a, b), math.atan2(-b, a)
        rms = float(np.sqrt(np.mean(sol.fun ** 2)))
        v2pi = 1.0 / f
        if span / v2pi < 1.0:
            raise InstrumentError(
                name, "calibrate_fringe",
                f"the sweep {v.min():.4g}..{v.max():.4g} V covers only {span / v2pi:.2f} fringes; "
                "sweep wider or give volts_per_2pi")
    if not amp > 3.0 * rms:
        raise InstrumentError(name, "calibrate_fringe",
                              f"no fringe: amplitude {amp:.3g} V vs residual {rms:.3g} V rms (is the aux pulse "
                              "on, the detector connected, both arms open?)")
    return FringeCalibration(amplitude_v=amp, offset_v=off, volts_per_2pi=v2pi, phase_at_zero_rad=_wrap(phi),
                             residual_rms_v=rms, points=int(v.size), span_v=(float(v.min()), float(v.max())))


def _voltage_writer(actuator: Any, confirm: bool = False) -> Callable[[float], None]:
    """``actuator.set_voltage(v, confirm=confirm)`` when it takes ``confirm``, else
    ``actuator.set_voltage(v)``. MDT694: ``confirm=False`` is one write and no read-back (the lock
    loop); ``confirm=True`` reads the output back, so the voltage is applied before the next
    fringe read (calibration and re-acquisition scans: a serial write still in flight would
    otherwise pair a reading with the previous set point)."""
    import functools
    import inspect

    fn = actuator.set_voltage
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return fn
    if "confirm" in params:
        return functools.partial(fn, confirm=confirm)
    return fn


# ---------------------------------------------------------------------------------------------
class PinReader:
    """One ``detector.read_voltage(pin)`` per lock cycle (Red Pitaya ``AIN0``–``AIN3``: one
    ``ANALOG:PIN?`` query; ``IN1``/``IN2``: the driver's 1024-sample mean, ~1 ms — use
    :class:`TraceReader` for fast inputs)."""

    cycles = 1

    def __init__(self, detector: Any, pin: str) -> None:
        if not callable(getattr(detector, "read_voltage", None)):
            raise InputError(f"phase lock: detector {getattr(detector, 'name', detector)!r} has no read_voltage(pin)",
                             fix="use an analog_in instrument (the Red Pitaya)")
        self.detector = detector
        self.pin = pin
        self._read = detector.read_voltage

    def read(self) -> list[float]:
        return [float(self._read(self.pin))]

    def describe(self) -> dict[str, Any]:
        return {"kind": "pin", "pin": self.pin, "cycles": 1}


class TraceReader:
    """Batched readout: one ``detector.acquire`` holds ``cycles`` lock cycles.

    Sample ``round(i · samples_per_cycle + window[0])`` and the ``window[1] − 1`` samples after it
    belong to cycle ``i`` (their mean is that cycle's fringe value). In the lab: trigger on the
    experiment's sync (``EXT_PE``), ``samples_per_cycle = period × 125 MS/s / decimation``
    (97.66 at decimation 64), ``window`` = where the aux pulse sits after the sync (or
    ``window_s = (start, duration)`` in seconds, converted with the decimation). With
    ``cycles = 1`` each acquisition is one lock cycle (the digital twin renders one period's trace
    per acquisition); with ``samples_per_cycle = 1, window = (0, 1)`` each sample is one cycle's
    (gated) fringe value.
    """

    def __init__(self, detector: Any, channel: int = 1, *, cycles: int = 50, samples_per_cycle: float | None = None,
                 window: tuple[int, int] | None = None, decimation: int = 1, trigger: str = "NOW",
                 trigger_delay: int | None = None, window_s: tuple[float, float] | None = None,
                 period_s: float = 50e-6) -> None:
        if not callable(getattr(detector, "acquire", None)):
            raise InputError(f"phase lock: detector {getattr(detector, 'name', detector)!r} has no acquire()",
                             fix="the batched reader needs the Red Pitaya driver's acquire()")
        self.detector = detector
        self.channel = FAST_INPUTS.get(str(channel).upper(), channel)
        if self.channel not in (1, 2):
            raise InputError(f"phase lock: fast input {channel!r} is not 1/2 (IN1/IN2)")
        self.cycles = _count("trace.cycles", cycles)
        if isinstance(decimation, bool) or not isinstance(decimation, (int, np.integer)) or decimation < 1:
            raise InputError(f"phase lock: trace.decimation {decimation!r} must be a power of two 1..65536")
        ts = decimation / 125e6      # Red Pitaya sample interval
        if samples_per_cycle is None:
            samples_per_cycle = 1.0 if window_s is None else period_s / ts
        if window_s is not None:
            if window is not None:
                raise InputError("phase lock: give trace.window (samples) or trace.window_s (times), not both")
            t0, dur = (_units.parse_as(x, "s", where="lock.trace.window_s") if isinstance(x, str) else float(x)
                       for x in window_s)
            if t0 < 0 or dur <= 0:
                raise InputError(f"phase lock: trace.window_s {window_s!r} must be [start >= 0, duration > 0]")
            window = (int(round(t0 / ts)), max(1, int(round(dur / ts))))
        if window is None:
            window = (0, 1)
        self.samples_per_cycle = _finite("trace.samples_per_cycle", samples_per_cycle, positive=True)
        if len(window) != 2:
            raise InputError(f"phase lock: trace.window {window!r} must be [first sample, number of samples]")
        w0, wn = _count("trace.window[0]", window[0], 0), _count("trace.window[1]", window[1], 1)
        if w0 + wn > math.ceil(self.samples_per_cycle) and self.cycles > 1:
            raise InputError(f"phase lock: trace.window {w0}+{wn} samples overruns the "
                             f"{self.samples_per_cycle:g} samples of one cycle")
        self.window = (w0, wn)
        self.starts = np.round(np.arange(self.cycles) * self.samples_per_cycle + w0).astype(np.int64)
        self.n_samples = int(self.starts[-1] + wn)
        if self.n_samples > RP_BUFFER:
            most = int((RP_BUFFER - wn - w0) // self.samples_per_cycle) + 1
            raise InputError(f"phase lock: {self.cycles} cycles need {self.n_samples} samples, more than the "
                             f"{RP_BUFFER}-sample buffer", fix=f"use at most {most} cycles per acquisition")
        self.decimation = decimation
        self.trigger = trigger
        self.trigger_delay = trigger_delay

    def read(self) -> np.ndarray:
        data = np.asarray(self.detector.acquire(self.n_samples, decimation=self.decimation, trigger=self.trigger,
                                                channel=self.channel, trigger_delay=self.trigger_delay), dtype=float)
        w0, wn = self.window
        if wn == 1:
            return data[self.starts]
        cs = np.concatenate([[0.0], np.cumsum(data)])
        return (cs[self.starts + wn] - cs[self.starts]) / wn

    def describe(self) -> dict[str, Any]:
        return {"kind": "trace", "channel": self.channel, "cycles": self.cycles,
                "samples_per_cycle": self.samples_per_cycle, "window": list(self.window),
                "decimation": self.decimation, "trigger": self.trigger}


# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LockSample:
    """The last cycle of one :meth:`PhaseLock.step`."""

    cycle: int
    time_s: float
    signal_v: float
    error_rad: float
    output_v: float
    state: str
    locked: bool
    jumped: bool


class _Acc:
    """Additive telemetry accumulator."""

    __slots__ = ("n", "n_locked", "n_closed", "sum_e", "sum_e2", "sum_cos", "sum_cos2", "max_abs", "out_sum", "out_min",
                 "out_max", "out_last", "jumps", "losses", "relocks", "events")

    def __init__(self) -> None:
        self.n = self.n_locked = self.n_closed = 0
        self.sum_e = self.sum_e2 = self.sum_cos = self.sum_cos2 = self.max_abs = 0.0
        self.out_sum = 0.0
        self.out_min = math.inf
        self.out_max = -math.inf
        self.out_last = math.nan
        self.jumps = self.losses = self.relocks = 0
        self.events: list[dict[str, Any]] = []

    def merge(self, o: "_Acc") -> None:
        for k in ("n", "n_locked", "n_closed", "sum_e", "sum_e2", "sum_cos", "sum_cos2", "out_sum", "jumps", "losses",
                  "relocks"):
            setattr(self, k, getattr(self, k) + getattr(o, k))
        self.max_abs = max(self.max_abs, o.max_abs)
        self.out_min = min(self.out_min, o.out_min)
        self.out_max = max(self.out_max, o.out_max)
        if o.n:
            self.out_last = o.out_last
        self.events.extend(o.events)
        del self.events[:-1000]


def _num(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


@dataclass
class LockTelemetry:
    """Lock statistics over a block of cycles. Error statistics are over the cycles in the
    ``locked`` state (closed loop, after settling); NaN when there were none. The error excludes
    the deliberate dither; ``visibility_loss`` = 1 − ⟨cos δφ⟩ of the phase the interferometer
    sees includes it, and ``visibility_loss_2phi`` = 1 − ⟨cos 2δφ⟩ is the loss of the DLCZ
    interference (pump and read both cross the interferometer: θ = 2φ0)."""

    cycles: int
    duration_s: float
    locked_fraction: float
    error_mean_rad: float
    error_rms_rad: float
    error_max_rad: float
    visibility_loss: float
    visibility_loss_2phi: float
    output_mean_v: float
    output_min_v: float
    output_max_v: float
    output_last_v: float
    jumps: int
    lock_losses: int
    relocks: int
    state: str
    volts_per_2pi: float
    amplitude_ratio: float
    dither_rad: float
    events: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_acc(cls, acc: _Acc, lock: "PhaseLock") -> "LockTelemetry":
        nc = acc.n_closed
        mean = acc.sum_e / nc if nc else math.nan
        rms = math.sqrt(acc.sum_e2 / nc) if nc else math.nan
        return cls(cycles=acc.n, duration_s=acc.n * lock.period_s,
                   locked_fraction=acc.n_locked / acc.n if acc.n else 0.0,
                   error_mean_rad=mean, error_rms_rad=rms, error_max_rad=acc.max_abs if nc else math.nan,
                   visibility_loss=1.0 - acc.sum_cos / nc if nc else math.nan,
                   visibility_loss_2phi=1.0 - acc.sum_cos2 / nc if nc else math.nan,
                   output_mean_v=acc.out_sum / acc.n if acc.n else math.nan,
                   output_min_v=acc.out_min if acc.n else math.nan, output_max_v=acc.out_max if acc.n else math.nan,
                   output_last_v=acc.out_last, jumps=acc.jumps, lock_losses=acc.losses, relocks=acc.relocks,
                   state=lock.state, volts_per_2pi=lock.volts_per_2pi if lock.volts_per_2pi else math.nan,
                   amplitude_ratio=lock.amplitude_ratio, dither_rad=lock.dither_rad, events=list(acc.events))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (NaN -> null); includes the run report's ``rms_error`` and ``locked_fraction``."""
        d = {k: (_num(v) if isinstance(v, float) else v) for k, v in self.__dict__.items()}
        d["rms_error"] = _num(self.error_rms_rad)
        return d


# ---------------------------------------------------------------------------------------------
class PhaseLock:
    """Side-of-fringe phase lock: Red Pitaya (or any ``read_voltage(pin)``) in, MDT694 (or any
    ``set_voltage(v, confirm=False)`` with ``voltage_range``) out.

    Typical use::

        lock = PhaseLock(rp, "AIN0", stretcher, setpoint_rad=math.pi / 2)
        lock.calibrate_fringe()        # sweep, fit A, offset, V_2π
        lock.engage()                  # move to the set point, close the loop
        tel = lock.run_cycles(20000)   # one second of 50 µs cycles -> LockTelemetry
        lock.locked                    # for suspenders

    or ``lock.start()`` / ``lock.stop()`` for a background thread (``telemetry()`` then reads and
    resets the statistics). ``step()`` and ``run_cycles()`` engage (and calibrate) on first use.

    ``batch`` (cycles per read) with a fast-input pin (``IN1``/``IN2``) uses :class:`TraceReader`
    (``trace``: its keyword options); the PID then updates once per batch with the batch's mean
    error and ``dt = batch × period``.
    """

    def __init__(self, detector: Any, detector_pin: str, actuator: Any, *, setpoint_rad: float = math.pi / 2,
                 gains: LockGains | dict | Sequence[float] | None = None, period_s: float = 50e-6,
                 calibration: FringeCalibration | None = None, volts_per_2pi: float | None = None,
                 tolerance_rad: float = 0.3, loss_cycles: int = 20, range_margin: float = 0.5,
                 rail_margin_v: float | None = None, output_range: tuple[float, float] | None = None,
                 dither_rad: float = 0.02, dither_tau_cycles: int = 64, min_amplitude_fraction: float = 0.5,
                 scan_points: int = 48, settle_cycles: int = 10, max_locking_cycles: int = 2000,
                 rescan_cycles: int = 200, refine_jumps: bool = True, batch: int | None = None,
                 trace: dict[str, Any] | None = None, reader: Any = None, history: int = 0,
                 name: str = "phase_lock", on_event: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.name = name
        self.detector = detector
        self.detector_pin = str(detector_pin)
        self.actuator = actuator
        if not callable(getattr(actuator, "set_voltage", None)):
            raise InputError(f"{name}: actuator {getattr(actuator, 'name', actuator)!r} has no set_voltage(volts)",
                             fix="use a piezo_driver instrument (the MDT694)")
        if reader is None:
            pin_up = self.detector_pin.upper()
            if (batch is not None and batch > 1) or trace:
                if pin_up not in FAST_INPUTS:
                    raise InputError(f"{name}: batched readout needs a fast input (IN1/IN2), not {detector_pin!r}",
                                     fix="use detector_pin IN1, or batch: 1 with a slow input (AIN0)")
                opts = dict(trace or {})
                opts.setdefault("cycles", batch or 50)
                opts.setdefault("period_s", period_s)
                reader = TraceReader(detector, FAST_INPUTS[pin_up], **opts)
            else:
                if pin_up in FAST_INPUTS:
                    log.warning("%s: per-cycle read_voltage(%s) averages 1024 samples over ~10 periods (~1 ms per "
                                "cycle, the aux pulse diluted); configure 'trace' (window_s at the aux pulse) or a "
                                "boxcar on AIN0", name, pin_up)
                reader = PinReader(detector, self.detector_pin)
        self.reader = reader
        self.batch = int(getattr(reader, "cycles", 1))
        self.period_s = _finite("period_s", period_s, positive=True)
        if isinstance(gains, LockGains):
            self.gains = gains
        elif isinstance(gains, dict):
            self.gains = LockGains(**gains)
        elif gains is None:
            self.gains = LockGains()
        else:
            self.gains = LockGains(*gains)
        if self.gains.kp + self.gains.ki * self.period_s * self.batch > 1.5:
            raise InputError(f"{name}: kp + ki·dt = {self.gains.kp + self.gains.ki * self.period_s * self.batch:.3g} "
                             f"per update (dt = {self.batch} × {self.period_s:g} s) makes the loop unstable",
                             fix="lower ki (or the batch size) so that kp + ki·dt < 1")
        self.setpoint_rad = _wrap(_finite("setpoint_rad", setpoint_rad))
        self.tolerance_rad = _finite("tolerance_rad", tolerance_rad, positive=True)
        edge = min(abs(self.setpoint_rad), math.pi - abs(self.setpoint_rad))
        if edge < max(self.tolerance_rad, 0.2):
            raise InputError(
                f"{name}: set point {self.setpoint_rad:.3g} rad is {edge:.3g} rad from a fringe extremum "
                f"(0 or π); the balanced-detector error has no slope there",
                fix=f"choose a set point at least max(tolerance, 0.2 rad) = {max(self.tolerance_rad, 0.2):.3g} rad "
                    "from 0 and π (e.g. 0.5 pi), or shift the interferometer phase with the EOM bias")
        self._sin_sign = 1.0 if math.sin(self.setpoint_rad) > 0 else -1.0
        self.loss_cycles = _count("loss_cycles", loss_cycles)
        self.range_margin = _finite("range_margin", range_margin, positive=True)
        self.dither_rad = _finite("dither_rad", dither_rad, nonneg=True)
        if self.dither_rad >= self.tolerance_rad / 2:
            raise InputError(f"{name}: dither {self.dither_rad:g} rad must be well below the tolerance "
                             f"{self.tolerance_rad:g} rad", fix="e.g. dither 0.02 rad")
        self.dither_tau = _count("dither_tau_cycles", dither_tau_cycles)
        self.min_amplitude_fraction = _finite("min_amplitude_fraction", min_amplitude_fraction, positive=True)
        self.scan_points = _count("scan_points", scan_points, 8)
        self.settle_cycles = _count("settle_cycles", settle_cycles)
        self.max_locking_cycles = _count("max_locking_cycles", max_locking_cycles)
        self.rescan_cycles = _count("rescan_cycles", rescan_cycles)
        self.refine_jumps = bool(refine_jumps)
        self._rail_margin_opt = None if rail_margin_v is None else _finite("rail_margin_v", rail_margin_v, nonneg=True)
        if output_range is not None:
            lo, hi = (_finite("output_range", x) for x in output_range)
            if not lo < hi:
                raise InputError(f"{name}: output_range {output_range!r} is empty")
            self._range_opt: tuple[float, float] | None = (lo, hi)
        else:
            self._range_opt = None
        self._v2pi_given = None if volts_per_2pi is None else _finite("volts_per_2pi", volts_per_2pi, positive=True)
        self.on_event = on_event
        self._write = _voltage_writer(actuator)
        self._write_confirmed = _voltage_writer(actuator, confirm=True)
        self._pid = PID(0.0, 0.0, 0.0, setpoint=0.0, sample_time=None)
        self._mutex = threading.RLock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._thread_error: BaseException | None = None
        self.history: deque[LockSample] | None = deque(maxlen=history) if history else None

        self._state = IDLE
        self._cal: FringeCalibration | None = None
        self._amp_ref = math.nan
        self.volts_per_2pi: float | None = self._v2pi_given
        self.cycle = 0
        self._acc = _Acc()
        self._block_acc: _Acc | None = None
        self._out = math.nan          # last written voltage (with dither)
        self._v_cmd = math.nan        # last command without dither (bias + PID + wraps)
        self._bias = 0.0
        self._wrap_v = 0.0
        self._dither_sign = 1.0
        self._dither_phase = 0.0      # dither phase (rad) during the samples being read
        self._amp_num = self._amp_den = 0.0
        self.amplitude_ratio = math.nan
        self._prev_c = math.nan
        self._prev_cmd_phase = math.nan
        self._out_phase = math.nan
        self._k = math.nan
        self._v2pi_cal = math.nan
        self._range: tuple[float, float] = (math.nan, math.nan)
        self._bad = self._good = self._oor = self._locking_n = 0
        self._since_lock = 0
        self._reacquiring = False
        self._pending_jump: tuple[float, float, float] | None = None
        self._scan_v: np.ndarray | None = None
        self._scan_vals: list[float] = []
        self._scan_i = 0
        self._rescan_wait = 0
        self._no_fringe_scans = 0
        self._last: tuple[float, float, bool] = (math.nan, math.nan, False)
        self._jumped = False
        if calibration is not None:
            self._set_calibration(calibration)

    # -- configuration from a station ------------------------------------------------------------
    @classmethod
    def from_station(cls, station: Any, **overrides: Any) -> "PhaseLock":
        """The lock of a connected :class:`labctl.station.Station`: detector = channel
        ``lock_detector`` (instrument and pin), actuator = channel ``phase_actuator``, options from
        the station file's ``lock:`` section (see :func:`lock_options`), then ``overrides``."""
        cfg = station.config
        det = cfg.channel("lock_detector")
        act = cfg.channel("phase_actuator")
        opts = lock_options(cfg)
        pin = opts.pop("pin", None) or (str(det.output) if det.output is not None else "AIN0")
        opts.update(overrides)
        pin = str(opts.pop("pin", None) or opts.pop("detector_pin", None) or pin)
        return cls(station[det.instrument], pin, station[act.instrument], name="phase_lock", **opts)

    # -- properties --------------------------------------------------------------------------------
    @property
    def state(self) -> str:
        return self._state

    @property
    def locked(self) -> bool:
        """True while in the ``locked`` state with the last error within ``tolerance_rad``."""
        return self._last[2]

    @property
    def calibration(self) -> FringeCalibration | None:
        return self._cal

    @property
    def output_v(self) -> float:
        return self._out

    @property
    def output_range(self) -> tuple[float, float]:
        if self._range_opt is not None:
            lo, hi = self._range_opt
        else:
            rng = getattr(self.actuator, "voltage_range", None)
            if rng is None:
                raise InputError(f"{self.name}: the actuator has no voltage_range; give output_range=(lo, hi)")
            lo, hi = rng
        if self._range_opt is not None and getattr(self.actuator, "voltage_range", None) is not None:
            alo, ahi = self.actuator.voltage_range
            lo, hi = max(lo, alo), min(hi, ahi)
        return float(lo), float(hi)

    @property
    def rail_margin_v(self) -> float:
        if self._rail_margin_opt is not None:
            return self._rail_margin_opt
        return 0.1 * self.volts_per_2pi if self.volts_per_2pi else 0.0

    # -- fringe calibration --------------------------------------------------------------------------
    def calibrate_fringe(self, *, span_v: float | tuple[float, float] | None = None, points: int = 200,
                         volts_per_2pi: float | None = None, settle_cycles: int = 1) -> FringeCalibration:
        """Sweep the stretcher (upwards, one read per point after ``settle_cycles`` discarded
        reads at the start), fit the fringe (:func:`fit_fringe`) and keep the result.

        ``span_v``: a width around the centre of the output range, or ``(lo, hi)``; default the
        whole range (or 2.5 × a known V_2π around the centre). The loop is open meanwhile; the
        output is left at the end of the sweep. Raises InstrumentError when no fringe is seen."""
        with self._mutex:
            self._require_stopped()
            points = _count("points", points, 8)
            lo, hi = self.refresh_range()
            v2pi = volts_per_2pi if volts_per_2pi is not None else self._v2pi_given
            if span_v is None and v2pi is not None:
                span_v = 2.5 * v2pi
            if span_v is None:
                a, b = lo, hi
            elif isinstance(span_v, (tuple, list)):
                a, b = max(lo, float(span_v[0])), min(hi, float(span_v[1]))
            else:
                c, h = 0.5 * (lo + hi), 0.5 * _finite("span_v", span_v, positive=True)
                a, b = max(lo, c - h), min(hi, c + h)
            if not a < b:
                raise InputError(f"{self.name}: empty calibration sweep {a:g}..{b:g} V")
            volts = np.linspace(a, b, points)
            self._state = IDLE
            self._last = (math.nan, math.nan, False)
            self._write_v(float(volts[0]), confirmed=True)
            for _ in range(settle_cycles):
                self._read_mean()
            vals = []
            for v in volts:
                self._write_v(float(v), confirmed=True)
                vals.append(self._read_mean())
            cal = fit_fringe(volts, vals, v2pi, name=self.name)
            self._set_calibration(cal)
            self._event("calibrated", f"A = {cal.amplitude_v:.4g} V, offset {cal.offset_v:.4g} V, "
                                      f"V_2π = {cal.volts_per_2pi:.4g} V")
            return cal

    def _set_calibration(self, cal: FringeCalibration) -> None:
        lo, hi = self.refresh_range()
        margin = self._rail_margin_opt if self._rail_margin_opt is not None else 0.1 * cal.volts_per_2pi
        if hi - lo < cal.volts_per_2pi + 4 * margin:
            raise InstrumentError(
                self.name, "calibrate_fringe",
                f"the stretcher range {lo:g}..{hi:g} V holds less than one fringe (V_2π = {cal.volts_per_2pi:.4g} V) "
                f"plus 4 × the {margin:.3g} V rail margin, so the lock cannot jump by 2π at a rail; raise the MDT694 "
                "limit switch / station limits or use a longer stretcher")
        self._cal = cal
        self._amp_ref = cal.amplitude_v
        self._v2pi_cal = cal.volts_per_2pi
        self.volts_per_2pi = cal.volts_per_2pi
        self._retune()

    def _retune(self) -> None:
        self._k = TWO_PI / self.volts_per_2pi
        vpr = self.volts_per_2pi / TWO_PI
        g = self.gains
        self._pid.tunings = (g.kp * vpr, g.ki * vpr, g.kd * vpr)

    # -- engage / background ------------------------------------------------------------------------
    def engage(self) -> None:
        """Move to the set point nearest the centre of the range and close the loop (calibrating
        first if there is no calibration)."""
        with self._mutex:
            if self._cal is None:
                self.calibrate_fringe()
            self._reacquiring = False
            self._engage()

    def release(self) -> None:
        """Open the loop (state ``idle``); the output stays where it is."""
        with self._mutex:
            self._state = IDLE
            self._last = (self._last[0], self._last[1], False)

    def _engage(self) -> None:
        cal = self._cal
        assert cal is not None
        lo, hi = self.refresh_range()
        centre = 0.5 * (lo + hi)
        k = self._k
        base = self.setpoint_rad - cal.phase_at_zero_rad
        m = round((k * centre - base) / TWO_PI)
        target = (base + TWO_PI * m) / k
        self._bias = target
        self._wrap_v = 0.0
        self._pid.reset()
        self._v_cmd = target
        self._dither_sign = 1.0
        self._dither_phase = 0.0
        self._pending_jump = None
        self._amp_num = self._amp_den = 0.0
        self.amplitude_ratio = math.nan
        self._prev_c = math.nan
        self._prev_cmd_phase = math.nan
        self._bad = self._good = self._oor = self._locking_n = self._since_lock = 0
        self._state = LOCKING
        self._write_v(target)
        self._out_phase = self._out * k

    def start(self, *, pace: bool = False) -> None:
        """Run the lock in a background thread (engaging first if needed) until :meth:`stop`.
        ``pace``: hold the cycle rate to one per ``period_s`` of wall time (otherwise as fast as
        the instruments answer, as in a simulation)."""
        with self._mutex:
            if self._thread is not None and self._thread.is_alive():
                raise InputError(f"{self.name}: the lock is already running")
            if self._state == IDLE:
                self.engage()
            self._stop.clear()
            self._thread_error = None
            self._thread = threading.Thread(target=self._run_thread, args=(pace,), name=self.name, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the background thread; re-raise what stopped it, if anything did."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._thread_error is not None:
            err, self._thread_error = self._thread_error, None
            raise err

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run_thread(self, pace: bool) -> None:
        t0, n0 = time.monotonic(), self.cycle
        try:
            while not self._stop.is_set():
                with self._mutex:
                    self._block()
                if pace:
                    ahead = t0 + (self.cycle - n0) * self.period_s - time.monotonic()
                    if ahead > 0:
                        time.sleep(ahead)
                else:
                    time.sleep(0)  # let other threads (the acquisition) run
        except BaseException as e:  # kept for stop(); the lock is no longer locked
            self._thread_error = e
            self._state = IDLE
            self._last = (math.nan, math.nan, False)
            log.error("%s: lock thread stopped: %s", self.name, e)

    def _require_stopped(self) -> None:
        if self._thread is not None and self._thread.is_alive() and threading.current_thread() is not self._thread:
            raise InputError(f"{self.name}: stop the background lock before stepping it by hand")

    # -- cycles --------------------------------------------------------------------------------------
    def step(self) -> LockSample:
        """One read/update/write (``batch`` cycles with the batched reader); the last cycle's sample."""
        with self._mutex:
            self._require_stopped()
            if self._state == IDLE:
                self.engage()
            self._block()
            return self._sample()

    def run_cycles(self, n: int) -> LockTelemetry:
        """Run at least ``n`` cycles (whole batches) and return their telemetry (also counted in
        :meth:`telemetry`)."""
        n = _count("n", n)
        with self._mutex:
            self._require_stopped()
            if self._state == IDLE:
                self.engage()
            acc = _Acc()
            self._block_acc = acc
            try:
                target = self.cycle + n
                while self.cycle < target:
                    self._block()
            finally:
                self._block_acc = None
                self._acc.merge(acc)
            return LockTelemetry.from_acc(acc, self)

    def wait_locked(self, max_cycles: int = 20000) -> bool:
        """Step until ``locked`` (True) or ``max_cycles`` have passed (False); for suspenders."""
        with self._mutex:
            start = self.cycle
            while not self.locked and self.cycle - start < max_cycles:
                if self._state == IDLE:
                    self.engage()
                self._block()
            return self.locked

    def telemetry(self, reset: bool = True) -> LockTelemetry:
        """Statistics since the last reset (background thread, ``step`` and ``run_cycles`` calls)."""
        with self._mutex:
            tel = LockTelemetry.from_acc(self._acc, self)
            if reset:
                self._acc = _Acc()
            return tel

    def _sample(self) -> LockSample:
        s, e, locked = self._last
        return LockSample(cycle=self.cycle, time_s=self.cycle * self.period_s, signal_v=s, error_rad=e,
                          output_v=self._out, state=self._state, locked=locked, jumped=self._jumped)

    # -- I/O -----------------------------------------------------------------------------------------
    def refresh_range(self) -> tuple[float, float]:
        """Re-read the actuator's allowed range (cached for speed; done at calibrate/engage/scan)."""
        self._range = self.output_range
        return self._range

    def _write_v(self, v: float, *, confirmed: bool = False) -> None:
        """Set the actuator to ``v`` (clipped to the range); ``confirmed``: wait until it is applied
        (sweeps, where each reading must belong to its set point)."""
        lo, hi = self._range
        v = min(max(v, lo), hi)
        (self._write_confirmed if confirmed else self._write)(v)
        self._out = v

    def _read_mean(self) -> float:
        vals = self.reader.read()
        self.cycle += len(vals)
        return float(sum(vals) / len(vals)) if len(vals) != 1 else float(vals[0])

    def _event(self, kind: str, detail: str = "") -> None:
        ev = {"cycle": self.cycle, "time_s": self.cycle * self.period_s, "kind": kind, "detail": detail}
        acc = self._block_acc if self._block_acc is not None else self._acc
        acc.events.append(ev)
        del acc.events[:-1000]
        log.info("%s: %s %s", self.name, kind, detail)
        if self.on_event is not None:
            self.on_event(ev)

    # -- one block (1 cycle, or ``batch`` cycles of the batched reader) ------------------------------
    def _block(self) -> None:
        if self._block_acc is None:  # step() / thread: count straight into the running statistics
            acc = self._acc
        else:
            acc = self._block_acc
        vals = self.reader.read()
        self._jumped = False
        st = self._state
        if st in (LOCKED, LOCKING):
            self._closed_loop(vals, acc)
        elif st in (SCANNING, NO_FRINGE):
            self._scan(vals, acc)
        else:
            self._open(vals, acc)
        if self.history is not None:
            self.history.append(self._sample())

    def _open(self, vals: Sequence[float], acc: _Acc) -> None:
        out = self._out
        for s in vals:
            self.cycle += 1
            acc.n += 1
            acc.out_sum += out
        if vals:
            acc.out_min = min(acc.out_min, out)
            acc.out_max = max(acc.out_max, out)
            acc.out_last = out
            self._last = (float(vals[-1]), math.nan, False)

    def _closed_loop(self, vals: Sequence[float], acc: _Acc) -> None:
        cal = self._cal
        amp, off = cal.amplitude_v, cal.offset_v
        phi0, sgn, tol = self.setpoint_rad, self._sin_sign, self.tolerance_rad
        dph = self._dither_phase
        out = self._out
        lim = 1.0 + self.range_margin
        is_locked_state = self._state == LOCKED
        esum = csum = 0.0
        lost = None
        e = math.nan
        locked = False
        s = math.nan
        for s in vals:
            self.cycle += 1
            acc.n += 1
            acc.out_sum += out
            c = (s - off) / amp
            if c > lim or c < -lim:
                self._oor += 1
            else:
                self._oor = 0
            cc = 1.0 if c > 1.0 else -1.0 if c < -1.0 else c
            e = sgn * math.acos(cc) - phi0
            if e > math.pi:
                e -= TWO_PI
            elif e <= -math.pi:
                e += TWO_PI
            e -= dph
            esum += e
            csum += cc
            ae = abs(e)
            in_tol = ae <= tol
            if lost is not None:
                locked = False
            elif is_locked_state:
                acc.n_closed += 1
                acc.sum_e += e
                acc.sum_e2 += e * e
                acc.sum_cos += math.cos(e + dph)   # the dither costs visibility too
                acc.sum_cos2 += math.cos(2.0 * (e + dph))
                if ae > acc.max_abs:
                    acc.max_abs = ae
                if in_tol:
                    self._bad = 0
                    acc.n_locked += 1
                    locked = True
                else:
                    self._bad += 1
                    locked = False
                self._since_lock += 1
                if self._bad >= self.loss_cycles:
                    lost = f"error beyond {tol:g} rad for {self._bad} cycles"
                elif self._oor >= self.loss_cycles:
                    lost = (f"signal outside the calibrated fringe for {self._oor} cycles "
                            f"(last {s:.4g} V; fringe {off:.4g} ± {amp:.4g} V)")
            else:  # LOCKING: settle before declaring the lock
                locked = False
                self._locking_n += 1
                self._good = self._good + 1 if in_tol else 0
        acc.out_min = min(acc.out_min, out)
        acc.out_max = max(acc.out_max, out)
        acc.out_last = out
        n = len(vals)
        e_mean = esum / n
        self._last = (float(s), e, locked)
        k = self._k

        # fringe slope from the dither: least squares of Δc against the commanded phase step
        if self.dither_rad > 0 and lost is None:
            c_mean = csum / n
            cmd_phase = self._out_phase
            if math.isfinite(self._prev_c) and math.isfinite(cmd_phase) and abs(e_mean) <= tol:
                x = math.sin(phi0) * (cmd_phase - self._prev_cmd_phase)
                a = min(1.0, n / self.dither_tau)
                self._amp_num += a * (-(c_mean - self._prev_c) * x - self._amp_num)
                self._amp_den += a * (x * x - self._amp_den)
                if self._amp_den > 0:
                    self.amplitude_ratio = self._amp_num / self._amp_den
            self._prev_c = c_mean
            self._prev_cmd_phase = cmd_phase
            if (self._state == LOCKED and self._since_lock >= 4 * self.dither_tau
                    and math.isfinite(self.amplitude_ratio)
                    and not (self.min_amplitude_fraction <= self.amplitude_ratio
                             <= 1.0 / self.min_amplitude_fraction)):
                lost = f"fringe amplitude at {self.amplitude_ratio:.2f} × the calibrated one"

        # V_2π refinement from the phase step a jump left behind
        if self._pending_jump is not None and lost is None:
            e_before, dv_pid, dv_jump = self._pending_jump
            self._pending_jump = None
            resid = e_mean - e_before - dv_pid * k
            if self._state == LOCKED and abs(resid) < 0.5 and abs(e_before) <= tol:
                ratio = 1.0 + resid / (TWO_PI * math.copysign(1.0, dv_jump))   # κ_true / κ_est
                step = min(1.05, max(0.95, 1.0 / ratio))
                new = self.volts_per_2pi * (1.0 + 0.5 * (step - 1.0))
                ref = self._v2pi_cal
                self.volts_per_2pi = min(1.25 * ref, max(0.75 * ref, new))
                self._retune()
                k = self._k

        if lost is not None:
            acc.losses += 1
            self._event("lock_lost", lost)
            self._last = (float(s), e, False)
            self._start_scan()
            return
        if self._state == LOCKING:
            if self._good >= self.settle_cycles:
                self._state = LOCKED
                self._bad = 0
                self._since_lock = 0
                if self._reacquiring:
                    acc.relocks += 1
                    self._event("relocked", f"after {self._locking_n} settling cycles")
                else:
                    self._event("locked", f"after {self._locking_n} settling cycles")
                self._reacquiring = False
            elif self._locking_n >= self.max_locking_cycles:
                acc.losses += 1
                self._event("lock_lost", f"did not settle within {self._locking_n} cycles")
                self._start_scan()
                return

        # PID update (one per read) and the new output
        u = self._pid(e_mean, dt=n * self.period_s)
        v = self._bias + u + self._wrap_v
        lo, hi = self._range
        margin = self.rail_margin_v
        jump = 0.0
        if v > hi - margin:
            jump = -self.volts_per_2pi
        elif v < lo + margin:
            jump = self.volts_per_2pi
        if jump:
            self._wrap_v += jump
            acc.jumps += 1
            self._jumped = True
            if self.refine_jumps:
                self._pending_jump = (e_mean, v - self._v_cmd, jump)
            self._event("jump", f"{v:.4g} V -> {v + jump:.4g} V")
            v += jump
        self._v_cmd = v
        if self.dither_rad > 0:
            self._dither_sign = -self._dither_sign
            self._dither_phase = self._dither_sign * self.dither_rad
            v_out = v + self._dither_phase / k
        else:
            v_out = v
        self._write_v(v_out)
        self._out_phase = (self._out - self._wrap_v) * k

    # -- re-acquisition --------------------------------------------------------------------------
    def _start_scan(self) -> None:
        self._out_phase = math.nan
        lo, hi = self.refresh_range()
        centre = 0.5 * (lo + hi)
        half = 0.75 * self.volts_per_2pi
        self._scan_v = np.linspace(max(lo, centre - half), min(hi, centre + half), self.scan_points)
        self._scan_vals = []
        self._scan_i = 0
        self._state = SCANNING
        self._reacquiring = True
        self._write_v(float(self._scan_v[0]), confirmed=True)  # first point; the next read belongs to it
        self._scan_i = 1

    def _scan(self, vals: Sequence[float], acc: _Acc) -> None:
        out = self._out
        for s in vals:
            self.cycle += 1
            acc.n += 1
            acc.out_sum += out
        acc.out_min = min(acc.out_min, out)
        acc.out_max = max(acc.out_max, out)
        acc.out_last = out
        self._last = (float(vals[-1]), math.nan, False)
        if self._state == NO_FRINGE:
            self._rescan_wait -= len(vals)
            if self._rescan_wait <= 0:
                self._start_scan()
            return
        self._scan_vals.append(float(sum(vals) / len(vals)))
        if self._scan_i < len(self._scan_v):
            self._write_v(float(self._scan_v[self._scan_i]), confirmed=True)
            self._scan_i += 1
            return
        volts = self._scan_v[: len(self._scan_vals)]
        try:
            off, amp, phi, rms = _linear_fringe(volts, np.asarray(self._scan_vals), 1.0 / self.volts_per_2pi)
        except np.linalg.LinAlgError:
            amp, rms = 0.0, math.inf
        if not (amp >= self.min_amplitude_fraction * self._amp_ref and amp > 3.0 * rms):
            self._state = NO_FRINGE
            self._rescan_wait = self.rescan_cycles
            lo, hi = self._range
            self._write_v(0.5 * (lo + hi))
            self._no_fringe_scans += 1
            if self._no_fringe_scans == 1:   # one event per outage, not one per scan
                self._event("no_fringe", f"scan amplitude {amp:.3g} V < {self.min_amplitude_fraction:g} × "
                                         f"{self._amp_ref:.3g} V; scanning again every {self.rescan_cycles} cycles")
            return
        if self._no_fringe_scans:
            self._event("fringe_back", f"after {self._no_fringe_scans} empty scan(s)")
        self._no_fringe_scans = 0
        self._cal = replace(self._cal, amplitude_v=amp, offset_v=off, phase_at_zero_rad=_wrap(phi),
                            volts_per_2pi=self.volts_per_2pi, residual_rms_v=rms)
        self._event("reacquired", f"fringe A = {amp:.4g} V, offset {off:.4g} V")
        self._engage()


# ---------------------------------------------------------------------------------------------
_LOCK_KEYS = {
    "setpoint": ("setpoint_rad", "rad"), "period": ("period_s", "s"), "tolerance": ("tolerance_rad", "rad"),
    "volts_per_2pi": ("volts_per_2pi", "V"), "rail_margin": ("rail_margin_v", "V"), "dither": ("dither_rad", "rad"),
    "min_amplitude_fraction": ("min_amplitude_fraction", "1"), "range_margin": ("range_margin", "1"),
    "loss_cycles": ("loss_cycles", int), "scan_points": ("scan_points", int), "settle_cycles": ("settle_cycles", int),
    "max_locking_cycles": ("max_locking_cycles", int), "rescan_cycles": ("rescan_cycles", int),
    "dither_tau_cycles": ("dither_tau_cycles", int), "batch": ("batch", int), "refine_jumps": ("refine_jumps", bool),
    "pin": ("pin", str), "gains": ("gains", dict), "trace": ("trace", dict), "output_range": ("output_range", list),
}
_GAIN_DIMS = {"kp": "1", "ki": "Hz", "kd": "s"}
_TRACE_KEYS = {"cycles": int, "samples_per_cycle": float, "window": list, "window_s": list, "decimation": int,
               "trigger": str, "trigger_delay": int}


def lock_options(config: Any) -> dict[str, Any]:
    """PhaseLock keyword arguments from a station's ``lock:`` section (values with units)::

        lock:
          setpoint: 0.5 pi          # rad
          gains: {kp: 0.3, ki: 3 kHz, kd: 0 s}
          period: 50 us
          tolerance: 0.3 rad
          loss_cycles: 20
          volts_per_2pi: 12 V       # optional: known stretcher constant
          dither: 0.03 rad
          pin: AIN0                 # optional: overrides the lock_detector channel's output
          batch: 50                 # optional: batched reads on IN1/IN2
          trace: {samples_per_cycle: 1, window: [0, 1], decimation: 1, trigger: NOW}

    Errors are InputErrors with the file and line."""
    section = getattr(getattr(config, "model", None), "lock", None) or {}
    doc = getattr(config, "doc", None)

    def err(path: tuple, what: str, fix: str | None = None) -> InputError:
        if doc is not None:
            return doc.error(("lock",) + path, what, fix)
        return InputError(what, fix=fix)

    if not isinstance(section, dict):
        raise err((), "'lock' must be a mapping", "see docs/phaselock.md")
    out: dict[str, Any] = {}
    for key, value in section.items():
        if key not in _LOCK_KEYS:
            raise err((key,), f"unknown lock option '{key}'", "allowed: " + ", ".join(sorted(_LOCK_KEYS)))
        arg, kind = _LOCK_KEYS[key]
        try:
            if kind is int:
                if isinstance(value, bool) or not isinstance(value, int):
                    raise InputError(f"lock.{key} must be a whole number, got {value!r}")
                out[arg] = value
            elif kind is bool:
                if not isinstance(value, bool):
                    raise InputError(f"lock.{key} must be true or false, got {value!r}")
                out[arg] = value
            elif kind is str:
                out[arg] = str(value)
            elif kind is list:
                if not isinstance(value, list) or len(value) != 2:
                    raise InputError(f"lock.{key} must be [low, high]")
                out[arg] = tuple(_units.parse_as(x, "V", where=f"lock.{key}") for x in value)
            elif kind is dict and key == "gains":
                if not isinstance(value, dict):
                    raise InputError("lock.gains must be a mapping {kp, ki, kd}")
                g = {}
                for gk, gv in value.items():
                    if gk not in _GAIN_DIMS:
                        raise err((key, gk), f"unknown gain '{gk}'", "use kp (number), ki (e.g. 3 kHz), kd (s)")
                    g[gk] = _units.parse_as(gv, _GAIN_DIMS[gk], where=f"lock.gains.{gk}")
                out[arg] = LockGains(**g)
            elif kind is dict:
                if not isinstance(value, dict):
                    raise InputError("lock.trace must be a mapping")
                t: dict[str, Any] = {}
                for tk, tv in value.items():
                    if tk not in _TRACE_KEYS:
                        raise err((key, tk), f"unknown trace option '{tk}'", "allowed: " + ", ".join(_TRACE_KEYS))
                    typ = _TRACE_KEYS[tk]
                    t[tk] = tuple(tv) if typ is list else (float(tv) if typ is float else tv)
                out[arg] = t
            else:
                out[arg] = _units.parse_as(value, kind, where=f"lock.{key}")
        except InputError as e:
            if e.file is None and doc is not None:
                raise err((key,), e.what, e.fix) from None
            raise
        except (TypeError, ValueError) as e:
            raise err((key,), f"lock.{key}: {e}") from None
    return out
