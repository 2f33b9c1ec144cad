"""Which-device information: spectra of the photons scattered in arms A and B.

The two-photon interference term of the DLCZ coincidences (herald then read) is proportional to
the overlap of the photons that devices A and B emit into the same detector. With ``E_k(t)`` the
field scattered by device k during a pulse (envelope ∝ the AOM drive), the cavity of device k and
the detection filters act as linear filters ``h_k(f)`` and ``H(f)``; for time-integrated detection

    overlap  O = ∫ Ẽ_A h_A H (Ẽ_B h_B H)* df / sqrt(∫|Ẽ_A h_A H|² df · ∫|Ẽ_B h_B H|² df)
    cavity factor     C_k = ∫|Ẽ_k h_k|² df / ∫|Ẽ_k|² df   (scattering into the cavity mode)
    filter factor     F_k = ∫|Ẽ_k h_k H|² df / ∫|Ẽ_k h_k|² df   (detection filters)

(Parseval: without filters O is the intensity-weighted mean of e^{iψ_A(t)} over the pulse).
The coincidence cross term of the herald (Stokes) and read (anti-Stokes) photons factorises into
``O_pump · O_read``: its modulus is the indistinguishability (1 for ideal serrodyne shifting),
its argument the phase the EOM and the mechanical frequency difference add to θ.

Phase of arm A's photon relative to arm B's (frequencies: Stokes ω_p − Ω_k, anti-Stokes
ω_r + Ω_k, with ΔΩ_m = Ω_B − Ω_A; main text and supplement "Serrodyne frequency shifting")::

    Stokes:       ψ_A(t) = φ_EOM(t) + ΔΩ_m t
    anti-Stokes:  ψ_A(t) = φ_EOM(t) − ΔΩ_m t

so a falling 2π sawtooth at ΔΩ_m/2π during the pump and a rising one during the read make ψ_A
constant (indistinguishable photons); without shift the overlap of a rectangular pulse of length
T is sinc(ΔΩ_m T/2) (e.g. |O| = 0.104 for 40 ns). The phase of the heralded state then follows
θ = ψ_A,pump + ψ_A,read = Δφ − ΔΩ_m (s_r − s_p) for ramps that start at s_p, s_r: with ramps
that restart at each pulse this is θ_m(τ) = φ0 + ΔΩ_m τ of the main text (up to sign).

Frequencies are relative to device B's cavity resonance. The detection filters are taken tuned
to arm B's photon frequency (the lab tunes them onto the scattered photons; their piezo voltages
are not modelled). Rates are given relative to a reference pulse (rectangular, the reference
duration, photon on resonance), for which the calibrated probabilities hold.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .state import EomDrive, LightPulse

N_FFT = 1 << 14


@dataclass(frozen=True)
class Filters:
    """Cavity linewidths (FWHM, Hz) of A and B, A's cavity centre relative to B's (Hz), detection
    filter FWHM (Hz) and number of stages."""

    kappa_a: float
    kappa_b: float
    cavity_offset_a: float
    filter_fwhm: float
    stages: int


@dataclass(frozen=True)
class PhotonPair:
    """Overlap O (complex) of the detected photons of arms A and B, and per arm, relative to the
    reference photon: ``cavity`` (scattering into the cavity mode: density of states at the photon
    frequency) and ``detection`` (transmission of the detection filters)."""

    overlap: complex
    cavity: tuple[float, float]
    detection: tuple[float, float]


def _responses(f: np.ndarray, flt: Filters, detuning_b: float) -> tuple[np.ndarray, ...]:
    """Cavity responses of A and B and the detection filter (tuned to arm B's photon)."""
    h = np.ones_like(f, dtype=complex)
    for _ in range(flt.stages):
        h = h / (1.0 + 2j * (f - detuning_b) / flt.filter_fwhm)
    ca = 1.0 / (1.0 + 2j * (f - flt.cavity_offset_a) / flt.kappa_a)
    cb = 1.0 / (1.0 + 2j * f / flt.kappa_b)
    return ca, cb, h


def _spectra(t: np.ndarray, env: np.ndarray, psi_a: np.ndarray, dt: float, flt: Filters,
             detuning_b: float) -> tuple[complex, tuple[float, float], tuple[float, float]]:
    n = max(N_FFT, 1 << int(math.ceil(math.log2(4 * t.size))))
    ea = np.zeros(n, complex)
    eb = np.zeros(n, complex)
    base = np.exp(2j * math.pi * detuning_b * t)
    eb[:t.size] = env * base
    ea[:t.size] = env * base * np.exp(1j * psi_a)
    sa, sb = np.fft.fft(ea), np.fft.fft(eb)
    # the time origin of the array is t[0]: a common phase factor, it cancels in every ratio
    f = np.fft.fftfreq(n, dt)
    ca, cb, h = _responses(f, flt, detuning_b)
    e_a, e_b = float(np.sum(np.abs(sa) ** 2)), float(np.sum(np.abs(sb) ** 2))
    qa, qb = float(np.sum(np.abs(sa * ca) ** 2)), float(np.sum(np.abs(sb * cb) ** 2))
    aa, ab = sa * ca * h, sb * cb * h
    pa, pb = float(np.sum(np.abs(aa) ** 2)), float(np.sum(np.abs(ab) ** 2))
    o = complex(np.sum(aa * np.conj(ab)) / math.sqrt(pa * pb)) if pa > 0 and pb > 0 else 0j
    return o, (qa / e_a, qb / e_b), (pa / qa if qa > 0 else 0.0, pb / qb if qb > 0 else 0.0)


@lru_cache(maxsize=64)
def reference_transmission(duration: float, flt: Filters) -> tuple[float, float]:
    """(cavity, detection) factors of the reference photon (rectangular, on resonance, arm B)."""
    dt = min(0.25e-9, duration / 64)
    n = max(1, int(round(duration / dt)))
    t = (np.arange(n) + 0.5) * dt
    _, cav, det = _spectra(t, np.ones(n), np.zeros(n), dt, flt, 0.0)
    return cav[1], det[1]


def photon_pair(pulse: LightPulse, *, stokes: bool, delta_omega: float, eom: EomDrive | None,
                eom_offset: float, detuning_b: float, flt: Filters, ref_duration: float) -> PhotonPair:
    """Overlap and relative transmissions for the photons one pulse scatters in arms A and B.

    ``delta_omega``: Ω_B − Ω_A (rad/s); ``eom``: the EOM drive in arm A (None: no modulation),
    shifted by ``eom_offset`` (free-running AWG); ``detuning_b``: arm B's photon frequency
    relative to B's cavity (Hz), i.e. the laser's detuning from B's sideband."""
    dt = 0.25e-9 if eom is None else min(0.25e-9, 0.5 / eom.rate)
    t, env = pulse.fine(dt)
    dt_eff = pulse.duration / t.size
    sign = 1.0 if stokes else -1.0
    psi = sign * delta_omega * t
    if eom is not None:
        psi = psi + eom.phase_at(t, eom_offset)
    o, cav, det = _spectra(t, env, psi, dt_eff, flt, detuning_b)
    cref, dref = reference_transmission(ref_duration, flt)
    return PhotonPair(o, (cav[0] / cref, cav[1] / cref), (det[0] / dref, det[1] / dref))


def sinc_overlap(delta_omega: float, duration: float) -> float:
    """Closed form without filters: overlap of two rectangular photons of length ``duration``
    whose frequencies differ by ``delta_omega`` (rad/s): sin(x)/x with x = ΔΩ T/2."""
    x = 0.5 * delta_omega * duration
    return 1.0 if x == 0 else math.sin(x) / x
