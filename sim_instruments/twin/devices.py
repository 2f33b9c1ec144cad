"""Optomechanics of the two devices: occupations, heating, scattering and the single-device
cross-correlation (seed: Riedinger et al. 2018; equations in ``/work/shared/docs/physics.md``).

All functions are pure; times in s, rates in 1/s, frequencies in Hz, occupations in phonons.

* initial occupation ``n_init = 1/(exp(hΩ/k_B T) − 1)`` (supplement, "Second Order Coherence");
* delayed absorption heating (supplement, pump-probe): ``dn/dt = −Γ n + k e^{−γt} + Γ n_init``,
  whose pump-induced part from ``n(0) = n_init`` is
  ``n_pump(t) = k (e^{−γt} − e^{−Γt}) / (Γ − γ)``;
  the probe signal is then ``d(t) = a e^{−Γt} − b e^{−γt} + n_final``;
* Stokes scattering probability ``p`` is linear in the drive energy (weak pump); the anti-Stokes
  state swap ``s = 1 − exp(−x)`` saturates (a beam-splitter interaction of strength x ∝ energy);
* single-device cross-correlation (supplement Eq. S2)
  ``g2_rp(t) ≈ 1 + e^{−Γt} / (n_th(t) + p e^{−Γt} + n_leak + n_bg)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

H_PLANCK = 6.62607015e-34
K_BOLTZMANN = 1.380649e-23
C_LIGHT = 299_792_458.0


def bose_occupation(frequency_hz: float, temperature_k: float) -> float:
    """Thermal occupation of a mode at ``frequency_hz`` and ``temperature_k``."""
    if temperature_k <= 0:
        return 0.0
    x = H_PLANCK * frequency_hz / (K_BOLTZMANN * temperature_k)
    return 0.0 if x > 700 else 1.0 / math.expm1(x)


def heating_shape(t: float | np.ndarray, gamma_bath: float, gamma_mech: float) -> np.ndarray:
    """``(e^{−γt} − e^{−Γt})/(Γ − γ)`` (s): phonons per unit heating rate k at time t ≥ 0 after
    a pulse (0 before it); ``t e^{−Γt}`` when γ = Γ."""
    t = np.asarray(t, dtype=float)
    tt = np.maximum(t, 0.0)
    d = gamma_mech - gamma_bath
    if abs(d) < 1e-9 * max(gamma_mech, gamma_bath):
        out = tt * np.exp(-gamma_mech * tt)
    else:
        out = (np.exp(-gamma_bath * tt) - np.exp(-gamma_mech * tt)) / d
    return np.where(t > 0, out, 0.0)


def heating_rate_for(n_at_ref: float, t_ref: float, gamma_bath: float, gamma_mech: float) -> float:
    """The bath coupling k (1/s) that gives ``n_at_ref`` pump-induced phonons at ``t_ref``."""
    shape = float(heating_shape(t_ref, gamma_bath, gamma_mech))
    return n_at_ref / shape if shape > 0 else 0.0


def probe_signal(t: np.ndarray, a: float, b: float, gamma_mech: float, gamma_bath: float,
                 n_final: float) -> np.ndarray:
    """Pump-probe model of the supplement: ``d(t) = a e^{−Γt} − b e^{−γt} + n_final``."""
    t = np.asarray(t, dtype=float)
    return a * np.exp(-gamma_mech * t) - b * np.exp(-gamma_bath * t) + n_final


def swap_probability(strength: float | np.ndarray) -> np.ndarray:
    """State-swap probability for a swap strength x (∝ read energy): ``1 − e^{−x}``."""
    return -np.expm1(-np.asarray(strength, dtype=float))


def swap_strength(probability: float) -> float:
    """Inverse of :func:`swap_probability`."""
    return -math.log1p(-probability)


def g2_single(decay: float, n_th: float, p_pump: float, n_leak: float, n_bg: float) -> float:
    """Supplement Eq. S2 with ``decay = e^{−Γt}``."""
    return 1.0 + decay / (n_th + p_pump * decay + n_leak + n_bg)


def cavity_linewidth(wavelength_m: float, q: float) -> float:
    """Optical FWHM κ/2π (Hz) of a cavity at ``wavelength_m`` with quality factor ``q``."""
    return C_LIGHT / wavelength_m / q


def sideband_wavelength(cavity_wavelength_m: float, mechanical_hz: float, kind: str) -> float:
    """Laser wavelength on the blue ('pump', Stokes: ν_c + Ω) or red ('read', anti-Stokes:
    ν_c − Ω) mechanical sideband of a cavity."""
    nu = C_LIGHT / cavity_wavelength_m + (mechanical_hz if kind == "pump" else -mechanical_hz)
    return C_LIGHT / nu


@dataclass(frozen=True)
class Occupation:
    """Phonon budget of one device at one read time (phonons)."""

    initial: float          #: thermal, from the cryostat temperature
    excess: float           #: unidentified (imperfect thermalisation)
    pump_heating: float     #: delayed absorption heating of earlier pump pulses
    read_heating: float     #: absorption during this and earlier read-type pulses

    @property
    def total(self) -> float:
        """n_th(t) of Eq. S2 (incoherent phonons seen by the read pulse)."""
        return self.initial + self.excess + self.pump_heating + self.read_heating


def occupation(t: float, *, n_initial: float, n_excess: float, pumps: list[tuple[float, float]],
               reads_before: list[tuple[float, float]], read_now: float, k_pump: float,
               gamma_bath: float, gamma_mech: float, read_heating_ref: float) -> Occupation:
    """Occupation of one device seen by a read-type pulse at time ``t`` (s).

    ``pumps``: (time, energy factor) of pump-type pulses (delayed heating with the reference
    coupling ``k_pump`` per unit energy factor); ``reads_before``: (time, energy factor) of
    earlier read-type pulses (their prompt heating decays with Γ); ``read_now``: energy factor of
    this pulse (its own prompt heating counts fully, as in Eq. S2's n_probe)."""
    hp = sum(x * k_pump * float(heating_shape(t - tp, gamma_bath, gamma_mech)) for tp, x in pumps)
    hr = read_heating_ref * (read_now + sum(x * math.exp(-gamma_mech * (t - tr))
                                            for tr, x in reads_before if tr < t))
    return Occupation(n_initial, n_excess, hp, hr)
