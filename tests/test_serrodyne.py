"""Serrodyne synthesis for the 81180A: tests against independent numbers (closed forms, hand
arithmetic, FFTs done here), not against the module's own output."""
from __future__ import annotations

import math
import time
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labctl.errors import InputError
from labctl.serrodyne import (
    SegmentPlan, dc_offset_for_phase, drive_levels, from_dac_codes, optical_spectrum,
    plan_segment, plan_segments, raster_step, sawtooth, segment_entry, shift_for, to_dac_codes,
)

V_PI = 5.0          # V, EOM half-wave voltage used throughout
GAIN_DB = 20.0      # dB → voltage gain 10 → 2·Vπ/10 = 1.0 Vpp from the AWG
A_2PI = 1.0         # Vpp, AWG amplitude for a 2π ramp with the two numbers above (by hand)
NO_FILTERS = dict(awg_bandwidth_hz=None, amp_band=None, eom_bandwidth=None)


def field_of(waveform: np.ndarray) -> np.ndarray:
    """exp(iφ) of the sampled drive, computed here from φ = π·G·V/Vπ (independent of the module)."""
    return np.exp(1j * np.pi * 10 ** (GAIN_DB / 20) * waveform / V_PI)


def assert_valid(plan: SegmentPlan, max_rate: float = 4.2e9) -> None:
    n, r, p = plan.segment_length, plan.sample_rate, plan.periods_per_segment
    assert isinstance(n, int) and isinstance(p, int) and isinstance(r, int)
    assert n % 32 == 0 and 320 <= n <= 16_000_000
    assert 10e6 <= r <= max_rate
    assert p >= 1 and n / p >= 4                 # never fewer than 4 samples per period
    # FREQuency:RASTer: 8 significant digits
    assert r % (10 ** max(len(str(r)) - 8, 0)) == 0
    realised = Fraction(p * r, n) * (1 if plan.shift_hz > 0 else -1)
    assert plan.realised_shift == pytest.approx(float(realised), abs=1e-9)
    err = realised - Fraction(repr(plan.shift_hz))
    assert plan.error_hz == pytest.approx(float(err), abs=1e-9)
    assert plan.exact == (err == 0)


# ------------------------------------------------------------------------------------------------
# planning
# ------------------------------------------------------------------------------------------------

def test_plan_45_mhz_is_exact_at_full_rate():
    plan = plan_segment(45e6)
    assert_valid(plan)
    # by hand: 4.2e9/45e6 = 280/3 samples per period; 3 periods in 280 samples is below 320 and
    # not a multiple of 32; the first multiple of both 280 and 32 is 1120 = 35·32 → 12 periods.
    assert (plan.sample_rate, plan.segment_length, plan.periods_per_segment) == (4_200_000_000,
                                                                               1120, 12)
    assert abs(12 * 4.2e9 / 1120 - 45e6) < 1.0
    assert plan.error_hz == 0.0 and plan.exact


def test_plan_minus_45_mhz_keeps_the_sign():
    plan = plan_segment(-45e6)
    assert_valid(plan)
    assert plan.periods_per_segment == 12 and plan.segment_length == 1120
    assert plan.realised_shift == -45e6 and plan.sign == -1


def test_dc_segment():
    plan = plan_segment(0.0)
    assert plan.periods_per_segment == 0 and plan.segment_length == 320
    assert plan.realised_shift == 0.0 and plan.error_hz == 0.0
    assert plan_segment(0, preferred_rate=1e9).sample_rate == 1_000_000_000
    w = sawtooth(plan, amplitude_vpp=0.5, offset_v=0.2)
    assert np.allclose(w, 0.2, atol=0.5 / 4094)


def test_preferred_rate():
    # 1 GSa/s: 1e9/45e6 = 200/9 samples per period → lcm(200, 32) = 800 points, 36 periods
    plan = plan_segment(45e6, preferred_rate=1e9)
    assert (plan.sample_rate, plan.segment_length, plan.periods_per_segment) == (1_000_000_000,
                                                                               800, 36)
    with pytest.raises(InputError, match="FREQuency:RASTer"):
        plan_segment(45e6, preferred_rate=4_199_999_999)      # 10 digits: off the raster grid


def test_raster_step():
    assert raster_step(4.2e9) == 100 and raster_step(150e6) == 10 and raster_step(10e6) == 1


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.floats(min_value=1e6, max_value=200e6, allow_nan=False, allow_infinity=False),
       st.sampled_from([1, -1]))
def test_random_shifts_give_valid_plans(f, sign):
    plan = plan_segment(sign * f)
    assert_valid(plan)
    assert abs(plan.error_hz) < 1.0


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=1_000_000, max_value=200_000_000))
def test_random_integer_shifts_give_valid_plans(f):
    plan = plan_segment(f)
    assert_valid(plan)
    assert abs(plan.error_hz) < 1e-3


def test_inexact_shift_is_reported_honestly():
    # f = 123456791 Hz is prime. Exact means f·n = p·R. f cannot divide R: R = j·f ≥ 4f on the
    # grid needs j a multiple of 10 (R < 1 GSa/s, 10 Sa/s steps) or of 100 (≥ 1 GSa/s), i.e.
    # R ≥ 1.2 GSa/s with 9 digits or R > 4.2 GSa/s. So f | p, p = i·f, n = i·R ≥ 4f > 16e6
    # points: no exact plan exists, and the plan must say so and show its error.
    f = 123_456_791
    plan = plan_segment(f)
    assert_valid(plan)
    assert not plan.exact
    assert 0 < abs(plan.error_hz) <= 1e-3


def test_common_rate_for_a_sequence():
    plans = plan_segments([-45e6, 45e6, 0.0, 30e6])
    assert len({p.sample_rate for p in plans}) == 1
    for p in plans:
        if p.shift_hz:
            assert_valid(p)
            assert p.exact
    assert [p.sign for p in plans] == [-1, 1, 0, 1]


def test_bad_shifts_are_input_errors():
    with pytest.raises(InputError, match="too fast"):
        plan_segment(2e9)
    with pytest.raises(InputError):
        plan_segment(float("nan"))
    with pytest.raises(InputError, match="too slow"):
        plan_segment(0.1)


def test_segment_entry_matches_interfaces_keys():
    plan = plan_segment(-45e6)
    e = segment_entry(plan, amplitude_vpp=1.0, offset_v=0.0)
    assert set(e) == {"sample_rate", "segment_length", "shift_frequency",
                      "periods_per_segment", "offset", "amplitude"}
    assert abs(e["periods_per_segment"] * e["sample_rate"] / e["segment_length"]
               - abs(e["shift_frequency"])) < 1.0


# ------------------------------------------------------------------------------------------------
# ideal ramp: FFT done here
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shift", [45e6, -45e6])
def test_ideal_ramp_fft_has_one_line_at_the_shift(shift):
    plan = plan_segment(shift)
    w = sawtooth(plan, amplitude_vpp=A_2PI, quantise=False)
    e = field_of(w)
    n = len(e)
    power = np.abs(np.fft.fft(e) / n) ** 2
    freqs = np.fft.fftfreq(n, d=1.0 / plan.sample_rate)
    k = int(np.argmax(power))
    assert freqs[k] == pytest.approx(shift, abs=1.0)          # exactly ±f_s
    assert power[k] == pytest.approx(1.0, abs=1e-9)            # a perfect 2π sawtooth: one line
    carrier_db = 10 * np.log10(power[k] / max(power[0], 1e-300))
    assert carrier_db > 30
    # the module's spectrum says the same
    s = optical_spectrum(plan, w, v_pi=V_PI, gain_db=GAIN_DB, oversample=1, **NO_FILTERS)
    assert s.wanted_hz == pytest.approx(shift, abs=1.0)
    assert s.efficiency == pytest.approx(1.0, abs=1e-9)
    assert s.carrier_suppression_db > 30


def test_ideal_quantised_ramp_still_clean():
    plan = plan_segment(45e6)
    w = sawtooth(plan, amplitude_vpp=A_2PI)                    # 12-bit codes
    e = field_of(w)
    power = np.abs(np.fft.fft(e) / len(e)) ** 2
    assert power[plan.periods_per_segment] > 0.9999
    assert 10 * np.log10(power[plan.periods_per_segment] / power[0]) > 60


@pytest.mark.parametrize("a", [0.95, 0.9, 0.8, 1.1])
def test_partial_ramp_follows_sinc_squared(a):
    """Linear ramp of peak phase 2π·a over one period T: the field's Fourier coefficients are
    c_n = (1/T)∫₀ᵀ exp(i2π(a−n)t/T) dt = (exp(i2π(a−n)) − 1)/(i2π(a−n)), so
    |c_n|² = sin²(π(a−n))/(π(a−n))² = sinc²(a − n). For a = 1 − ε the wanted line (n = 1) keeps
    sinc²(ε) and the carrier gets sinc²(1 − ε)."""
    plan = plan_segment(1e6)                   # thousands of samples per period: ~continuous
    assert plan.samples_per_period > 4000
    w = sawtooth(plan, amplitude_vpp=a * A_2PI, quantise=False)
    s = optical_spectrum(plan, w, v_pi=V_PI, gain_db=GAIN_DB, oversample=1, **NO_FILTERS)
    for n in range(-2, 4):
        want = np.sinc(a - n) ** 2
        assert s.power_at(n * 1e6) == pytest.approx(want, rel=1e-4, abs=1e-9), n
    assert s.efficiency == pytest.approx(np.sinc(a - 1) ** 2, rel=1e-4)


def test_zero_order_hold_costs_sinc_squared_of_f_over_rate():
    # a sampled tone held for one clock period: the wanted line keeps sinc²(f/R)
    plan = plan_segment(45e6)
    w = sawtooth(plan, amplitude_vpp=A_2PI, quantise=False)
    s = optical_spectrum(plan, w, v_pi=V_PI, gain_db=GAIN_DB, oversample=64, **NO_FILTERS)
    assert s.efficiency == pytest.approx(np.sinc(45e6 / 4.2e9) ** 2, rel=1e-6)
    assert s.carrier_suppression_db > 100


def test_segment_repeats_are_phase_continuous():
    plan = plan_segment(45e6)
    w = sawtooth(plan, amplitude_vpp=A_2PI, quantise=False)
    phase = np.pi * 10 * np.concatenate([w, w, w]) / V_PI
    step = np.angle(np.exp(1j * np.diff(phase)))          # wrapped phase increment per sample
    assert np.allclose(step, 2 * np.pi * 45e6 / 4.2e9, atol=1e-9)


def test_falling_ramp_and_rising_ramp():
    up = sawtooth(plan_segment(45e6), amplitude_vpp=A_2PI, quantise=False)
    down = sawtooth(plan_segment(-45e6), amplitude_vpp=A_2PI, quantise=False)
    assert np.mean(np.diff(up) > 0) > 0.95 and np.mean(np.diff(down) < 0) > 0.95
    with pytest.raises(InputError, match="contradicts"):
        sawtooth(plan_segment(45e6), amplitude_vpp=A_2PI, sign=-1)


def test_flyback_fraction():
    plan = plan_segment(45e6)
    w = sawtooth(plan, amplitude_vpp=A_2PI, flyback_samples=10, quantise=False)
    # 10 of 93.3 samples fall: ~10.7 % of the samples lie on the falling edge
    assert np.mean(np.diff(w) < 0) == pytest.approx(10 / (1120 / 12), abs=0.02)
    with pytest.raises(InputError):
        sawtooth(plan, amplitude_vpp=A_2PI, flyback_samples=60)


# ------------------------------------------------------------------------------------------------
# realistic chain
# ------------------------------------------------------------------------------------------------

def test_bandwidth_limited_spectrum_is_mirror_symmetric_and_improves_with_bandwidth():
    up, down = plan_segment(45e6), plan_segment(-45e6)
    su = optical_spectrum(up, sawtooth(up, amplitude_vpp=A_2PI), v_pi=V_PI, gain_db=GAIN_DB)
    sd = optical_spectrum(down, sawtooth(down, amplitude_vpp=A_2PI), v_pi=V_PI, gain_db=GAIN_DB)
    assert su.efficiency == pytest.approx(sd.efficiency, rel=1e-9)
    # falling ramp = time-reversed rising ramp: its spectrum is the mirror image (f → −f)
    inner = np.abs(su.frequencies_hz) < su.frequencies_hz.max()
    mirror = np.searchsorted(sd.frequencies_hz, -su.frequencies_hz[inner])
    assert np.allclose(su.powers[inner], sd.powers[mirror], atol=1e-12)
    # a 600 MHz AWG behind a 45 MHz ramp: the fly-back (~1 ns of 22 ns) costs several %
    assert 0.85 < su.efficiency < 0.99
    assert su.carrier_suppression_db > 20 and su.spur_suppression_db > 20
    effs = []
    for bw in (300e6, 600e6, 2e9, 8e9):
        s = optical_spectrum(up, sawtooth(up, amplitude_vpp=A_2PI), v_pi=V_PI, gain_db=GAIN_DB,
                             awg_bandwidth_hz=bw, amp_band=None, eom_bandwidth=None)
        effs.append(s.efficiency)
    assert effs == sorted(effs) and effs[-1] > 0.99


def test_dc_bias_phase_is_reported():
    plan = plan_segment(0.0)
    s = optical_spectrum(plan, sawtooth(plan, amplitude_vpp=A_2PI), v_pi=V_PI, gain_db=GAIN_DB,
                         dc_bias_v=0.75, v_pi_dc=3.0)
    assert s.dc_phase_rad == pytest.approx(np.pi / 4)
    assert s.efficiency == pytest.approx(1.0)


def test_plan_synthesis_and_spectrum_are_fast():
    lv = drive_levels(V_PI, GAIN_DB)
    best = math.inf
    for _ in range(5):
        t = time.perf_counter()
        plan = plan_segment(45e6)
        w = sawtooth(plan, amplitude_vpp=lv.awg_vpp)
        optical_spectrum(plan, w, v_pi=V_PI, gain_db=GAIN_DB)
        best = min(best, time.perf_counter() - t)
    assert best < 0.1


# ------------------------------------------------------------------------------------------------
# DAC codes, levels, bias
# ------------------------------------------------------------------------------------------------

def test_dac_codes_endpoints_and_round_trip():
    a, off = 1.2, -0.3
    codes = to_dac_codes([off - a / 2, off, off + a / 2], a, off)
    assert codes.dtype == np.uint16 and codes.tolist() == [1, 2048, 4095]
    v = np.linspace(off - a / 2, off + a / 2, 1001)
    back = from_dac_codes(to_dac_codes(v, a, off), a, off)
    assert np.max(np.abs(back - v)) <= a / 4094 / 2 + 1e-12       # half an LSB
    all_codes = np.arange(4096)
    assert np.array_equal(to_dac_codes(from_dac_codes(all_codes, a, off), a, off), all_codes)
    with pytest.raises(InputError):
        to_dac_codes([off + a], a, off)


def test_drive_levels_by_hand():
    lv = drive_levels(5.0, 20.0)
    assert lv.awg_vpp == pytest.approx(1.0) and lv.eom_vpp == pytest.approx(10.0)
    # sawtooth 10 Vpp: Vrms² = 100/12 → 0.1667 W = 22.22 dBm
    assert lv.eom_power_dbm == pytest.approx(22.218, abs=1e-3)
    with pytest.raises(InputError, match="raise the amplifier gain to ≥ 14.0 dB"):
        drive_levels(5.0, 10.0)                    # 3.16 Vpp needed; 20·log10(10/2) = 13.98 dB
    with pytest.raises(InputError, match="lower the amplifier gain"):
        drive_levels(1.0, 40.0)                    # 0.02 Vpp
    with pytest.raises(InputError, match="damage"):
        drive_levels(10.0, 30.0, damage_dbm=28.0)  # 20 Vpp: 400/12/50 W = 28.24 dBm


def test_dc_offset_for_phase():
    assert dc_offset_for_phase(np.pi / 2, 3.0) == pytest.approx(1.5)
    assert dc_offset_for_phase(3 * np.pi / 2, 1.0) == pytest.approx(-0.5)   # wraps to −π/2
    assert dc_offset_for_phase(np.pi, 1.0) == pytest.approx(-1.0)           # [−π, π)
    assert dc_offset_for_phase(-4 * np.pi, 1.0) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(InputError) as exc:
        dc_offset_for_phase(0.6 * np.pi, 3.0)      # 1.8 V > 1.5 V
    assert exc.value.fix and "stretcher" in exc.value.fix


# ------------------------------------------------------------------------------------------------
# sign convention: the scattered photons of both arms end at one frequency
# ------------------------------------------------------------------------------------------------

def test_shift_sign_makes_both_arms_scatter_at_one_frequency():
    omega_a = 5.1e9                    # Hz, mechanical frequency of device A
    delta = 45e6                       # Ω_B − Ω_A
    omega_b = omega_a + delta
    w_pump, w_read = 195.0e12, 195.01e12    # Hz, laser frequencies (Stokes/anti-Stokes drive)

    def realised_shift(kind: str) -> float:
        plan = plan_segment(shift_for(kind, delta))   # type: ignore[arg-type]
        w = sawtooth(plan, amplitude_vpp=A_2PI)
        # where the light actually goes, read off the spectrum computed here
        e = field_of(w)
        k = int(np.argmax(np.abs(np.fft.fft(e)) ** 2))
        return float(np.fft.fftfreq(len(e), d=1.0 / plan.sample_rate)[k])

    # pump: Stokes photons at ω_pump,A − Ω_A (arm A, shifted) and ω_pump − Ω_B (arm B)
    stokes_a = (w_pump + realised_shift("pump")) - omega_a
    stokes_b = w_pump - omega_b
    assert stokes_a == pytest.approx(stokes_b, abs=1.0)
    # read: anti-Stokes photons at ω_read,A + Ω_A and ω_read + Ω_B
    anti_a = (w_read + realised_shift("read")) + omega_a
    anti_b = w_read + omega_b
    assert anti_a == pytest.approx(anti_b, abs=1.0)
    # the opposite sign would leave them 2·ΔΩ apart (distinguishable)
    assert abs((w_pump - realised_shift("pump") - omega_a) - stokes_b) == pytest.approx(
        2 * delta, abs=1.0)
    with pytest.raises(InputError):
        shift_for("probe", delta)  # type: ignore[arg-type]


@pytest.mark.parametrize("shift", [45e6, -45e6])
@pytest.mark.parametrize("dphi", [0.0, 0.2 * np.pi, np.pi, 1.75 * np.pi])
def test_phase_offset_moves_the_shifted_line_phase(shift, dphi):
    """The complex amplitude of the shifted line of exp(i·pi·V/Vpi) advances by exactly dphi."""
    from labctl.serrodyne import plan_segment, sawtooth
    plan = plan_segment(shift)
    amp = 2.0  # 2 V peak to peak gives 2 pi with v_pi = 1 V at the EOM (gain 1)

    def line(phase):
        v = sawtooth(plan, amplitude_vpp=amp, offset_v=0.0, quantise=False, phase_rad=phase)
        field = np.exp(1j * np.pi * v / 1.0)
        spec = np.fft.fft(field) / len(field)
        k = plan.periods_per_segment if shift > 0 else len(field) - plan.periods_per_segment
        return spec[k]

    a0, a1 = line(0.0), line(dphi)
    assert abs(a1) == pytest.approx(abs(a0), rel=1e-9)
    assert abs(a1 / a0 - np.exp(1j * dphi)) < 1e-6
