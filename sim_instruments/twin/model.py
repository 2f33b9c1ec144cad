"""Per-trial click probabilities of the two detectors from the instrument state.

One trial (sync period) has a *core*: the first pump-type pulse (AFG output 1) and the first
read-type pulse after it (AFG output 2). Its clicks form 16 patterns (herald on neither/1/2/both
detectors × read on neither/1/2/both) with the exact per-trial probabilities below; every other
pulse (e.g. the auxiliary lock pulse) gives independent clicks with its own probability.

Notation (k = device A, B; i, j = detector 1, 2; all probabilities per trial)::

    p_k   Stokes probability  = p_ref,k · x_pump · t_k · C_k      (x: ∫V²dt relative to the
    s_k   state swap          = 1 − exp(−κ_k · x_read · t_k · C_k)  reference pulse × laser power;
                                                                    t_B VOA, C cavity factor)
    P_kj  herald click from k = p_k ε_k b_jk d_j F_k               (ε collection, b = 2|U_jk|² beam
    Y_ki  read click per phonon in k = s_k ε_k b_ik d_i F_k         splitter, d detector, F filters)
    n_k   incoherent phonons at the read (thermal, excess, heating; supplement S2's n_th)
    D_k   e^{−Γ_k τ}

    q_j = Σ_k P_kj (1 + n_leak,p,j + n_bg,j)                         herald probability
    R_i = Σ_k Y_ki (n_k + p_k D_k) + (n_leak,i + n_bg,i) Σ_k Y_ki      read probability
    E_ij = Σ_k P_kj Y_ki D_k + 2 σ_ij sqrt(P_Aj Y_Ai D_A P_Bj Y_Bi D_B) Re W
    P(r_i | h_j) = R_i + E_ij / q_j

W = ⟨e^{2iφ0}⟩ · e^{i(2φ_lock − π + θ_setup)} · O_pump · O_read carries the interference phase
θ and the visibility (phase noise |⟨e^{2iφ0}⟩|, photon overlaps |O|); σ_ij = +1 for i = j, −1
for i ≠ j (the beam splitter's sign, main text Eq. 1–2). For one device alone this is exactly the
supplement's Eq. S2: g2 = 1 + D/(n_th + p D + n_leak + n_bg).

Heralds on the two detectors are independent (a double herald needs two scattered photons), and
so are the two read detectors given the heralds; a trial with heralds on both detectors adds both
excesses. Among trials without a herald the read probability is the one that keeps the read
marginal at R_i. A free-running AWG makes the pulses meet its ramps at random times: the
probabilities are then averaged over ``awg_phase_samples`` offsets (an exact mixture).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import devices as dv
from .detection import dark_rate, efficiency_factor
from .spectral import Filters, photon_pair
from .state import LabState, LightPulse

#: pattern index = H + 4 R; bit 0 of H/R: detector 1, bit 1: detector 2
N_PATTERNS = 16


@dataclass
class Component:
    """One mixture component (one AWG offset): the core's ingredients."""

    weight: float
    ps: np.ndarray          #: P[k, j]
    y: np.ndarray           #: Y[k, i]
    decay: np.ndarray       #: D[k]
    occ: np.ndarray         #: n_k + p_k D_k
    false_read: np.ndarray  #: (n_leak,i + n_bg,i) Σ_k Y_ki
    false_herald: np.ndarray
    overlap: complex        #: O_pump · O_read
    extras: list[np.ndarray] = field(default_factory=list)   #: click probs (2,) per extra pulse


@dataclass
class Physics:
    """Everything per-trial that depends on the instrument state only (cached per state)."""

    period: float
    components: list[Component]
    core_pump: LightPulse | None
    core_read: LightPulse | None
    extra_pulses: list[LightPulse]
    extra_probs: list[np.ndarray]            #: mean over components
    dark_hz: np.ndarray                      #: per detector
    efficiency: np.ndarray                   #: detector efficiency factor (bias)
    phase_constant: complex                  #: e^{i(2φ_lock − π + θ_setup)}
    info: dict[str, Any]

    def pattern_probs(self, c2: complex) -> np.ndarray:
        """The 16 core pattern probabilities per trial for ``c2 = ⟨e^{2iφ0}⟩``."""
        out = np.zeros(N_PATTERNS)
        for comp in self.components:
            out += comp.weight * _patterns(comp, c2 * self.phase_constant)
        s = out.sum()
        return out / s if s > 0 else out

    def expected(self, c2: complex) -> dict[str, Any]:
        """Marginals of the core per trial: herald q[j], read r[i], coincidences c[i][j], g2."""
        return marginals(self.pattern_probs(c2))


def marginals(pr: np.ndarray) -> dict[str, Any]:
    """Per-trial marginals of 16 pattern probabilities (or counts): herald[j], read[i],
    coincidence[i][j] (read i with herald j) and g2[i][j]."""
    h = np.arange(N_PATTERNS) % 4
    r = np.arange(N_PATTERNS) // 4
    q = [float(pr[(h >> j) & 1 == 1].sum()) for j in range(2)]
    rr = [float(pr[(r >> i) & 1 == 1].sum()) for i in range(2)]
    c = [[float(pr[((r >> i) & 1 == 1) & ((h >> j) & 1 == 1)].sum()) for j in range(2)] for i in range(2)]
    g2 = [[(c[i][j] / (rr[i] * q[j]) if rr[i] * q[j] > 0 else float("nan")) for j in range(2)]
          for i in range(2)]
    return {"herald": q, "read": rr, "coincidence": c, "g2": g2, "patterns": pr}


def _patterns(c: Component, w: complex) -> np.ndarray:
    ps, y, D = c.ps, c.y, c.decay
    S = ps.sum(axis=0)
    q = S + c.false_herald
    R = (y * c.occ[:, None]).sum(axis=0) + c.false_read
    E = np.zeros((2, 2))
    for i in range(2):
        for j in range(2):
            sig = 1.0 if i == j else -1.0
            inc = float(np.sum(ps[:, j] * y[:, i] * D))
            coh = 2.0 * sig * math.sqrt(max(ps[0, j] * y[0, i] * D[0] * ps[1, j] * y[1, i] * D[1], 0.0))
            E[i, j] = inc + coh * float((w * c.overlap).real)
    q = np.clip(q, 0.0, 1.0)
    PH = np.array([(1 - q[0]) * (1 - q[1]), q[0] * (1 - q[1]), (1 - q[0]) * q[1], q[0] * q[1]])
    cond = np.zeros((4, 2))                    # P(r_i | H)
    for i in range(2):
        e1 = E[i, 0] / q[0] if q[0] > 0 else 0.0
        e2 = E[i, 1] / q[1] if q[1] > 0 else 0.0
        cond[1, i] = R[i] + e1
        cond[2, i] = R[i] + e2
        cond[3, i] = R[i] + e1 + e2
        cond[0, i] = (R[i] - PH[1] * cond[1, i] - PH[2] * cond[2, i] - PH[3] * cond[3, i]) / PH[0] \
            if PH[0] > 0 else 0.0
    cond = np.clip(cond, 0.0, 1.0)
    out = np.empty(N_PATTERNS)
    for H in range(4):
        for Rm in range(4):
            pr = PH[H]
            for i in range(2):
                pr *= cond[H, i] if (Rm >> i) & 1 else 1.0 - cond[H, i]
            out[H + 4 * Rm] = pr
    return out


# ----------------------------------------------------------------------------------------------
# building the physics from the state
# ----------------------------------------------------------------------------------------------

def _beamsplitter(r: float) -> np.ndarray:
    """b[j, k] = 2|U_jk|² (detector j, device k): A sends r to detector 2, B sends r to detector 1."""
    return 2.0 * np.array([[1.0 - r, r], [r, 1.0 - r]])


def build_physics(state: LabState, p: Any) -> Physics:
    c = dv.C_LIGHT
    nu_c = np.array([c / p.cavity_wavelength[0], c / p.cavity_wavelength[1]])
    kappa = nu_c / np.array(p.optical_q)
    omega_hz = np.array(p.mechanical_frequency)
    gamma_mech = 1.0 / np.array(p.decay_time)
    gamma_bath = 1.0 / np.array(p.heating_delay)
    flt = Filters(float(kappa[0]), float(kappa[1]), float(nu_c[0] - nu_c[1]), p.filter_bandwidth, p.filter_stages)
    dom = p.delta_omega
    drive = np.array([1.0, 10 ** (-(state.voa_db - p.voa_balanced) / 10.0)])

    def laser_factor(ls: Any) -> float:
        return (ls.power / p.laser_reference_power) if ls.on else 0.0

    def detuning(ls: Any, kind: str) -> float:
        if not ls.on or not math.isfinite(ls.wavelength) or ls.wavelength <= 0:
            return 0.0
        nu = c / ls.wavelength
        return float(nu - omega_hz[1] - nu_c[1]) if kind == "pump" else float(nu + omega_hz[1] - nu_c[1])

    e_ref_p = p.pump_reference_level ** 2 * p.reference_pulse_duration
    e_ref_r = p.read_reference_level ** 2 * p.reference_pulse_duration
    lp, lr = laser_factor(state.pump_laser), laser_factor(state.read_laser)
    det_p, det_r = detuning(state.pump_laser, "pump"), detuning(state.read_laser, "read")
    xp = [pl.energy / e_ref_p * lp for pl in state.pump_pulses]
    xr = [pl.energy / e_ref_r * lr for pl in state.read_pulses]

    def center(pl: LightPulse) -> float:
        w = pl.levels.astype(float) ** 2
        return float(pl.start + (np.sum(w * (np.arange(w.size) + 0.5)) / max(w.sum(), 1e-300)) * pl.dt)

    pumps = sorted(range(len(state.pump_pulses)), key=lambda i: state.pump_pulses[i].start)
    reads = sorted(range(len(state.read_pulses)), key=lambda i: state.read_pulses[i].start)
    core_p = pumps[0] if pumps else None
    t_core_p = center(state.pump_pulses[core_p]) if core_p is not None else None
    after = [i for i in reads if t_core_p is None or state.read_pulses[i].start >= state.pump_pulses[core_p].start]
    core_r = after[0] if after else None

    # detectors
    eff = np.array([efficiency_factor(state.bias[j].volts, p) * (0.0 if state.bias[j].latched else 1.0)
                    for j in range(2)])
    d = np.array(p.detector_efficiency) * eff
    dark = np.array([0.0 if state.bias[j].latched else dark_rate(state.bias[j].volts, p.dark_count_rate[j], p)
                     for j in range(2)])
    b = _beamsplitter(p.beamsplitter_reflectivity)
    eps = np.array(p.collection_efficiency)
    p_ref = np.array(p.pump_probability)
    kap_ref = np.array([dv.swap_strength(s) for s in p.swap_probability])
    k_heat = np.array([dv.heating_rate_for(p.pump_heating[k], p.heating_reference_delay, gamma_bath[k],
                                           gamma_mech[k]) for k in range(2)])
    n_init = np.array([dv.bose_occupation(omega_hz[k], p.cryostat_temperature) for k in range(2)])

    eom = state.eom
    if eom is not None and eom.free_running:
        m = int(p.awg_phase_samples)
        offsets = [(k + 0.5) / m * eom.duration for k in range(m)]
    else:
        offsets = [0.0]

    def pair(pl: LightPulse, stokes: bool, off: float):
        return photon_pair(pl, stokes=stokes, delta_omega=dom, eom=eom, eom_offset=off,
                           detuning_b=det_p if stokes else det_r, flt=flt, ref_duration=p.reference_pulse_duration)

    def occupation(k: int, t: float, i_read: int) -> dv.Occupation:
        pmps = [(center(state.pump_pulses[i]), xp[i] * drive[k]) for i in pumps
                if center(state.pump_pulses[i]) < t]
        before = [(center(state.read_pulses[i]), xr[i] * drive[k]) for i in reads
                  if i != i_read and center(state.read_pulses[i]) < t]
        return dv.occupation(t, n_initial=n_init[k], n_excess=p.excess_occupation[k], pumps=pmps,
                             reads_before=before, read_now=xr[i_read] * drive[k], k_pump=k_heat[k],
                             gamma_bath=gamma_bath[k], gamma_mech=gamma_mech[k],
                             read_heating_ref=p.read_heating[k])

    comps: list[Component] = []
    extra_idx = [("pump", i) for i in pumps if i != core_p] + [("read", i) for i in reads if i != core_r]
    info: dict[str, Any] = {}
    for off in offsets:
        # core pump
        if core_p is not None:
            pp = pair(state.pump_pulses[core_p], True, off)
            pk = p_ref * xp[core_p] * drive * np.array(pp.cavity)
            ps = (pk * eps * np.array(pp.detection))[:, None] * b.T * d[None, :]
            o_p = pp.overlap
        else:
            pp, pk, ps, o_p = None, np.zeros(2), np.zeros((2, 2)), 0j
        # core read
        if core_r is not None:
            rl = state.read_pulses[core_r]
            rp = pair(rl, False, off)
            sk = np.asarray(dv.swap_probability(kap_ref * xr[core_r] * drive * np.array(rp.cavity)))
            y = (sk * eps * np.array(rp.detection))[:, None] * b.T * d[None, :]
            t_r = center(rl)
            tau = t_r - t_core_p if t_core_p is not None else math.inf
            D = np.exp(-gamma_mech * tau) if math.isfinite(tau) else np.zeros(2)
            occs = [occupation(k, t_r, core_r) for k in range(2)]
            n_th = np.array([o.total for o in occs])
            o_r = rp.overlap
        else:
            rp, sk, y, D, n_th, o_r, tau, occs = None, np.zeros(2), np.zeros((2, 2)), np.zeros(2), np.zeros(2), 0j, math.nan, []
        occ = n_th + pk * D
        false_read = (np.array(p.leak_per_phonon) + np.array(p.background_per_phonon)) * y.sum(axis=0)
        false_herald = (np.array(p.herald_leak) + np.array(p.background_per_phonon)) * ps.sum(axis=0)
        comp = Component(1.0 / len(offsets), ps, y, D, occ, false_read, false_herald, complex(o_p * o_r))
        # independent pulses
        for kind, i in extra_idx:
            if kind == "pump":
                pl = state.pump_pulses[i]
                ep = pair(pl, True, off)
                pe = p_ref * xp[i] * drive * np.array(ep.cavity)
                psx = (pe * eps * np.array(ep.detection))[:, None] * b.T * d[None, :]
                probs = psx.sum(axis=0) * (1 + np.array(p.herald_leak) + np.array(p.background_per_phonon))
            else:
                pl = state.read_pulses[i]
                ep = pair(pl, False, off)
                se = np.asarray(dv.swap_probability(kap_ref * xr[i] * drive * np.array(ep.cavity)))
                ye = (se * eps * np.array(ep.detection))[:, None] * b.T * d[None, :]
                t = center(pl)
                occ_e = np.array([occupation(k, t, i).total for k in range(2)])
                if t_core_p is not None and t > t_core_p:
                    left = (1.0 - sk) if (core_r is not None and center(state.read_pulses[core_r]) < t) else 1.0
                    occ_e = occ_e + pk * np.exp(-gamma_mech * (t - t_core_p)) * left
                probs = (ye * occ_e[:, None]).sum(axis=0) + \
                    (np.array(p.leak_per_phonon) + np.array(p.background_per_phonon)) * ye.sum(axis=0)
            comp.extras.append(np.clip(probs, 0.0, 1.0))
        comps.append(comp)
        if not info:
            info = {"p_pump": pk.tolist(), "swap": sk.tolist(), "n_th": n_th.tolist(), "decay": D.tolist(),
                    "tau": tau, "overlap_pump": complex(o_p), "overlap_read": complex(o_r),
                    "pump_factors": None if pp is None else {"cavity": pp.cavity, "detection": pp.detection},
                    "read_factors": None if rp is None else {"cavity": rp.cavity, "detection": rp.detection},
                    "occupation": [vars(o) for o in occs], "n_initial": n_init.tolist(),
                    "drive": drive.tolist(), "detector_factor": eff.tolist(),
                    "g2_single_S2": [dv.g2_single(D[k], n_th[k], pk[k], float(np.mean(p.leak_per_phonon)),
                                                  float(np.mean(p.background_per_phonon)))
                                     if D[k] > 0 else float("nan") for k in range(2)]}
    info["overlap_abs_mean"] = float(np.mean([abs(cm.overlap) for cm in comps]))
    info["awg_offsets"] = len(offsets)
    phase_const = complex(np.exp(1j * (2 * p.lock_offset - math.pi + p.setup_phase)))
    extra_pulses = [state.pump_pulses[i] if kind == "pump" else state.read_pulses[i] for kind, i in extra_idx]
    extra_probs = [np.mean([cm.extras[n] for cm in comps], axis=0) for n in range(len(extra_idx))]
    return Physics(state.period, comps,
                   state.pump_pulses[core_p] if core_p is not None else None,
                   state.read_pulses[core_r] if core_r is not None else None,
                   extra_pulses, extra_probs, dark, eff, phase_const, info)
