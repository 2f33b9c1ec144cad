"""The lab's calibrations as runnable procedures (Riedinger et al. 2018, Supplementary).

Each procedure works on a connected :class:`labctl.station.Station` (instruments found through the
station's channels and roles, or passed explicitly), takes what only the runner can measure as a
callable (herald rates with one arm blocked, filtered count rates, detector count rates), and
returns a :class:`CalibrationResult`: the measured values, the new settings, pass/fail and the
reason. Nothing is hard-coded: tolerances, ranges and limits are arguments with the supplement's
values as defaults.

* :func:`balance_arms` — VOA (Sercalo VP1) until the herald rates of the two interferometer paths
  agree within 2 % ("Entanglement witness and Systematic Errors");
* :func:`align_filter` — FFP-TF2 piezo voltage (Red Pitaya analog out) scanned for maximum
  transmission, Lorentzian fit, hold at the peak ("Experimental setup");
* :func:`check_detectors` — SNSPD bias and count rate, latch detection and recovery (SIM928
  ``reset_latch``);
* :func:`set_laser_wavelength` — TLB-6700 wavelength set, settle and verify;
* :func:`calibrate_fringe` — the phase lock's stretcher sweep (``labctl.phaselock``);
* :func:`find_pairs` and :func:`pair_probability` — device-pair search between two chips and the
  birthday-paradox estimate of "Device fabrication and characterization" (docs/calibrations.md says
  which interpretation reproduces the published 99.9996 %, 99.98 %, 92.7 % and 51.6 %).
"""
from __future__ import annotations

import csv
import inspect
import io
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from . import units as _units
from .errors import InputError, InstrumentError

C_LIGHT = 299_792_458.0  #: m/s


def _json_safe(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    if isinstance(x, np.ndarray):
        return _json_safe(x.tolist())
    return x


@dataclass
class CalibrationResult:
    """Outcome of one procedure: ``measured`` values, the new ``settings``, ``passed`` and why."""

    name: str
    passed: bool
    reason: str
    measured: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    steps: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return _json_safe({"name": self.name, "passed": self.passed, "reason": self.reason,
                           "measured": self.measured, "settings": self.settings, "steps": self.steps})


# -- helpers ---------------------------------------------------------------------------------------
def _number(name: str, value: Any, *, positive: bool = False, nonneg: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or (positive and v <= 0) or (nonneg and v < 0):
        raise InputError(f"{name} = {value!r} must be {'positive' if positive else 'non-negative' if nonneg else 'finite'}")
    return v


def _whole(name: str, value: Any, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise InputError(f"{name} = {value!r} must be a whole number >= {low}")
    return int(value)


def _quantity(name: str, value: Any, dim: str) -> float:
    if isinstance(value, str):
        return _units.parse_as(value, dim, where=name)
    return _number(name, value)


def _resolve(station: Any, given: Any, channel: str, role: str, what: str) -> tuple[Any, Any]:
    """(instrument, output) from an instrument object, an instrument name, the station channel
    ``channel`` or the station's only instrument with ``role``."""
    if given is not None and not isinstance(given, str):
        return given, None
    if station is None:
        raise InputError(f"{what}: no station and no instrument given")
    instruments = getattr(station, "instruments", {})
    if isinstance(given, str):
        cfg_channels = getattr(getattr(station.config, "model", None), "channels", {}) or {}
        if given in instruments:
            return instruments[given], None
        if given in cfg_channels:
            ch = cfg_channels[given]
            return station[ch.instrument], ch.output
        raise InputError(f"{what}: '{given}' is neither an instrument nor a channel of the station",
                         fix="instruments: " + ", ".join(sorted(instruments)))
    cfg = station.config
    channels = cfg.model.channels
    if channel in channels:
        ch = channels[channel]
        return station[ch.instrument], ch.output
    names = [n for n in cfg.instruments_with_role(role) if n in instruments]
    if len(names) == 1:
        return instruments[names[0]], None
    raise InputError(f"{what}: the station maps no channel '{channel}' and has "
                     f"{'no' if not names else 'several'} '{role}' instruments",
                     fix=f"add 'channels: {{{channel}: {{instrument: NAME}}}}' or pass the instrument")


def _rate(value: Any, what: str) -> tuple[float, float]:
    """(rate, uncertainty) from a callable's result: a number or a (rate, uncertainty) pair."""
    if isinstance(value, (tuple, list)) and len(value) == 2:
        r, u = value
    else:
        r, u = value, math.nan
    if isinstance(r, bool) or not isinstance(r, (int, float, np.integer, np.floating)) or not math.isfinite(r) or r < 0:
        raise InstrumentError(what, None, f"count rate {r!r} is not a finite non-negative number")
    u = float(u) if u is not None and isinstance(u, (int, float, np.integer, np.floating)) else math.nan
    return float(r), u


# ---------------------------------------------------------------------------------------------------
# arm balancing
def balance_arms(station: Any, measure_herald_rates: Callable[[str], Any], *, attenuator: Any = None,
                 voa_arm: str = "A", other_arm: str = "B", tolerance: float = 0.02, max_iterations: int = 10,
                 max_step_db: float = 6.0, range_db: tuple[float, float] | None = None) -> CalibrationResult:
    """Set the VOA so that the herald rates of both interferometer paths agree within ``tolerance``
    (relative difference ``(R_voa − R_other)/mean``; supplement: below 2 %).

    ``measure_herald_rates(arm) -> rate`` or ``(rate, uncertainty)`` (Hz) is the runner's: block
    the other arm and count heralds with the tagger. ``voa_arm`` is the arm the VOA attenuates.

    Search: the VOA arm's rate falls by 1 dB per dB of attenuation, so the excess
    ``g = 10 log10(R_voa/R_other)`` (dB) is driven to zero by Newton steps with that slope, replaced
    by the secant slope once two points are known (and it is plausible, −0.3…−3 dB/dB), kept
    inside the bracket of points with opposite signs of ``g`` (bisection when a step leaves it),
    at most ``max_step_db`` per step and ``max_iterations`` settings. If the target lies outside
    the attenuator's range the procedure fails at once, saying which way the coupling ratio (the
    variable ratio coupler in front of the interferometer) must go. On failure the best setting
    found is kept."""
    voa, _ = _resolve(station, attenuator, "arm_balance", "attenuator", "balance_arms")
    tol = _number("tolerance", tolerance, positive=True)
    if tol >= 1:
        raise InputError(f"tolerance {tolerance!r} is a fraction (0.02 = 2 %)")
    iters = _whole("max_iterations", max_iterations)
    max_step = _number("max_step_db", max_step_db, positive=True)
    if range_db is not None:
        lo, hi = (_number("range_db", x) for x in range_db)
    elif hasattr(voa, "attenuation_range"):
        lo, hi = voa.attenuation_range
    else:
        raise InputError("balance_arms: the attenuator has no attenuation_range; pass range_db=(lo, hi)")
    name = getattr(voa, "name", "voa")
    x = float(voa.attenuation())
    x0 = x
    steps: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    lo_b, hi_b = -math.inf, math.inf   # solution lies in (lo_b, hi_b)
    prev: tuple[float, float] | None = None
    reason = ""
    passed = False
    for it in range(iters + 1):
        ra, ua = _rate(measure_herald_rates(voa_arm), f"herald rate of arm {voa_arm}")
        rb, ub = _rate(measure_herald_rates(other_arm), f"herald rate of arm {other_arm}")
        if ra <= 0 or rb <= 0:
            dark = voa_arm if ra <= 0 else other_arm
            reason = (f"no heralds in arm {dark} (rate 0): is the arm open, the pump on, the detectors biased?")
            steps.append({"attenuation_db": x, "rate_voa_arm": ra, "rate_other_arm": rb})
            break
        mean = 0.5 * (ra + rb)
        d = (ra - rb) / mean
        rel_u = math.hypot(ua / ra if math.isfinite(ua) else 0.0, ub / rb if math.isfinite(ub) else 0.0)
        g = 10.0 * math.log10(ra / rb)
        step = {"attenuation_db": x, "rate_voa_arm": ra, "rate_other_arm": rb, "relative_difference": d,
                "uncertainty": rel_u if (math.isfinite(ua) or math.isfinite(ub)) else None}
        steps.append(step)
        if best is None or abs(d) < abs(best["relative_difference"]):
            best = step
        if abs(d) <= tol:
            passed = True
            reason = f"herald rates agree within {abs(d):.2%} (tolerance {tol:.2%}) after {it} change(s)"
            if rel_u > tol:
                reason += f"; note: measurement uncertainty ±{rel_u:.2%} exceeds the tolerance — count longer"
            break
        if it == iters:
            reason = (f"not balanced after {iters} settings: best {best['relative_difference']:+.2%} at "
                      f"{best['attenuation_db']:.3f} dB (kept)")
            break
        if g > 0:
            lo_b = max(lo_b, x)
        else:
            hi_b = min(hi_b, x)
        slope = -1.0
        if prev is not None and abs(x - prev[0]) > 0.01:
            s = (g - prev[1]) / (x - prev[0])
            if -3.0 < s < -0.3:
                slope = s
        prev = (x, g)
        new = x - g / slope
        new = min(max(new, x - max_step), x + max_step)
        if math.isfinite(lo_b) and math.isfinite(hi_b) and not lo_b < new < hi_b:
            new = 0.5 * (lo_b + hi_b)
        new = min(max(new, lo), hi)
        if abs(new - x) < 1e-9:
            if g > 0:
                reason = (f"the VOA arm ({voa_arm}) is {d:+.1%} stronger even at the maximum attenuation "
                          f"{hi:g} dB: shift the coupling ratio (VRC) towards arm {other_arm}")
            else:
                reason = (f"the VOA arm ({voa_arm}) is {d:+.1%} weaker even at the minimum attenuation "
                          f"{lo:g} dB: shift the coupling ratio (VRC) towards arm {voa_arm}")
            break
        voa.set_attenuation(new)
        x = new
    if not passed and best is not None and abs(best["attenuation_db"] - x) > 1e-9:
        voa.set_attenuation(best["attenuation_db"])
        x = best["attenuation_db"]
    final = best if not passed else steps[-1]
    measured = {"relative_difference": final["relative_difference"] if final else None,
                "rate_voa_arm": final["rate_voa_arm"] if final else None,
                "rate_other_arm": final["rate_other_arm"] if final else None,
                "uncertainty": final.get("uncertainty") if final else None,
                "iterations": len(steps), "initial_attenuation_db": x0}
    return CalibrationResult("balance_arms", passed, reason, measured,
                             {"instrument": name, "attenuation_db": x}, steps)


# ---------------------------------------------------------------------------------------------------
# filter alignment
def lorentzian(v: np.ndarray, background: float, amplitude: float, center: float, hwhm: float) -> np.ndarray:
    return background + amplitude / (1.0 + ((v - center) / hwhm) ** 2)


def fit_peak(volts: Sequence[float], rates: Sequence[float], *, min_snr: float = 5.0) -> dict[str, Any]:
    """Lorentzian fit of the highest transmission peak of a scan.

    Returns ``center``, ``hwhm``, ``amplitude``, ``background`` and ``ok``/``reason``. The peak must
    stand ``min_snr`` × the scan's robust noise (MAD) above its median, must not sit at the scan's
    edge, and the fit's centre must lie inside the fitted points. Only the points around the
    highest peak are fitted (an FFP-TF2 scan over more than one free spectral range shows several)."""
    from scipy.optimize import curve_fit

    v = np.asarray(volts, dtype=float)
    r = np.asarray(rates, dtype=float)
    out: dict[str, Any] = {"ok": False, "reason": ""}
    if v.size < 5 or v.size != r.size:
        out["reason"] = f"need >= 5 scan points, got {v.size}"
        return out
    i = int(np.argmax(r))
    base = float(np.median(r))
    excess = float(r[i] - base)
    noise = 1.4826 * float(np.median(np.abs(r - base)))
    noise = max(noise, 1e-9 * max(abs(float(r[i])), 1.0))
    out.update(peak_index=i, peak_voltage=float(v[i]), peak_rate=float(r[i]), median_rate=base, noise=noise)
    if excess < min_snr * noise:
        out["reason"] = (f"no transmission peak: max {r[i]:.4g} Hz is only {excess / noise:.1f} × the noise above the "
                         f"median {base:.4g} Hz (need {min_snr:g})")
        return out
    if i == 0 or i == v.size - 1:
        out["reason"] = f"the highest rate is at the edge of the scan ({v[i]:.4g} V): widen or shift the scan range"
        return out
    half = base + 0.5 * excess
    a = i
    while a > 0 and r[a - 1] > base + 0.2 * excess:
        a -= 1
    b = i
    while b < v.size - 1 and r[b + 1] > base + 0.2 * excess:
        b += 1
    a, b = max(0, a - 3), min(v.size - 1, b + 3)
    if b - a < 4:
        a, b = max(0, i - 2), min(v.size - 1, i + 2)
    vs, rs = v[a:b + 1], r[a:b + 1]
    above = vs[rs > half]
    step = float(np.median(np.diff(v))) if v.size > 1 else 1.0
    hw0 = max(0.5 * (above.max() - above.min()) if above.size else 0.0, 0.5 * abs(step))
    try:
        p, cov = curve_fit(lorentzian, vs, rs, p0=[base, excess, v[i], hw0],
                           bounds=([-np.inf, 0.0, vs[0], abs(step) / 20], [np.inf, np.inf, vs[-1], abs(v[-1] - v[0])]),
                           maxfev=20000)
    except (RuntimeError, ValueError) as e:
        out["reason"] = f"Lorentzian fit failed: {e}"
        return out
    bg, amp, c, hw = (float(x) for x in p)
    err = np.sqrt(np.clip(np.diag(cov), 0, np.inf)) if np.all(np.isfinite(cov)) else np.full(4, np.nan)
    out.update(background=bg, amplitude=amp, center=c, hwhm=abs(hw), center_error=float(err[2]),
               fit_points=int(vs.size))
    if not vs[0] < c < vs[-1]:
        out["reason"] = f"fitted centre {c:.4g} V lies outside the fitted points {vs[0]:.4g}..{vs[-1]:.4g} V"
        return out
    out["ok"] = True
    return out


def _aout_range(inst: Any, pin: str) -> tuple[float, float] | None:
    comp = getattr(inst, "_components", {}).get(str(pin).lower())
    spec = getattr(type(comp), "voltage", None) if comp is not None else None
    if spec is None or not hasattr(spec, "limits_for"):
        return None
    lim = spec.limits_for(comp)
    return (float(lim[0]), float(lim[1])) if lim is not None else None


def align_filter(station: Any, count_rate: Callable[[], Any], *, filter: Any = "filter_1", pin: str | None = None,
                 v_range: tuple[float, float] | None = None, points: int = 41, refine_points: int = 21,
                 settle_s: float = 0.0, min_snr: float = 5.0, hold_fraction: float = 0.7,
                 sleep: Callable[[float], None] = time.sleep) -> CalibrationResult:
    """Scan an FFP-TF2 filter's piezo voltage for maximum transmitted count rate, fit the peak
    (Lorentzian), then hold at its centre.

    ``filter``: a station channel (``filter_1`` → Red Pitaya ``AOUT0``), an instrument name, or an
    instrument object (then ``pin``). ``count_rate() -> Hz`` (or ``(Hz, uncertainty)``) is the
    runner's (tagger counts behind the filter). ``v_range`` defaults to the pin's allowed range
    (0–1.8 V narrowed by station limits). A finer scan of ±3 half-widths follows the coarse one
    (``refine_points``; 0 to skip). Scans run upwards and the hold voltage is approached from below
    (piezo hysteresis). The rate at the hold point must reach ``hold_fraction`` of the fitted peak.
    On failure the piezo goes back to where it was."""
    inst, out_pin = _resolve(station, filter, "filter_1", "analog_out", "align_filter")
    pin = pin or (str(out_pin) if out_pin is not None else None)
    if pin is None:
        raise InputError("align_filter: which analog output drives the filter? pass pin='AOUT0'")
    points = _whole("points", points, 5)
    refine_points = _whole("refine_points", refine_points, 0)
    settle = _number("settle_s", settle_s, nonneg=True)
    if v_range is None:
        v_range = _aout_range(inst, pin)
        if v_range is None:
            raise InputError("align_filter: cannot tell the output's range; pass v_range=(lo, hi)")
    lo, hi = (_quantity("v_range", x, "V") for x in v_range)
    if not lo < hi:
        raise InputError(f"align_filter: empty voltage range {lo:g}..{hi:g} V")
    allowed = _aout_range(inst, pin)
    if allowed is not None and (lo < allowed[0] - 1e-12 or hi > allowed[1] + 1e-12):
        raise InputError(f"align_filter: range {lo:g}..{hi:g} V exceeds the allowed {allowed[0]:g}..{allowed[1]:g} V "
                         f"of {getattr(inst, 'name', inst)}.{pin}")
    initial = None
    try:
        initial = float(inst.read_voltage(pin))
    except Exception:  # not every analog output reads back; restoring is then skipped
        initial = None
    name = getattr(inst, "name", "filter")

    def scan(vs: np.ndarray) -> np.ndarray:
        rates = []
        for v in vs:
            inst.set_voltage(pin, float(v))
            if settle:
                sleep(settle)
            rates.append(_rate(count_rate(), "filtered count rate")[0])
        return np.asarray(rates)

    volts = np.linspace(lo, hi, points)
    rates = scan(volts)
    fit = fit_peak(volts, rates, min_snr=min_snr)
    steps = [{"scan": "coarse", "volts": volts, "rates": rates}]

    def fail(reason: str) -> CalibrationResult:
        if initial is not None:
            inst.set_voltage(pin, initial)
        return CalibrationResult("align_filter", False, reason,
                                 {k: v for k, v in fit.items() if k not in ("ok", "reason")},
                                 {"instrument": name, "pin": pin, "voltage": initial}, steps)

    if not fit["ok"]:
        return fail(fit["reason"])
    if refine_points >= 5:
        c, hw = fit["center"], fit["hwhm"]
        a, b = max(lo, c - 3 * hw), min(hi, c + 3 * hw)
        if b - a > 1e-9:
            v2 = np.linspace(a, b, refine_points)
            r2 = scan(v2)
            steps.append({"scan": "fine", "volts": v2, "rates": r2})
            fit2 = fit_peak(v2, r2, min_snr=min_snr)
            if fit2["ok"]:
                fit = fit2
    c = fit["center"]
    approach = max(lo, c - 3 * fit["hwhm"])
    inst.set_voltage(pin, approach)
    inst.set_voltage(pin, c)
    if settle:
        sleep(settle)
    held = _rate(count_rate(), "filtered count rate")[0]
    peak = fit["background"] + fit["amplitude"]
    fit["rate_at_hold"] = held
    fit["fwhm"] = 2 * fit["hwhm"]
    if held < hold_fraction * peak:
        return fail(f"the rate at the fitted peak {c:.4g} V is {held:.4g} Hz, only {held / peak:.0%} of the fitted "
                    f"{peak:.4g} Hz (filter drift or piezo hysteresis?): re-run")
    measured = {k: v for k, v in fit.items() if k not in ("ok", "reason")}
    return CalibrationResult("align_filter", True,
                             f"peak at {c:.4g} V (FWHM {2 * fit['hwhm']:.3g} V), {held:.4g} Hz at the hold point",
                             measured, {"instrument": name, "pin": pin, "voltage": c}, steps)


# ---------------------------------------------------------------------------------------------------
# SNSPD bias check and latch recovery
@dataclass(frozen=True)
class DetectorSpec:
    """One detector: its bias source (instrument, port) and count-rate key; optional expectations."""

    name: str
    bias: Any
    port: int | None = None
    bias_v: float | None = None
    bias_tolerance_v: float = 0.01
    min_rate_hz: float | None = None
    max_rate_hz: float | None = None

    @property
    def source(self) -> Any:
        """The bias source itself: the SIM928 port's component, or the instrument."""
        return self.bias.port(self.port) if (self.port is not None and hasattr(self.bias, "port")) else self.bias


def station_detectors(station: Any, expected: dict[str, dict[str, Any]] | None = None) -> list[DetectorSpec]:
    """Detectors of a station: channels ``detector_<n>_bias`` (bias instrument and port); the
    expectations come from ``expected`` or the station file's ``calibration: {snspd: {detector_1:
    {bias: 1.2 V, min_rate: 10 Hz, max_rate: 1 MHz}}}``."""
    cfg = station.config
    chans = cfg.model.channels
    if expected is None:
        expected = (cfg.model.calibration or {}).get("snspd", {}) or {}
    out = []
    for role in sorted(chans):
        if not (role.startswith("detector_") and role.endswith("_bias")):
            continue
        det = role[: -len("_bias")]
        ch = chans[role]
        exp = expected.get(det, {}) or {}
        if not isinstance(exp, dict):
            raise InputError(f"calibration.snspd.{det} must be a mapping (bias, min_rate, max_rate)", file=cfg.path)
        unknown = set(exp) - {"bias", "bias_tolerance", "min_rate", "max_rate"}
        if unknown:
            raise InputError(f"calibration.snspd.{det}: unknown key(s) {', '.join(sorted(unknown))}", file=cfg.path,
                             line=cfg.doc.line(("calibration", "snspd", det)),
                             fix="use bias, bias_tolerance, min_rate, max_rate")

        def q(key: str, dim: str) -> float | None:
            return None if exp.get(key) is None else _units.parse_as(exp[key], dim, where=f"calibration.snspd.{det}.{key}")

        port = int(ch.output) if ch.output is not None else None
        out.append(DetectorSpec(det, station[ch.instrument], port, q("bias", "V"), q("bias_tolerance", "V") or 0.01,
                                q("min_rate", "Hz"), q("max_rate", "Hz")))
    if not out:
        raise InputError("the station maps no 'detector_<n>_bias' channels", file=cfg.path,
                         fix="add e.g. 'detector_1_bias: {instrument: snspd_bias, output: 1}' under channels")
    return out


def check_detectors(station: Any, count_rate: Callable[[str], Any], *, detectors: Sequence[DetectorSpec] | None = None,
                    latch_rate_hz: float = 1.0, min_bias_v: float = 1e-3, settle_s: float = 0.1,
                    recovery_s: float = 0.0, max_resets: int = 2, apply_bias: bool = False,
                    sleep: Callable[[float], None] = time.sleep) -> CalibrationResult:
    """Check each SNSPD: biased (output on, bias above ``min_bias_v``, near its expected bias),
    counting (``count_rate(name) -> Hz``) within its expected window; a detector that is biased but
    counts below ``latch_rate_hz`` has latched (the nanowire stays normal-conducting) and is reset
    with its bias source's ``reset_latch(settle_s)`` (bias to 0 V and back) up to ``max_resets``
    times, then verified. The bias is raised only with ``apply_bias`` and only to a detector's
    expected ``bias_v`` (output switched on); otherwise an unbiased detector fails the check."""
    dets = list(detectors) if detectors is not None else station_detectors(station)
    latch = _number("latch_rate_hz", latch_rate_hz, nonneg=True)
    max_resets = _whole("max_resets", max_resets, 0)
    _number("settle_s", settle_s, nonneg=True)
    _number("recovery_s", recovery_s, nonneg=True)
    results = {}
    steps = []
    all_ok = True
    reasons = []
    for d in dets:
        src = d.source
        if apply_bias and d.bias_v is not None:
            src.set_bias(d.bias_v)
            src.set_output(True)
            steps.append({"detector": d.name, "action": "apply_bias", "bias_v": d.bias_v})
            if recovery_s:
                sleep(recovery_s)
        bias = float(src.bias())
        out_on = getattr(src, "output", None)
        out_on = bool(out_on) if out_on is not None else None
        r0, _ = _rate(count_rate(d.name), f"{d.name} count rate")
        rec: dict[str, Any] = {"bias_v": bias, "output": out_on, "rate_hz": r0, "initial_rate_hz": r0,
                               "latched": False, "resets": 0, "passed": False, "reason": ""}
        results[d.name] = rec
        steps.append({"detector": d.name, "action": "measure", "bias_v": bias, "rate_hz": r0})
        if out_on is False or abs(bias) < min_bias_v:
            rec["reason"] = (f"not biased (output {'off' if out_on is False else 'on'}, {bias:g} V): bias it first, or "
                             "give its expected bias (calibration.snspd) and apply it")
        elif d.bias_v is not None and abs(bias - d.bias_v) > d.bias_tolerance_v:
            rec["reason"] = f"bias {bias:.4g} V differs from the expected {d.bias_v:.4g} V by more than {d.bias_tolerance_v:g} V"
        else:
            r = r0
            if r < latch:
                rec["latched"] = True
                while r < latch and rec["resets"] < max_resets:
                    src.reset_latch(settle_s)
                    rec["resets"] += 1
                    if recovery_s:
                        sleep(recovery_s)
                    r, _ = _rate(count_rate(d.name), f"{d.name} count rate")
                    steps.append({"detector": d.name, "action": "reset_latch", "rate_hz": r})
                rec["rate_hz"] = r
            if r < latch:
                rec["reason"] = (f"latched: {r:.3g} Hz < {latch:g} Hz at {bias:.4g} V after {rec['resets']} reset(s) — "
                                 "lower the bias or the light level")
            elif d.min_rate_hz is not None and r < d.min_rate_hz:
                rec["reason"] = f"count rate {r:.4g} Hz below the expected {d.min_rate_hz:.4g} Hz at {bias:.4g} V"
            elif d.max_rate_hz is not None and r > d.max_rate_hz:
                rec["reason"] = (f"count rate {r:.4g} Hz above the expected {d.max_rate_hz:.4g} Hz at {bias:.4g} V "
                                 "(light leak, or bias too close to the switching current)")
            else:
                rec["passed"] = True
                rec["reason"] = (f"recovered from a latch after {rec['resets']} reset(s): {r:.4g} Hz" if rec["latched"]
                                 else f"{r:.4g} Hz at {bias:.4g} V")
        if not rec["passed"]:
            all_ok = False
        reasons.append(f"{d.name}: {rec['reason']}")
    return CalibrationResult("check_detectors", all_ok, "; ".join(reasons), results,
                             {name: {"bias_v": rec["bias_v"]} for name, rec in results.items()}, steps)


# ---------------------------------------------------------------------------------------------------
# laser wavelength
def set_laser_wavelength(station: Any, wavelength: float | str, *, laser: Any = "read_laser",
                         tolerance: float | str = 5e-12, settle_timeout_s: float = 10.0, poll_interval_s: float = 0.05,
                         stable_reads: int = 3, move_timeout_s: float | None = None, retries: int = 1,
                         sleep: Callable[[float], None] = time.sleep,
                         clock: Callable[[], float] = time.monotonic) -> CalibrationResult:
    """Set a laser's wavelength, wait for the move, then poll ``measured_wavelength()`` until
    ``stable_reads`` consecutive readings lie within ``tolerance`` (default 5 pm ≈ 0.6 GHz) of the
    target, for at most ``settle_timeout_s``. A laser that does not settle (a mode hop leaves the
    measured wavelength off) gets the set point again ``retries`` times. ``laser``: instrument
    name, object, or the station's only laser."""
    target = _quantity("wavelength", wavelength, "m")
    if not 1e-7 < target < 1e-5:
        raise InputError(f"wavelength {wavelength!r} is not an optical wavelength", fix="e.g. 1553.8 nm")
    tol = _quantity("tolerance", tolerance, "m")
    if tol <= 0:
        raise InputError("tolerance must be positive")
    limit = _number("settle_timeout_s", settle_timeout_s, positive=True)
    poll = _number("poll_interval_s", poll_interval_s, nonneg=True)
    stable = _whole("stable_reads", stable_reads)
    retries = _whole("retries", retries, 0)
    if isinstance(laser, str) and station is not None and laser not in station.instruments:
        names = station.config.instruments_with_role("laser")
        raise InputError(f"set_laser_wavelength: no instrument '{laser}'",
                         fix="lasers of the station: " + (", ".join(names) or "none"))
    inst, _ = _resolve(station, laser, "", "laser", "set_laser_wavelength")
    name = getattr(inst, "name", "laser")
    kw = {}
    if move_timeout_s is not None:
        try:
            if "timeout_s" in inspect.signature(inst.set_wavelength).parameters:
                kw["timeout_s"] = _number("move_timeout_s", move_timeout_s, positive=True)
        except (TypeError, ValueError):
            pass
    steps = []
    t_start = clock()
    last = math.nan
    for attempt in range(retries + 1):
        inst.set_wavelength(target, wait=True, **kw)
        t0 = clock()
        good: list[float] = []
        while True:
            m = float(inst.measured_wavelength())
            last = m
            steps.append({"attempt": attempt, "t_s": clock() - t_start, "measured_m": m, "error_m": m - target})
            good = good + [m] if abs(m - target) <= tol else []
            if len(good) >= stable:
                mean = float(np.mean(good))
                return CalibrationResult(
                    "set_laser_wavelength", True,
                    f"{name} at {mean * 1e9:.4f} nm ({(mean - target) * 1e12:+.2f} pm) after {clock() - t_start:.3g} s"
                    + (f" and {attempt} re-set(s)" if attempt else ""),
                    {"measured_m": mean, "error_m": mean - target, "settle_time_s": clock() - t_start,
                     "attempts": attempt + 1},
                    {"instrument": name, "wavelength_m": target}, steps)
            if clock() - t0 > limit:
                break
            sleep(poll)
    return CalibrationResult(
        "set_laser_wavelength", False,
        f"{name} reads {last * 1e9:.4f} nm, {(last - target) * 1e12:+.1f} pm from the set point "
        f"{target * 1e9:.4f} nm after {limit:g} s and {retries} re-set(s) (tolerance {tol * 1e12:g} pm): mode hop? "
        "adjust the diode current or re-tune",
        {"measured_m": last, "error_m": last - target, "settle_time_s": clock() - t_start, "attempts": retries + 1},
        {"instrument": name, "wavelength_m": target}, steps)


# ---------------------------------------------------------------------------------------------------
# phase-lock fringe
def calibrate_fringe(station: Any, **lock_overrides: Any) -> CalibrationResult:
    """Sweep the fiber stretcher and fit the balanced-detector fringe (the phase lock's
    calibration; :meth:`labctl.phaselock.PhaseLock.calibrate_fringe`)."""
    from .phaselock import PhaseLock

    lock = PhaseLock.from_station(station, **lock_overrides)
    try:
        cal = lock.calibrate_fringe()
    except InstrumentError as e:
        return CalibrationResult("fringe", False, e.message, {}, {})
    return CalibrationResult("fringe", True,
                             f"fringe amplitude {cal.amplitude_v:.4g} V, V_2π {cal.volts_per_2pi:.4g} V",
                             cal.to_dict(), {"lock.volts_per_2pi_v": cal.volts_per_2pi})


# ---------------------------------------------------------------------------------------------------
# device pairs
@dataclass(frozen=True)
class DevicePair:
    index_a: int
    index_b: int
    label_a: str
    label_b: str
    wavelength_a_nm: float
    wavelength_b_nm: float
    detuning_hz: float     #: ν_a − ν_b

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _wavelengths(name: str, values: Sequence[float]) -> np.ndarray:
    a = np.asarray(values, dtype=float).reshape(-1)
    if not np.all(np.isfinite(a)) or np.any(a <= 0):
        raise InputError(f"{name}: wavelengths must be finite and positive (nm)")
    return a


def find_pairs(chip_a_nm: Sequence[float], chip_b_nm: Sequence[float], criterion_hz: float = 100e6, *,
               labels_a: Sequence[str] | None = None, labels_b: Sequence[str] | None = None) -> list[DevicePair]:
    """All device pairs (one per chip) whose optical frequencies ν = c/λ differ by at most
    ``criterion_hz`` (default 100 MHz: 10 % of the linewidth, supplement). Sort + two pointers:
    O((n + m) log(n + m) + pairs). Sorted by |detuning|."""
    a = _wavelengths("chip A", chip_a_nm)
    b = _wavelengths("chip B", chip_b_nm)
    crit = _number("criterion_hz", criterion_hz, nonneg=True)
    la = list(labels_a) if labels_a is not None else [str(i) for i in range(a.size)]
    lb = list(labels_b) if labels_b is not None else [str(i) for i in range(b.size)]
    fa = C_LIGHT / (a * 1e-9)
    fb = C_LIGHT / (b * 1e-9)
    oa = np.argsort(fa, kind="stable")
    ob = np.argsort(fb, kind="stable")
    fbs = fb[ob]
    out = []
    j0 = 0
    m = fbs.size
    for i in oa:
        f = fa[i]
        while j0 < m and fbs[j0] < f - crit:
            j0 += 1
        j = j0
        while j < m and fbs[j] <= f + crit:
            k = int(ob[j])
            out.append(DevicePair(int(i), k, la[i], lb[k], float(a[i]), float(b[k]), float(f - fbs[j])))
            j += 1
    out.sort(key=lambda p: (abs(p.detuning_hz), p.index_a, p.index_b))
    return out


def load_resonances(path: str | Path) -> tuple[np.ndarray, list[str]]:
    """Resonance wavelengths (nm) and device labels from a chip file.

    CSV: one row per device; a header names the columns (``wavelength``, ``wavelength_nm``,
    ``lambda``, … and optionally ``device``/``name``/``id``); without a header the last column holds
    the wavelength in nm. YAML: a list of wavelengths (numbers in nm or quantities such as
    ``1550.2 nm``), a mapping label → wavelength, or a mapping with ``resonances``/``wavelengths``
    holding either."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"no such file: {path}", file=str(path), fix="give the path of a chip's resonance list")
    if p.suffix.lower() in (".yaml", ".yml"):
        return _load_resonances_yaml(p)
    return _load_resonances_csv(p)


def _nm(value: Any, file: str, line: int | None) -> float:
    try:
        if isinstance(value, str) and any(ch.isalpha() for ch in value):
            v = _units.parse_as(value, "m", where="wavelength") * 1e9
        else:
            v = float(value)
    except (ValueError, TypeError, InputError):
        raise InputError(f"cannot read {value!r} as a wavelength", file=file, line=line,
                         fix="write a number in nm (1550.21) or a quantity (1550.21 nm)") from None
    if not (math.isfinite(v) and 100.0 < v < 10000.0):
        raise InputError(f"wavelength {value!r} is not an optical wavelength in nm", file=file, line=line,
                         fix="write wavelengths in nm, e.g. 1550.21")
    return v


def _load_resonances_yaml(p: Path) -> tuple[np.ndarray, list[str]]:
    from .yamlio import load_yaml

    doc = load_yaml(p)
    data = doc.data
    path: tuple = ()
    if isinstance(data, dict):
        for key in ("resonances", "wavelengths", "devices"):
            if key in data:
                data, path = data[key], (key,)
                break
    vals, labels = [], []
    if isinstance(data, list):
        for i, v in enumerate(data):
            vals.append(_nm(v, str(p), doc.line(path + (i,))))
            labels.append(str(i))
    elif isinstance(data, dict):
        for k, v in data.items():
            vals.append(_nm(v, str(p), doc.line(path + (k,))))
            labels.append(str(k))
    else:
        raise InputError("a chip file holds a list of wavelengths or a mapping label -> wavelength", file=str(p), line=1,
                         fix="e.g. 'resonances: [1550.21, 1551.03 nm, ...]'")
    if not vals:
        raise InputError("the chip file lists no resonances", file=str(p), line=1)
    return np.asarray(vals), labels


_WL_COLUMNS = ("wavelength_nm", "wavelength", "lambda_nm", "lambda", "resonance_nm", "resonance", "wl")
_LABEL_COLUMNS = ("device", "name", "id", "label")


def _load_resonances_csv(p: Path) -> tuple[np.ndarray, list[str]]:
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read the chip file: {e}", file=str(p)) from None
    rows = [(n, r) for n, r in enumerate(csv.reader(io.StringIO(text)), start=1)
            if r and any(c.strip() for c in r) and not r[0].lstrip().startswith("#")]
    if not rows:
        raise InputError("the chip file lists no resonances", file=str(p), line=1)
    head = [c.strip().lower() for c in rows[0][1]]

    def is_num(c: str) -> bool:
        try:
            float(c)
            return True
        except ValueError:
            return False

    wl_col, lab_col = -1, None
    if not all(is_num(c) for c in head if c) or not head:
        norm = [h.replace(" ", "").replace("(nm)", "_nm").replace("[nm]", "_nm").replace("__", "_") for h in head]
        for name in _WL_COLUMNS:
            if name in norm:
                wl_col = norm.index(name)
                break
        else:
            raise InputError(f"no wavelength column in the header {rows[0][1]!r}", file=str(p), line=rows[0][0],
                             fix="name the column 'wavelength_nm' (or drop the header)")
        for name in _LABEL_COLUMNS:
            if name in norm:
                lab_col = norm.index(name)
                break
        rows = rows[1:]
    vals, labels = [], []
    for n, r in rows:
        if len(r) <= (wl_col if wl_col >= 0 else 0):
            raise InputError(f"row has {len(r)} column(s)", file=str(p), line=n, fix="one device per row")
        vals.append(_nm(r[wl_col].strip(), str(p), n))
        labels.append(r[lab_col].strip() if lab_col is not None and lab_col < len(r) else str(len(labels)))
    if not vals:
        raise InputError("the chip file lists no resonances", file=str(p), line=1)
    return np.asarray(vals), labels


# ---------------------------------------------------------------------------------------------------
# birthday-paradox pair probability
@dataclass(frozen=True)
class PairProbability:
    """Probability that matching devices exist (see :func:`pair_probability`)."""

    probability: float
    method: str
    chips: int
    devices: tuple[int, ...]
    spread_m: float
    offsets_m: tuple[float, ...]
    criterion_hz: float
    criterion_m: float
    wavelength_m: float
    expected_matches: float | None = None
    match_probability: float | None = None
    samples: int | None = None
    seed: int | None = None
    stderr: float | None = None
    group: str = "all"

    def to_dict(self) -> dict[str, Any]:
        return _json_safe(dict(self.__dict__))


def pair_probability(devices: int | Sequence[int] = 234, spread_m: float | str = 2e-9,
                     criterion_hz: float | str = 100e6, offset_m: float | str | Sequence[float] = 0.0, *,
                     chips: int = 2, wavelength_m: float | str = 1550e-9, method: str = "analytic",
                     samples: int = 20000, seed: int | None = 0, group: str = "all") -> PairProbability:
    """Probability that ``chips`` chips of ``devices`` resonances each, Gaussian-distributed in
    wavelength with standard deviation ``spread_m`` and chip centres offset by ``offset_m``, hold at
    least one matching set (one device per chip, frequencies within ``criterion_hz``; converted to
    a wavelength window ``δλ = λ² Δν / c`` at ``wavelength_m``).

    ``method="analytic"`` — the birthday-paradox estimate of the supplement: a device of chip 1 and
    one of chip j match with probability ``p_j = P(|λ_1 − λ_j| ≤ δλ)`` for independent Gaussians
    (``Φ((δλ − Δ_j)/√2σ) − Φ((−δλ − Δ_j)/√2σ)``); a set matches with ``q = Π_j p_j`` (each further
    chip matched to chip 1's device, the events taken as independent); with ``M = Π N_i`` candidate
    sets, ``P = 1 − (1 − q)^M``. Reproduces 99.9996 %, 99.98 % and, within 0.2 percentage points,
    92.7 % and 51.6 % (docs/calibrations.md).

    ``method="montecarlo"`` — the exact probability by simulation (``samples`` chip sets, ``seed``):
    ``group="all"`` needs every pair of the set within the criterion, ``group="reference"`` every
    device within the criterion of chip 1's device. For two chips both are the pair criterion.
    The analytic value ignores that candidate sets share devices, so it overestimates for three or
    more chips and slightly for two at large offsets."""
    chips = _whole("chips", chips, 2)
    if isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
        ns = (_whole("devices", devices),) * chips
    else:
        ns = tuple(_whole("devices", d) for d in devices)
        if len(ns) != chips:
            raise InputError(f"devices lists {len(ns)} chips but chips = {chips}")
    sigma = _quantity("spread", spread_m, "m")
    if sigma <= 0:
        raise InputError("spread must be positive", fix="e.g. 2 nm")
    crit = _quantity("criterion", criterion_hz, "Hz")
    if crit < 0:
        raise InputError("criterion must be >= 0", fix="e.g. 100 MHz")
    lam = _quantity("wavelength", wavelength_m, "m")
    if not 1e-7 < lam < 1e-5:
        raise InputError(f"wavelength {wavelength_m!r} is not an optical wavelength", fix="e.g. 1550 nm")
    if isinstance(offset_m, (list, tuple, np.ndarray)):
        offs = tuple(_quantity("offset", o, "m") for o in offset_m)
        if len(offs) != chips - 1:
            raise InputError(f"give {chips - 1} offset(s) (chips 2..{chips} relative to chip 1), got {len(offs)}")
    else:
        offs = (_quantity("offset", offset_m, "m"),) * (chips - 1)
    if group not in ("all", "reference"):
        raise InputError(f"group {group!r}: use 'all' or 'reference'")
    delta = lam * lam * crit / C_LIGHT
    common = dict(chips=chips, devices=ns, spread_m=sigma, offsets_m=offs, criterion_hz=crit, criterion_m=delta,
                  wavelength_m=lam, group=group)
    if method == "analytic":
        from scipy.stats import norm

        s2 = math.sqrt(2.0) * sigma
        ps = [float(norm.cdf((delta - o) / s2) - norm.cdf((-delta - o) / s2)) for o in offs]
        q = math.prod(ps)
        log_m = sum(math.log(n) for n in ns)
        expected = math.exp(log_m) * q
        prob = -math.expm1(math.exp(log_m) * math.log1p(-q)) if q < 1 else 1.0
        return PairProbability(prob, "analytic", expected_matches=expected, match_probability=q, **common)
    if method == "montecarlo":
        n_s = _whole("samples", samples)
        prob = _montecarlo(ns, sigma, offs, delta, n_s, seed, group)
        return PairProbability(prob, "montecarlo", samples=n_s, seed=seed,
                               stderr=math.sqrt(max(prob * (1 - prob), 0.0) / n_s), **common)
    raise InputError(f"method {method!r}: use 'analytic' or 'montecarlo'")


def _montecarlo(ns: tuple[int, ...], sigma: float, offs: tuple[float, ...], delta: float, samples: int,
                seed: int | None, group: str) -> float:
    """Fraction of simulated chip sets holding a matching set (vectorised: merged, sorted
    wavelengths; a window of width δ starting at each device collects the chips present)."""
    rng = np.random.default_rng(seed)
    k = len(ns)
    centers = (0.0,) + offs
    labels = np.concatenate([np.full(n, c, dtype=np.int64) for c, n in enumerate(ns)])
    bits_all = (1 << k) - 1
    total = int(sum(ns))
    chunk = max(1, min(samples, 2_000_000 // total))
    hits = 0
    done = 0
    while done < samples:
        m = min(chunk, samples - done)
        x = np.concatenate([rng.normal(centers[c], sigma, (m, n)) for c, n in enumerate(ns)], axis=1)
        order = np.argsort(x, axis=1)
        x = np.take_along_axis(x, order, axis=1)
        bits = np.left_shift(1, labels[order])
        acc = bits.copy()
        L = x.shape[1]
        if group == "all":
            j = 1
            while j < L:
                near = (x[:, j:] - x[:, :L - j]) <= delta
                if not near.any():
                    break
                acc[:, :L - j] |= np.where(near, bits[:, j:], 0)
                j += 1
            found = (acc == bits_all).any(axis=1)
        else:
            j = 1
            while j < L:
                near = (x[:, j:] - x[:, :L - j]) <= delta
                if not near.any():
                    break
                acc[:, :L - j] |= np.where(near, bits[:, j:], 0)
                acc[:, j:] |= np.where(near, bits[:, :L - j], 0)
                j += 1
            found = ((acc == bits_all) & (bits == 1)).any(axis=1)
        hits += int(found.sum())
        done += m
    return hits / samples
