"""Serrodyne frequency shifting: sawtooth synthesis for the 81180A AWG driving a phase EOM.

A sawtooth phase ramp of 2π peak-to-peak at ``f_s`` on a phase modulator moves the light by
``f_s`` (seed: riedinger2018, Supplementary "Serrodyne frequency shifting"). The chain is

    81180A (12-bit DAC, DC-coupled path, ~600 MHz analog bandwidth)
      → RF amplifier, gain G dB, passband 0.5–1000 MHz (blocks DC)
      → phase EOM (Vπ, DC–12 GHz)  ← DC bias through a separate DC path (bias-tee)

Conventions (all SI: Hz, Sa/s, V, rad, dB, dBm into 50 Ω):

* optical field ``E(t) = E0·exp(i(ω0·t + φ(t)))`` with ``φ = polarity·π·V_eom/Vπ``; a *rising*
  ramp (dφ/dt > 0, polarity +1) moves the light *up* by f_s. A negative shift is a falling ramp.
* the drive at the EOM is 2·Vπ peak-to-peak; the AWG amplitude is ``2·Vπ / 10^(G/20)`` Vpp.
* the DC bias reaches the EOM through a bias-tee after the amplifier (the amplifier cannot pass
  it); it adds the constant phase ``π·V_bias/Vπ_DC``. ``Vπ_DC`` defaults to the RF Vπ.
* DAC codes follow the 81180A User's Guide: 12-bit word, 2048 = offset, 4095 = offset + Vpp/2,
  1 = offset − Vpp/2 (code = round(2048 + 2047·(v − offset)/(Vpp/2))).
* ``FREQuency:RASTer`` takes 10 MSa/s … 4.2 GSa/s with "resolution up to 8 digits" (81180A
  User's Guide): the raster step is 100 Sa/s at ≥ 1 GSa/s, 10 Sa/s at ≥ 100 MSa/s and 1 Sa/s
  below. Sample rates in a plan are integers on that grid. "Exact" shifts are exact relative to the
  AWG's own clock; the absolute accuracy follows its 10 MHz reference (internal TCXO: 1 ppm, i.e.
  45 Hz at 45 MHz — lock it to the lab reference).

Every segment holds an integer number of sawtooth periods, so segment repeats are phase
continuous. Functions are pure; nothing here talks to an instrument.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal, Sequence

import numpy as np

from .errors import InputError

__all__ = [
    "AWG_MAX_RATE", "AWG_MIN_RATE", "AWG_GRANULARITY", "AWG_MIN_LENGTH", "AWG_MAX_LENGTH",
    "AWG_RATE_DIGITS", "AWG_MIN_VPP", "AWG_MAX_VPP", "AWG_MAX_OFFSET", "DAC_BITS",
    "SegmentPlan", "plan_segment", "plan_segments", "raster_step",
    "sawtooth", "to_dac_codes", "from_dac_codes",
    "SerrodyneSpectrum", "optical_spectrum",
    "dc_offset_for_phase", "DriveLevels", "drive_levels", "shift_for", "segment_entry",
]

# --- 81180A limits (User's Guide, DC-coupled output path) -------------------------------------
AWG_MAX_RATE = 4.2e9          #: Sa/s, FREQuency:RASTer maximum
AWG_MIN_RATE = 10e6           #: Sa/s, FREQuency:RASTer minimum
AWG_RATE_DIGITS = 8           #: significant digits of FREQuency:RASTer
AWG_GRANULARITY = 32          #: points, segment length step
AWG_MIN_LENGTH = 320          #: points, shortest segment
AWG_MAX_LENGTH = 16_000_000   #: points, standard waveform memory (16 M words; 64 M with option)
AWG_MIN_VPP = 0.05            #: V, VOLTage minimum (DC path)
AWG_MAX_VPP = 2.0             #: V, VOLTage maximum (DC path)
AWG_MAX_OFFSET = 1.5          #: V, |VOLTage:OFFSet| maximum
DAC_BITS = 12
_DAC_MID = 2048
_DAC_HALF = 2047              # codes from mid to full scale
_DAC_MAX = 4095

#: the planner rejects shifts with fewer samples per period than this (a 4-step staircase already
#: loses 19 % of the power to the DAC's zero-order hold)
MIN_SAMPLES_PER_PERIOD = 4.0


# ================================================================================================
# Segment planning
# ================================================================================================

@dataclass(frozen=True)
class SegmentPlan:
    """One AWG segment realising a serrodyne shift.

    ``realised_shift = sign · periods_per_segment · sample_rate / segment_length`` (Hz) exactly;
    ``error_hz = realised_shift − shift_hz``.
    """

    shift_hz: float            #: requested optical shift (Hz, signed; 0 = DC segment)
    sample_rate: int           #: AWG sample clock (Sa/s), on the FREQuency:RASTer grid
    segment_length: int        #: points (multiple of 32, ≥ 320)
    periods_per_segment: int   #: whole sawtooth periods in the segment (0 for a DC segment)
    realised_shift: float      #: Hz, signed
    error_hz: float            #: realised − requested (Hz)
    exact: bool                #: True if the realised shift equals the request exactly

    @property
    def sign(self) -> int:
        """+1 (rising ramp, shift up), −1 (falling ramp, shift down), 0 (DC segment)."""
        return (self.shift_hz > 0) - (self.shift_hz < 0)

    @property
    def samples_per_period(self) -> float:
        """Samples per sawtooth period (inf for a DC segment)."""
        if self.periods_per_segment == 0:
            return math.inf
        return self.segment_length / self.periods_per_segment

    @property
    def duration_s(self) -> float:
        """Play time of one pass through the segment (s)."""
        return self.segment_length / self.sample_rate

    def as_dict(self) -> dict[str, float | int | bool]:
        return {"shift_frequency": self.shift_hz, "sample_rate": self.sample_rate,
                "segment_length": self.segment_length,
                "periods_per_segment": self.periods_per_segment,
                "realised_shift": self.realised_shift, "error_hz": self.error_hz,
                "exact": self.exact}


def raster_step(rate: float, digits: int = AWG_RATE_DIGITS) -> int:
    """Resolution (Sa/s) of ``FREQuency:RASTer`` at ``rate`` with ``digits`` significant digits."""
    e = math.floor(math.log10(rate))
    return int(10 ** max(e - digits + 1, 0))


def _on_grid(rate: float, digits: int) -> bool:
    return float(rate) == int(rate) and int(rate) % raster_step(rate, digits) == 0


def _fraction(x: float) -> Fraction:
    """The decimal a user typed (``45e6``, ``45.1234567e6``) as an exact fraction."""
    return Fraction(repr(float(x)))


def _make_plan(shift: float, rate: int, n: int, p: int) -> SegmentPlan:
    sign = (shift > 0) - (shift < 0)
    realised = Fraction(sign * p * rate, n)
    err = realised - _fraction(shift)
    return SegmentPlan(shift_hz=float(shift), sample_rate=int(rate), segment_length=int(n),
                       periods_per_segment=int(p), realised_shift=float(realised),
                       error_hz=float(err), exact=(err == 0))


def _plan_at_rate(shift: float, rate: int, *, granularity: int, min_length: int,
                  max_length: int) -> SegmentPlan | None:
    """The shortest segment at a fixed ``rate`` with the exact shift, else the closest one."""
    r = abs(_fraction(shift)) / rate               # periods per sample
    n0 = r.denominator * granularity // math.gcd(r.denominator, granularity)
    n = n0 * max(1, -(-min_length // n0))
    if n <= max_length:
        return _make_plan(shift, rate, n, int(r * n))
    # no exact plan: best p/m ≈ r·granularity with m ≤ max_length/granularity
    m_max = max_length // granularity
    m_min = -(-min_length // granularity)
    approx = (r * granularity).limit_denominator(m_max)
    p, m = approx.numerator, approx.denominator
    k = max(1, -(-m_min // m))
    if m * k > m_max:                               # cannot scale up: round at the longest length
        m, k = m_max, 1
        p = round(r * granularity * m)
    if p < 1:
        return None
    return _make_plan(shift, rate, granularity * m * k, p * k)


def _grid_round(r_ideal: np.ndarray, digits: int) -> np.ndarray:
    e = np.floor(np.log10(r_ideal))
    q = 10.0 ** np.maximum(e - digits + 1, 0)
    return np.round(r_ideal / q) * q


def _evaluate(f: float, n: np.ndarray, p: np.ndarray, digits: int, max_rate: float,
              min_rate: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rates on the raster grid, errors (Hz) and validity for candidate (n, p) pairs."""
    r_g = _grid_round(f * n / p, digits)
    err = p * r_g / n - f
    ok = (r_g <= max_rate) & (r_g >= min_rate)
    return r_g, err, ok


def _candidates(f: float, m: np.ndarray, granularity: int, lo_rate: float, hi_rate: float,
                extra: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(n, p) pairs with rate f·n/p in [lo_rate, hi_rate]; ``extra`` caps p to p_lo+extra−1."""
    n = (m * granularity).astype(np.float64)
    p_lo = np.maximum(1.0, np.ceil(f * n / hi_rate - 1e-9))
    p_hi = np.floor(f * n / lo_rate + 1e-9)
    if extra is not None:
        p_hi = np.minimum(p_hi, p_lo + extra - 1)
    counts = np.clip(p_hi - p_lo + 1, 0, None).astype(np.int64)
    total = int(counts.sum())
    if total == 0:
        return np.empty(0), np.empty(0)
    idx = np.repeat(np.arange(len(m)), counts)
    starts = np.cumsum(counts) - counts
    p = p_lo[idx] + (np.arange(total) - starts[idx])
    return n[idx], p


def plan_segment(shift_hz: float, *, max_rate: float = AWG_MAX_RATE,
                 min_rate: float = AWG_MIN_RATE, granularity: int = AWG_GRANULARITY,
                 min_length: int = AWG_MIN_LENGTH, max_length: int = AWG_MAX_LENGTH,
                 preferred_rate: float | None = None, rate_digits: int = AWG_RATE_DIGITS,
                 tolerance_hz: float = 1e-3, rate_slack: float = 0.01,
                 short_length: int = 4096, max_evaluations: int = 4_000_000) -> SegmentPlan:
    """Sample rate, segment length and period count for a serrodyne shift of ``shift_hz`` (Hz).

    ``|shift| = periods · rate / length`` with ``length`` a multiple of ``granularity`` in
    [``min_length``, ``max_length``] points, ``periods`` a positive integer and ``rate`` (Sa/s)
    on the ``FREQuency:RASTer`` grid (``rate_digits`` significant digits) in
    [``min_rate``, ``max_rate``]. The sign of ``shift_hz`` is kept (negative = falling ramp);
    ``periods_per_segment`` is always a non-negative integer.

    Choice, in order:

    1. ``preferred_rate`` (Sa/s), if given and it realises the shift within ``tolerance_hz``
       (use :func:`plan_segments` when several segments must share one clock);
    2. plans within ``tolerance_hz`` of the request ("exact"; the true error is reported, and
       ``exact`` says whether it is zero) with a rate within ``rate_slack`` (relative) of
       ``max_rate``: among segments of at most ``short_length`` points the highest rate (then
       the shortest segment), else the shortest segment (then the highest rate). Ties go to
       the fewest periods. Short segments keep the switch between pump and read segments fast
       (the 81180A finishes a segment before jumping); within 1 % the rate hardly matters (1 %
       more samples per period, invisible behind the 600 MHz analog bandwidth);
    3. otherwise the highest-rate plan within ``tolerance_hz``;
    4. otherwise the plan with the smallest error (``exact`` False, ``error_hz`` says by how
       much). The search stops after ``max_evaluations`` candidate (length, periods) pairs.

    ``shift_hz = 0`` gives a DC segment: ``min_length`` points at ``preferred_rate`` (or
    ``max_rate``), zero periods.

    Raises :class:`InputError` if the shift is too fast (fewer than 4 samples per period at
    ``max_rate``) or too slow for the memory.
    """
    f_signed = float(shift_hz)
    if not math.isfinite(f_signed):
        raise InputError(f"serrodyne shift {shift_hz!r} is not a finite number",
                         fix="give the shift in Hz, e.g. 45 MHz")
    if min_length % granularity or min_length <= 0 or max_length < min_length:
        raise InputError(f"segment lengths {min_length}..{max_length} do not fit granularity "
                         f"{granularity}", fix="use the 81180A's 320..16e6 points in steps of 32")
    max_length -= max_length % granularity
    if preferred_rate is not None:
        if not (min_rate <= preferred_rate <= max_rate) or not _on_grid(preferred_rate,
                                                                         rate_digits):
            raise InputError(
                f"sample rate {preferred_rate!r} Sa/s is not a valid FREQuency:RASTer setting",
                fix=f"choose {min_rate:g}..{max_rate:g} Sa/s with at most {rate_digits} "
                    f"significant digits (step {raster_step(preferred_rate, rate_digits)} Sa/s "
                    f"there)" if preferred_rate > 0 else "choose a positive sample rate")
    if f_signed == 0.0:
        rate = int(preferred_rate) if preferred_rate is not None else int(max_rate)
        if not _on_grid(rate, rate_digits):
            rate -= rate % raster_step(rate, rate_digits)
        return SegmentPlan(0.0, rate, min_length, 0, 0.0, 0.0, True)

    f = abs(f_signed)
    if f * MIN_SAMPLES_PER_PERIOD > max_rate:
        raise InputError(
            f"serrodyne shift {f_signed / 1e6:g} MHz is too fast for a {max_rate / 1e9:g} GSa/s "
            f"AWG ({max_rate / f:.2f} samples per period)",
            fix=f"keep |shift| ≤ {max_rate / MIN_SAMPLES_PER_PERIOD / 1e6:g} MHz (in practice "
                "well below the AWG's 600 MHz analog bandwidth)")
    f_min = min_rate / max_length
    if f < f_min * (1 - 1e-12):
        raise InputError(
            f"serrodyne shift {f_signed:g} Hz is too slow: one period does not fit "
            f"{max_length} points at {min_rate:g} Sa/s",
            fix=f"use |shift| ≥ {f_min:g} Hz or a DC segment (shift 0)")

    if preferred_rate is not None and preferred_rate >= MIN_SAMPLES_PER_PERIOD * f:
        plan = _plan_at_rate(f_signed, int(preferred_rate), granularity=granularity,
                             min_length=min_length, max_length=max_length)
        if plan is not None and abs(plan.error_hz) <= tolerance_hz:
            return plan

    m0 = -(-min_length // granularity)
    m_max = max_length // granularity
    evaluations = 0
    min_rate = max(min_rate, MIN_SAMPLES_PER_PERIOD * f)     # never a staircase of < 4 steps

    # --- step 2: within rate_slack of max_rate: short segments by rate, then by length -------
    band_lo = max(min_rate, (1.0 - rate_slack) * max_rate)
    m_short = max(m0, min(m_max, short_length // granularity))
    m_start, chunk = m0, m_short - m0 + 1
    first = True
    while m_start <= m_max and evaluations < max_evaluations:
        m = np.arange(m_start, min(m_start + chunk, m_max + 1), dtype=np.int64)
        n, p = _candidates(f, m, granularity, band_lo, max_rate)
        if len(n) > max_evaluations - evaluations:
            n, p = n[:max_evaluations - evaluations], p[:max_evaluations - evaluations]
        evaluations += len(n)
        if len(n):
            r_g, err, ok = _evaluate(f, n, p, rate_digits, max_rate, band_lo)
            good = ok & (np.abs(err) <= tolerance_hz)
            if good.any():
                i = np.flatnonzero(good)
                # short segments: highest rate first; longer ones: shortest first
                keys = (p[i], n[i], -r_g[i]) if first else (p[i], -r_g[i], n[i])
                best = i[np.lexsort(keys)[0]]
                return _make_plan(f_signed, int(r_g[best]), int(n[best]), int(p[best]))
        m_start += len(m)
        chunk = 256 if first else min(chunk * 2, 1 << 16)
        first = False

    # --- steps 3 and 4: highest rate within tolerance, else smallest error ----------------
    best_ok: tuple[float, float, float] | None = None      # (-rate, n, p)
    best_err: tuple[float, float, float, float] | None = None  # (|err|, -rate, n, p)
    budget = max(max_evaluations, 8 * 4096)
    m_start, chunk = m0, 4096
    while m_start <= m_max and budget > 0:
        m = np.arange(m_start, min(m_start + chunk, m_max + 1), dtype=np.int64)
        n, p = _candidates(f, m, granularity, min_rate, max_rate, extra=8)
        budget -= len(n)
        m_start += len(m)
        if not len(n):
            continue
        r_g, err, ok = _evaluate(f, n, p, rate_digits, max_rate, min_rate)
        if not ok.any():
            continue
        n, p, r_g, err = n[ok], p[ok], r_g[ok], np.abs(err[ok])
        good = err <= tolerance_hz
        if good.any():
            i = np.flatnonzero(good)
            j = i[np.lexsort((p[i], n[i], -r_g[i]))[0]]
            cand = (-r_g[j], n[j], p[j])
            if best_ok is None or cand < best_ok:
                best_ok = cand
        j = np.lexsort((p, n, -r_g, err))[0]
        cand4 = (err[j], -r_g[j], n[j], p[j])
        if best_err is None or cand4 < best_err:
            best_err = cand4
    if best_ok is not None:
        return _make_plan(f_signed, int(-best_ok[0]), int(best_ok[1]), int(best_ok[2]))
    if best_err is not None:
        return _make_plan(f_signed, int(-best_err[1]), int(best_err[2]), int(best_err[3]))
    raise InputError(f"no 81180A segment realises a {f_signed:g} Hz serrodyne shift",
                     fix="check the rate and length limits passed to plan_segment")


def plan_segments(shifts_hz: Sequence[float], **kw: object) -> list[SegmentPlan]:
    """Plans for several shifts that share **one** sample rate (the 81180A has one sample clock
    per channel, so all segments of a sequence play at the same ``FREQuency:RASTer``).

    Candidate rates: ``preferred_rate`` if given, else the best rate (:func:`plan_segment`) of
    the largest |shift|, then the other shifts' best rates, highest first. The first rate at
    which every shift is realised within ``tolerance_hz`` wins (each at its shortest exact
    segment). If none does, the
    plans at the first candidate are returned with their (honest) errors. Keywords as for
    :func:`plan_segment`.
    """
    shifts = [float(s) for s in shifts_hz]
    if not shifts:
        return []
    granularity = int(kw.get("granularity", AWG_GRANULARITY))  # type: ignore[arg-type]
    min_length = int(kw.get("min_length", AWG_MIN_LENGTH))  # type: ignore[arg-type]
    max_length = int(kw.get("max_length", AWG_MAX_LENGTH))  # type: ignore[arg-type]
    max_length -= max_length % granularity
    tol = float(kw.get("tolerance_hz", 1e-3))  # type: ignore[arg-type]
    preferred = kw.get("preferred_rate")
    mags = sorted({abs(s) for s in shifts if s != 0.0}, reverse=True)
    candidates: list[int] = []
    if preferred is not None:
        candidates.append(int(preferred))  # type: ignore[call-overload]
    for f in mags:
        candidates.append(plan_segment(f, **kw).sample_rate)  # type: ignore[arg-type]
    if not candidates:
        return [plan_segment(0.0, **kw) for _ in shifts]  # type: ignore[arg-type]
    fallback: list[SegmentPlan] | None = None
    for rate in sorted(set(candidates), key=lambda r: (r != candidates[0], -r)):
        if mags and rate < MIN_SAMPLES_PER_PERIOD * mags[0]:
            continue
        plans: list[SegmentPlan] = []
        for s in shifts:
            if s == 0.0:
                plans.append(SegmentPlan(0.0, rate, min_length, 0, 0.0, 0.0, True))
                continue
            pl = _plan_at_rate(s, rate, granularity=granularity, min_length=min_length,
                               max_length=max_length)
            if pl is None:
                break
            plans.append(pl)
        else:
            if all(abs(pl.error_hz) <= tol for pl in plans):
                return plans
            if fallback is None:
                fallback = plans
    if fallback is None:
        raise InputError(f"no common 81180A sample rate realises the shifts {shifts} Hz",
                         fix="play the shifts on separate AWG channels or change the shifts")
    return fallback


# ================================================================================================
# Waveform synthesis and DAC codes
# ================================================================================================

def _check_levels(amplitude_vpp: float, offset_v: float) -> None:
    if not (AWG_MIN_VPP <= amplitude_vpp <= AWG_MAX_VPP):
        raise InputError(f"81180A amplitude {amplitude_vpp:g} Vpp is outside "
                         f"{AWG_MIN_VPP:g}..{AWG_MAX_VPP:g} Vpp",
                         fix="adjust the amplifier gain so the needed AWG amplitude is in range "
                             "(see drive_levels)")
    if abs(offset_v) > AWG_MAX_OFFSET:
        raise InputError(f"81180A offset {offset_v:g} V is outside ±{AWG_MAX_OFFSET:g} V",
                         fix=f"keep the offset within ±{AWG_MAX_OFFSET:g} V")


def to_dac_codes(volts: np.ndarray | Sequence[float], amplitude_vpp: float,
                 offset_v: float = 0.0) -> np.ndarray:
    """Volts at the AWG output → 12-bit DAC codes (uint16, 0..4095).

    ``code = round(2048 + 2047·(v − offset)/(amplitude/2))``: 2048 is the offset, 4095 is
    ``offset + amplitude/2``, 1 is ``offset − amplitude/2`` (81180A User's Guide). Raises
    :class:`InputError` for samples more than half a code outside the output window.
    """
    if amplitude_vpp <= 0:
        raise InputError(f"amplitude {amplitude_vpp:g} Vpp must be positive",
                         fix="give the AWG amplitude in Vpp")
    x = (np.asarray(volts, dtype=np.float64) - offset_v) * (2.0 * _DAC_HALF / amplitude_vpp)
    codes = np.rint(x) + _DAC_MID
    if codes.size and (codes.min() < 0 or codes.max() > _DAC_MAX):
        bad = float(np.asarray(volts, dtype=np.float64).ravel()[
            np.argmax(np.abs(x.ravel()))])
        raise InputError(
            f"sample {bad:g} V is outside the AWG window {offset_v:g} V ± {amplitude_vpp / 2:g} V",
            fix="raise the amplitude or re-centre the offset")
    return codes.astype(np.uint16)


def from_dac_codes(codes: np.ndarray | Sequence[int], amplitude_vpp: float,
                   offset_v: float = 0.0) -> np.ndarray:
    """12-bit DAC codes → volts at the AWG output (inverse of :func:`to_dac_codes`)."""
    c = np.asarray(codes).astype(np.float64)
    if c.size and (c.min() < 0 or c.max() > _DAC_MAX):
        raise InputError("DAC code outside 0..4095", fix="mask marker bits (D12–D15) first")
    return offset_v + (c - _DAC_MID) * (amplitude_vpp / (2.0 * _DAC_HALF))


def sawtooth(plan: SegmentPlan, *, amplitude_vpp: float, offset_v: float = 0.0,
             sign: int | None = None, flyback_samples: float = 0.0,
             quantise: bool = True, phase_rad: float = 0.0) -> np.ndarray:
    """The segment's samples in volts at the AWG output (length ``plan.segment_length``).

    Each period ramps over ``amplitude_vpp`` (the voltage giving 2π at the EOM, see
    :func:`drive_levels`) about ``offset_v``: ``v = offset + sign·A·(y − ½)`` with ``y`` the
    ramp position 0 → 1 in the period. The segment holds ``plan.periods_per_segment`` whole
    periods, so the phase is continuous when the segment repeats. ``sign`` defaults to the
    plan's (+1 rising = shift up, −1 falling = shift down) and must agree with it.

    ``flyback_samples`` (≥ 0, in sample intervals): duration of a linear reset at the end of each
    period (fly-back fraction = ``flyback_samples / plan.samples_per_period``). 0 is the ideal
    sampled sawtooth: the reset falls between two samples, i.e. it lasts one sample interval
    plus whatever the analog bandwidth adds. With ``quantise`` the samples are rounded to the
    12-bit DAC codes (what the AWG actually plays). A DC plan gives ``offset_v`` everywhere.

    ``phase_rad`` advances the optical phase of the shifted light by that much: the ramp starts
    at the point of its period where the EOM phase is ``phase_rad`` (mod 2π). This is how a
    phase offset Δφ reaches the read pulse alone through an AC-coupled amplifier.
    """
    _check_levels(amplitude_vpp, offset_v)
    n, p = plan.segment_length, plan.periods_per_segment
    if p == 0:
        v = np.full(n, float(offset_v))
        return from_dac_codes(to_dac_codes(v, amplitude_vpp, offset_v), amplitude_vpp,
                              offset_v) if quantise else v
    if sign is None:
        sign = plan.sign
    if sign not in (1, -1):
        raise InputError(f"ramp sign {sign!r} must be +1 or -1", fix="use +1 (up) or -1 (down)")
    if sign != plan.sign:
        raise InputError(f"ramp sign {sign:+d} contradicts the planned shift "
                         f"{plan.shift_hz:g} Hz", fix="plan the shift with the sign you want")
    period = n / p
    if not (0.0 <= flyback_samples < period / 2):
        raise InputError(f"fly-back of {flyback_samples:g} samples does not fit a period of "
                         f"{period:.2f} samples", fix=f"use 0 ≤ fly-back < {period / 2:.2f}")
    k = np.arange(n, dtype=np.int64)
    pos = ((k * p) % n).astype(np.float64) / p          # position in the period, in samples
    if phase_rad:
        pos = np.mod(pos + sign * (phase_rad / (2 * math.pi)) * period, period)
    if flyback_samples > 0:
        rise = period - flyback_samples
        y = np.where(pos < rise, pos / rise, (period - pos) / flyback_samples)
    else:
        y = pos / period
    v = offset_v + sign * amplitude_vpp * (y - 0.5)
    if quantise:
        v = from_dac_codes(to_dac_codes(v, amplitude_vpp, offset_v), amplitude_vpp, offset_v)
    return v


# ================================================================================================
# Drive levels and DC bias
# ================================================================================================

@dataclass(frozen=True)
class DriveLevels:
    """Levels for a 2π serrodyne ramp (volts peak-to-peak, powers in dBm into 50 Ω)."""

    awg_vpp: float             #: AWG amplitude (Vpp) → VOLTage
    eom_vpp: float             #: drive at the EOM (Vpp) = 2·Vπ for a 2π ramp
    eom_power_dbm: float       #: average power of the sawtooth at the EOM (dBm, 50 Ω)
    gain_db: float


def _dbm(p_w: float) -> float:
    return 10.0 * math.log10(p_w / 1e-3)


def drive_levels(v_pi: float, gain_db: float, *, damage_dbm: float | None = 28.0,
                 phase_pp_rad: float = 2 * math.pi, awg_min_vpp: float = AWG_MIN_VPP,
                 awg_max_vpp: float = AWG_MAX_VPP, amp_p1db_dbm: float | None = None,
                 impedance_ohm: float = 50.0) -> DriveLevels:
    """AWG amplitude for a ``phase_pp_rad`` (default 2π) sawtooth through an amplifier of
    ``gain_db`` (dB, voltage gain 10^(G/20)) into an EOM of half-wave voltage ``v_pi`` (V).

    ``eom_vpp = v_pi·phase_pp/π``; ``awg_vpp = eom_vpp / 10^(G/20)``; the EOM power is the
    sawtooth's mean power ``(Vpp²/12)/R``. Raises :class:`InputError` (with a fix) if the AWG
    amplitude is outside ``awg_min_vpp``..``awg_max_vpp``, if the EOM power exceeds
    ``damage_dbm`` or if the amplifier's output would pass ``amp_p1db_dbm`` (compared as the
    sine power of equal peak voltage).
    """
    if not (v_pi > 0 and math.isfinite(v_pi)):
        raise InputError(f"EOM Vπ = {v_pi!r} V must be a positive number",
                         fix="set the modulator's Vπ (V) in the station config")
    if not math.isfinite(gain_db):
        raise InputError(f"amplifier gain {gain_db!r} dB is not a number",
                         fix="set the amplifier gain (dB) in the station config")
    g = 10.0 ** (gain_db / 20.0)
    eom_vpp = v_pi * phase_pp_rad / math.pi
    awg_vpp = eom_vpp / g
    p_eom = _dbm((eom_vpp ** 2 / 12.0) / impedance_ohm)
    if awg_vpp > awg_max_vpp:
        need = 20.0 * math.log10(eom_vpp / awg_max_vpp)
        raise InputError(
            f"a 2π serrodyne ramp needs {eom_vpp:.3g} Vpp at the EOM (Vπ = {v_pi:g} V): "
            f"{awg_vpp:.3g} Vpp from the AWG with {gain_db:g} dB gain, above its "
            f"{awg_max_vpp:g} Vpp", fix=f"raise the amplifier gain to ≥ {need:.1f} dB "
                                        "(or use an EOM with a lower Vπ)")
    if awg_vpp < awg_min_vpp:
        need = 20.0 * math.log10(eom_vpp / awg_min_vpp)
        raise InputError(
            f"a 2π serrodyne ramp needs only {awg_vpp:.3g} Vpp from the AWG with {gain_db:g} dB "
            f"gain, below its {awg_min_vpp:g} Vpp",
            fix=f"lower the amplifier gain to ≤ {need:.1f} dB or add a "
                f"{gain_db - need:.1f} dB attenuator after the AWG")
    if damage_dbm is not None and p_eom > damage_dbm:
        raise InputError(
            f"the 2π ramp drives the EOM with {p_eom:.1f} dBm ({eom_vpp:.3g} Vpp), above its "
            f"{damage_dbm:g} dBm damage limit",
            fix="use a modulator with a lower Vπ or a higher power rating, and check Vπ and "
                "the damage limit in the station config")
    if amp_p1db_dbm is not None:
        p_sine_equiv = _dbm(((eom_vpp / 2.0) ** 2 / 2.0) / impedance_ohm)
        if p_sine_equiv > amp_p1db_dbm:
            raise InputError(
                f"the ramp's peak {eom_vpp / 2:.3g} V at the amplifier output exceeds its "
                f"P1dB of {amp_p1db_dbm:g} dBm (sine of equal peak: {p_sine_equiv:.1f} dBm)",
                fix="use a higher-power amplifier or an EOM with a lower Vπ")
    return DriveLevels(awg_vpp=awg_vpp, eom_vpp=eom_vpp, eom_power_dbm=p_eom, gain_db=gain_db)


def dc_offset_for_phase(delta_phi_rad: float, v_pi_dc: float, *,
                        max_v: float = AWG_MAX_OFFSET) -> float:
    """DC bias (V) giving the interferometer phase offset Δφ through the EOM's DC path.

    Δφ is wrapped into [−π, π) first; ``V = Δφ·Vπ_DC/π`` (phase = π·V/Vπ_DC). The bias source is
    assumed to be limited to ±``max_v`` (the 81180A's ±1.5 V offset range). Raises
    :class:`InputError` if the wrapped phase needs more.
    """
    if not (v_pi_dc > 0 and math.isfinite(v_pi_dc)):
        raise InputError(f"DC half-wave voltage Vπ_DC = {v_pi_dc!r} V must be positive",
                         fix="set the EOM's DC Vπ in the station config")
    if not math.isfinite(delta_phi_rad):
        raise InputError(f"phase offset {delta_phi_rad!r} rad is not a number",
                         fix="give Δφ in rad (or e.g. '0.5 pi')")
    wrapped = (delta_phi_rad + math.pi) % (2 * math.pi) - math.pi
    v = wrapped * v_pi_dc / math.pi
    if abs(v) > max_v + 1e-12:
        reach = max_v / v_pi_dc * math.pi
        raise InputError(
            f"Δφ = {delta_phi_rad:.4g} rad (wrapped {wrapped:.4g} rad) needs a {v:.3g} V bias, "
            f"beyond ±{max_v:g} V (reach ±{reach:.3g} rad with Vπ_DC = {v_pi_dc:g} V)",
            fix=f"move the interferometer lock point by {wrapped:.3g} rad instead (fiber "
                f"stretcher), or use a bias path with Vπ_DC ≤ {max_v:g} V or a DC amplifier")
    return v


def shift_for(pulse_kind: Literal["pump", "read"], delta_omega_hz: float) -> float:
    """Serrodyne shift (Hz) for the light going to device A.

    ``delta_omega_hz = Ω_B − Ω_A`` (mechanical frequencies, Hz). The pump to A goes *down* by
    ΔΩ so Stokes photons of both arms leave at ``ω_p − Ω_B``; the read to A goes *up* by ΔΩ so
    anti-Stokes photons of both arms leave at ``ω_r + Ω_B`` (physics.md, seed supplement).
    """
    if pulse_kind == "pump":
        return -float(delta_omega_hz)
    if pulse_kind == "read":
        return float(delta_omega_hz)
    raise InputError(f"pulse kind {pulse_kind!r} has no serrodyne rule",
                     fix="use 'pump' or 'read'")


def segment_entry(plan: SegmentPlan, *, amplitude_vpp: float, offset_v: float) -> dict[str, object]:
    """The ``segments`` entry of ``labctl compile --json`` (docs/interfaces.md)."""
    return {"sample_rate": plan.sample_rate, "segment_length": plan.segment_length,
            "shift_frequency": plan.shift_hz, "periods_per_segment": plan.periods_per_segment,
            "offset": float(offset_v), "amplitude": float(amplitude_vpp)}


# ================================================================================================
# Optical spectrum
# ================================================================================================

_FLOOR = 1e-30   # powers below this count as zero (suppressions are capped at 300 dB)


def _db(ratio_num: float, ratio_den: float) -> float:
    return 10.0 * math.log10(max(ratio_num, _FLOOR) / max(ratio_den, _FLOOR))


@dataclass(frozen=True)
class SerrodyneSpectrum:
    """Line powers of the light after the EOM, as fractions of the total (they sum to 1).

    Lines sit at multiples of ``line_spacing_hz = sample_rate/segment_length`` (the segment
    repeats); harmonics of the shift are every ``periods_per_segment``-th line. Suppressions are
    in dB relative to the wanted line (positive = weaker than the wanted line, capped at 300 dB).
    """

    frequencies_hz: np.ndarray = field(repr=False)   #: line offsets from the carrier (Hz)
    powers: np.ndarray = field(repr=False)           #: fraction of the total optical power
    line_spacing_hz: float
    wanted_hz: float             #: the shifted line (Hz, signed)
    efficiency: float            #: fraction of the power in the wanted line
    carrier_power: float         #: fraction left at the unshifted carrier
    carrier_suppression_db: float
    image_suppression_db: float  #: line at −shift, dB below the wanted line
    spur_hz: float               #: strongest line other than the wanted one (Hz)
    spur_suppression_db: float   #: … and its suppression (dB)
    dc_phase_rad: float          #: constant phase from the DC bias

    def power_at(self, freq_hz: float) -> float:
        """Fraction of the power in the line nearest ``freq_hz``."""
        i = int(np.argmin(np.abs(self.frequencies_hz - freq_hz)))
        return float(self.powers[i])

    def harmonics(self, max_order: int = 5) -> dict[int, float]:
        """Power fraction at m·|shift| for m = −max_order..max_order (m = 0 is the carrier)."""
        f = abs(self.wanted_hz)
        if f == 0:
            return {0: self.carrier_power}
        return {m: self.power_at(m * f) for m in range(-max_order, max_order + 1)}

    def summary(self) -> str:
        lines = [f"shift {self.wanted_hz / 1e6:+.6f} MHz: efficiency {100 * self.efficiency:.3f} %",
                 f"carrier suppression {self.carrier_suppression_db:.1f} dB, image "
                 f"{self.image_suppression_db:.1f} dB, strongest spur "
                 f"{self.spur_suppression_db:.1f} dB at {self.spur_hz / 1e6:+.3f} MHz"]
        for m, pw in self.harmonics(3).items():
            lines.append(f"  {m:+d}·f: {_db(pw, 1.0):8.2f} dB of total")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, float]:
        return {"wanted_hz": self.wanted_hz, "efficiency": self.efficiency,
                "carrier_power": self.carrier_power,
                "carrier_suppression_db": self.carrier_suppression_db,
                "image_suppression_db": self.image_suppression_db,
                "spur_hz": self.spur_hz, "spur_suppression_db": self.spur_suppression_db,
                "dc_phase_rad": self.dc_phase_rad}


def _butterworth_lowpass(f: np.ndarray, fc: float, order: int) -> np.ndarray:
    s = 1j * f / fc
    h = np.ones_like(s)
    for k in range(1, order + 1):
        pole = np.exp(1j * np.pi * (2 * k + order - 1) / (2 * order))
        h = h * (-pole) / (s - pole)       # unity gain at DC
    return h


def _highpass1(f: np.ndarray, fc: float) -> np.ndarray:
    s = 1j * f / fc
    return s / (1.0 + s)


def optical_spectrum(plan: SegmentPlan, waveform: np.ndarray, *, v_pi: float, gain_db: float,
                     awg_bandwidth_hz: float | None = 600e6,
                     amp_band: tuple[float, float] | None = (0.5e6, 1000e6),
                     eom_bandwidth: float | None = 12e9, dc_bias_v: float = 0.0,
                     v_pi_dc: float | None = None, awg_filter_order: int = 2,
                     oversample: int | None = None, polarity: int = 1,
                     max_points: int = 1 << 22) -> SerrodyneSpectrum:
    """Optical line spectrum of the light after the EOM driven by one repeating segment.

    ``waveform``: the segment's samples (V at the AWG output, e.g. from :func:`sawtooth`).
    Model, in steady state (the segment repeats forever):

    1. the DAC holds each sample for one clock period (zero-order hold, simulated on a grid
       ``oversample`` times finer; default: enough for ≥ 20 GSa/s, at most ``max_points``);
    2. the AWG's analog bandwidth: Butterworth low-pass of ``awg_filter_order`` with −3 dB at
       ``awg_bandwidth_hz``; the amplifier: first-order high-pass and low-pass at
       ``amp_band`` = (low, high) Hz and voltage gain 10^(G/20); the EOM: first-order low-pass at
       ``eom_bandwidth``. ``None`` switches a stage's filter off;
    3. ``φ = polarity·π·v_eom/Vπ + π·dc_bias_v/Vπ_DC`` (bias through a bias-tee, not the
       amplifier), ``E = exp(iφ)``; the FFT over the segment (an integer number of periods)
       gives the line powers.

    With no filters and ``oversample=1`` this is the plain DFT of the sampled field.
    """
    n = plan.segment_length
    v = np.asarray(waveform, dtype=np.float64)
    if v.shape != (n,):
        raise InputError(f"waveform has {v.shape} samples, the plan {n}",
                         fix="synthesise the waveform from the same plan")
    if not (v_pi > 0):
        raise InputError(f"EOM Vπ = {v_pi!r} V must be positive", fix="set Vπ in the config")
    if polarity not in (1, -1):
        raise InputError(f"EOM polarity {polarity!r} must be +1 or -1", fix="use +1 or -1")
    if v_pi_dc is not None and not (v_pi_dc > 0):
        raise InputError(f"EOM Vπ_DC = {v_pi_dc!r} V must be positive",
                         fix="set the DC half-wave voltage in the config (or leave it unset)")
    rate = float(plan.sample_rate)
    if oversample is None:
        oversample = max(1, math.ceil(20e9 / rate))
    oversample = max(1, min(int(oversample), max_points // n))
    big_n = n * oversample
    v_up = np.repeat(v, oversample) if oversample > 1 else v
    filtered = any(x is not None for x in (awg_bandwidth_hz, amp_band, eom_bandwidth))
    if filtered:
        spec = np.fft.rfft(v_up)
        fr = np.fft.rfftfreq(big_n, d=1.0 / (rate * oversample))
        h = np.ones(len(fr), dtype=np.complex128)
        if awg_bandwidth_hz is not None:
            h *= _butterworth_lowpass(fr, awg_bandwidth_hz, awg_filter_order)
        if amp_band is not None:
            lo, hi = amp_band
            if lo:
                h *= _highpass1(fr, lo)
            if hi:
                h *= _butterworth_lowpass(fr, hi, 1)
        if eom_bandwidth is not None:
            h *= _butterworth_lowpass(fr, eom_bandwidth, 1)
        v_up = np.fft.irfft(spec * h, big_n)
    g = 10.0 ** (gain_db / 20.0)
    dc_phase = math.pi * dc_bias_v / (v_pi_dc if v_pi_dc is not None else v_pi)
    phi = polarity * math.pi * g * v_up / v_pi + dc_phase
    field_ = np.exp(1j * phi)
    c = np.fft.fft(field_) / big_n
    powers = np.abs(c) ** 2
    powers /= powers.sum()
    spacing = rate / n
    bins = np.fft.fftfreq(big_n, d=1.0 / big_n).astype(np.int64)   # integer line index
    order = np.argsort(bins)
    freqs = bins[order] * spacing
    powers = powers[order]
    zero = int(np.searchsorted(bins[order], 0))
    wanted_idx = zero + plan.sign * plan.periods_per_segment
    image_idx = zero - plan.sign * plan.periods_per_segment
    p_w = float(powers[wanted_idx])
    p_c = float(powers[zero])
    others = powers.copy()
    others[wanted_idx] = 0.0
    spur = int(np.argmax(others))
    return SerrodyneSpectrum(
        frequencies_hz=freqs, powers=powers, line_spacing_hz=spacing,
        wanted_hz=float(freqs[wanted_idx]), efficiency=p_w, carrier_power=p_c,
        carrier_suppression_db=0.0 if wanted_idx == zero else _db(p_w, p_c),
        image_suppression_db=0.0 if wanted_idx == zero else _db(p_w, float(powers[image_idx])),
        spur_hz=float(freqs[spur]), spur_suppression_db=_db(p_w, float(others[spur])),
        dc_phase_rad=dc_phase)
