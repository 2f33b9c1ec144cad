"""Steady-state mechanical entanglement by detuned parametric amplification.

Theory of Szorkovszky et al., *Detuned parametric amplification for steady-state mechanical
entanglement* (2014, arXiv:1402.6392v2; seed text
``szorkovszky2014_detuned_parametric_entanglement.txt``). Equation numbers below are the paper's;
``docs/parametric.md`` explains the choices made.

Two oscillators of equal frequency, each damped at rate γ into a bath of mean occupation N, are
driven parametrically at 2ω_d and both positions are measured weakly and continuously (rate μ,
efficiency η; a lock-in gives both quadratures X_j, Y_j of each oscillator).

* **Model one, modulated coupling** (Eq. 1–8): H̃/ħ = Δ(a†a + b†b + 1) + χ(ab + a†b†). The
  collective quadratures X± = (X1 ± X2)/√2, Y± = (Y1 ± Y2)/√2 split into two independent pairs
  with drift matrix (Eq. 7)  A± = [[−γ, Δ ∓ χ], [−Δ ∓ χ, −γ]].
* **Model two, constant coupling** Γ with single-mode parametric drives χ on resonance
  (Eq. 19–24): the pairs (U1, U2), (V1, V2) of Eq. 22 obey the same equations with Δ replaced by
  the coupling Γ (half the normal-mode splitting). With unequal damping γ1 ≠ γ2 the pairs stay
  independent but see different drives (Eq. 25–28): χ1 = χ − (γ1 − γ2)/2 for (U1, U2),
  χ2 = χ + (γ1 − γ2)/2 for (V1, V2), γ = (γ1 + γ2)/2.

Threshold. Both eigenvalues of A± are −γ ± √(χ² − Δ²): the **two pairs become unstable
together**, at χ = χ_th = √(γ² + Δ²) (for |Δ| < χ one quadrature combination of *each* pair is
amplified: X+ cos + Y+ sin for the + pair, its 90°-rotated partner for the − pair). Steady state
exists only for χ < χ_th. With unequal damping the more strongly driven pair, max(|χ1|, |χ2|),
reaches threshold first.

Conditional covariance of each pair (Eq. 12–14) obeys the Riccati equation

    dV/dt = A V + V Aᵀ + 2γ V0 I − 4ημ V V,      V0 = N + 1/2 + μ/(2γ)        (Eq. 12, 14)

(Eq. 12 written out for V = [[V_X, C], [C, V_Y]]; the printed Eq. 12 uses the opposite sign for
C, which leaves the eigenvalues unchanged). Its steady state is found with
``scipy.linalg.solve_continuous_are`` and, as a cross-check, by integrating the ODE in time. The
smaller eigenvalue of each steady-state covariance is V_α± and the separability is
S = 2√(V_α+ V_α−) (Eq. 15); S < 1 means entanglement, E_N = −ln S (symmetric states). The
closed form is Eq. 16–18 (branch sin 2α > 0).

Units: every rate (γ, γ1, γ2, χ, Δ, Γ, μ) must be in the same unit — s⁻¹, rad/s, or simply
units of γ (γ = 1). N and η are pure numbers; S, V_α, SNR, α (radians) are dimensionless.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy.integrate import solve_ivp
from scipy.linalg import solve_continuous_are
from scipy.optimize import minimize_scalar

from ..errors import InputError

#: numerical and closed-form S agree at least this well wherever both apply
AGREEMENT_TOL = 1e-6

MODELS = ("modulated", "constant")

# --------------------------------------------------------------------------------------------
# The two models: quadratic Hamiltonians, their drift matrices and collective bases
# --------------------------------------------------------------------------------------------
#: r = (X1, Y1, X2, Y2) with [X_j, Y_j] = i; for H/ħ = ½ rᵀ G r, dr/dt = Ω G r
_OMEGA = np.kron(np.eye(2), np.array([[0.0, 1.0], [-1.0, 0.0]]))
_S2 = 1.0 / math.sqrt(2.0)
#: rows (X+, Y+, X−, Y−) in terms of (X1, Y1, X2, Y2), Eq. 3
BASIS_MODULATED = _S2 * np.array([[1, 0, 1, 0], [0, 1, 0, 1], [1, 0, -1, 0], [0, 1, 0, -1]], float)
#: rows (U1, U2, V1, V2) in terms of (X1, Y1, X2, Y2), Eq. 22
BASIS_CONSTANT = _S2 * np.array([[1, 0, 0, 1], [1, 0, 0, -1], [0, 1, -1, 0], [0, 1, 1, 0]], float)


def hamiltonian_modulated(chi: float, delta: float) -> np.ndarray:
    """G of Eq. 2 in the rotating frame: H̃/ħ = Δ/2 (X1² + Y1² + X2² + Y2²) + χ(X1X2 − Y1Y2)."""
    g = delta * np.eye(4)
    g[0, 2] = g[2, 0] = chi
    g[1, 3] = g[3, 1] = -chi
    return g


def hamiltonian_constant(chi: float, splitting: float) -> np.ndarray:
    """G of Eq. 20: H̃/ħ = Γ(X1X2 + Y1Y2) + χ/2 (X1Y1 + Y1X1 + X2Y2 + Y2X2)."""
    g = np.zeros((4, 4))
    g[0, 2] = g[2, 0] = g[1, 3] = g[3, 1] = splitting
    g[0, 1] = g[1, 0] = g[2, 3] = g[3, 2] = chi
    return g


def full_drift(hamiltonian: np.ndarray, gamma1: float, gamma2: float) -> np.ndarray:
    """4×4 drift of (X1, Y1, X2, Y2): Heisenberg motion Ω G plus damping γ1, γ2 (Eq. 6, 24, 25
    before the change to collective quadratures)."""
    return _OMEGA @ hamiltonian - np.diag([gamma1, gamma1, gamma2, gamma2])


def pair_drift(gamma: float, chi: float, delta: float, sign: int) -> np.ndarray:
    """Drift matrix A± of the pair (X±, Y±), Eq. 7: [[−γ, Δ ∓ χ], [−Δ ∓ χ, −γ]] (sign = ±1)."""
    return np.array([[-gamma, delta - sign * chi], [-delta - sign * chi, -gamma]], float)


def constant_pair_drift(gamma: float, chi_eff: float, splitting: float, pair: str) -> np.ndarray:
    """Drift of (U1, U2) (pair="U", drive χ1) or (V1, V2) (pair="V", drive χ2), Eq. 24/25."""
    if pair == "U":
        return np.array([[-gamma, chi_eff - splitting], [chi_eff + splitting, -gamma]], float)
    if pair == "V":
        return np.array([[-gamma, -chi_eff - splitting], [-chi_eff + splitting, -gamma]], float)
    raise ValueError(f"pair must be 'U' or 'V', not {pair!r}")


def effective_drives(chi: float, gamma1: float, gamma2: float) -> tuple[float, float, float]:
    """(χ1, χ2, γ) of Eq. 26–28 for the constant-coupling scheme with unequal damping."""
    return chi - (gamma1 - gamma2) / 2, chi + (gamma1 - gamma2) / 2, (gamma1 + gamma2) / 2


def threshold(gamma: float, delta: float) -> float:
    """χ_th = √(γ² + Δ²) (Section 2); with constant coupling Δ → Γ."""
    return math.hypot(gamma, delta)


def threshold_detuning(gamma: float, chi: float) -> float:
    """The smallest |Δ| keeping a drive χ below threshold, √(χ² − γ²) (0 if χ ≤ γ)."""
    return math.sqrt(chi * chi - gamma * gamma) if chi > gamma else 0.0


def v0(gamma: float, nbar: float, mu: float) -> float:
    """V0 = N + 1/2 + μ/(2γ), Eq. 14: thermal plus measurement back-action variance."""
    return nbar + 0.5 + mu / (2 * gamma)


def snr(gamma: float, nbar: float, eta: float, mu: float) -> float:
    """SNR = 2ημV0/γ = 2ημ(N + 1/2)/γ + ημ²/γ², Eq. 17."""
    return 2 * eta * mu * v0(gamma, nbar, mu) / gamma


# --------------------------------------------------------------------------------------------
# The conditional-covariance Riccati equation (Eq. 12)
# --------------------------------------------------------------------------------------------
def riccati_rhs(v: np.ndarray, a: np.ndarray, diffusion: np.ndarray, k: float) -> np.ndarray:
    """dV/dt = A V + V Aᵀ + D − k V V with D = 2γV0 I and k = 4ημ (Eq. 12)."""
    return a @ v + v @ a.T + diffusion - k * v @ v


def riccati_steady_state(a: np.ndarray, diffusion: np.ndarray, k: float) -> np.ndarray:
    """Stabilising steady state of Eq. 12 via ``solve_continuous_are``.

    SciPy solves  aᵀX + X a − X b r⁻¹ bᵀ X + q = 0.  With a = Aᵀ, b = I, r = I/k, q = D this is
    A V + V Aᵀ − k V V + D = 0, our steady state; the stabilising root (Aᵀ − kV Hurwitz) is the
    positive-definite conditional covariance (the Kalman filter's error covariance).
    """
    n = a.shape[0]
    v = solve_continuous_are(a.T, np.eye(n), diffusion, np.eye(n) / k)
    return (v + v.T) / 2


def riccati_relax(a: np.ndarray, diffusion: np.ndarray, k: float, v_init: np.ndarray,
                  *, rtol: float = 1e-11, tol: float = 1e-10,
                  max_time: float | None = None) -> tuple[np.ndarray, float]:
    """Integrate Eq. 12 from ``v_init`` with ``solve_ivp`` until dV/dt has died away.

    Integrates in chunks of 10/γ (γ = −tr A/2) until ‖dV/dt‖ ≤ tol·‖D‖ (or ``max_time``);
    returns (V, t). Independent of :func:`riccati_steady_state`: a cross-check of it.
    """
    n = a.shape[0]
    gamma = -np.trace(a) / n
    chunk = 10.0 / gamma
    max_time = max_time if max_time is not None else 2000.0 / gamma
    scale = float(np.max(np.abs(diffusion)))

    def f(_t, y):
        return riccati_rhs(y.reshape(n, n), a, diffusion, k).ravel()

    y, t = np.asarray(v_init, float).ravel(), 0.0
    while True:
        sol = solve_ivp(f, (t, t + chunk), y, method="LSODA", rtol=rtol, atol=rtol * scale * 1e-3)
        if not sol.success:
            raise RuntimeError(f"Riccati integration failed: {sol.message}")
        y, t = sol.y[:, -1], t + chunk
        v = y.reshape(n, n)
        if np.max(np.abs(f(t, y))) <= tol * scale or t >= max_time:
            return (v + v.T) / 2, t


def squeezed_variance(v: np.ndarray) -> float:
    """V_α: the smaller eigenvalue of a 2×2 conditional covariance (best quadrature's variance)."""
    return float(np.linalg.eigvalsh(v)[0])


def squeezed_angle(v: np.ndarray) -> float:
    """Angle θ ∈ [0, π) of the best quadrature X cos θ + Y sin θ of a 2×2 covariance."""
    w, vec = np.linalg.eigh(v)
    return float(math.atan2(vec[1, 0], vec[0, 0]) % math.pi)


# --------------------------------------------------------------------------------------------
# Closed form (Eq. 16–18)
# --------------------------------------------------------------------------------------------
def squeezing_angle(gamma: float, chi: float, delta: float, nbar: float, eta: float,
                    mu: float) -> float:
    """α of Eq. 18, branch sin 2α > 0 (α ∈ (0, π/2)): the best quadrature X+ cos α + Y+ sin α.

    Eq. 18 with a = χ_th², c = χ², s = 4γ²SNR reads cos²2α = (Δ²/a)(a + c + s − √R)/(2c),
    R = (a − c)² + 2(a + c)s + s². Since (a + c + s)² − R = 4ac this equals
    2Δ²/(a + c + s + √R): the same number, free of cancellation and valid at χ = 0.
    """
    a, c, s = gamma * gamma + delta * delta, chi * chi, 4 * gamma * gamma * snr(gamma, nbar, eta, mu)
    root = math.sqrt((a - c) ** 2 + 2 * (a + c) * s + s * s)
    cos2a = delta * math.sqrt(2.0 / (a + c + s + root))
    return 0.5 * math.acos(max(-1.0, min(1.0, cos2a)))


def closed_form_S(gamma: float, chi: float, delta: float, nbar: float, eta: float,
                  mu: float) -> tuple[float, float]:
    """(S, α) of Eq. 16–18 for one pair driven at χ with detuning Δ; S = 2V_α of that pair.

    Eq. 16, S = [√(b² + 4γ²SNR) − b]/(2ημ) with b = γ + χ sin 2α, is evaluated as
    S = 4γV0/(√(b² + 4γ²SNR) + b) (multiply by the conjugate; 4γ²SNR/(2ημ) = 4γV0), which
    avoids cancellation at weak measurement. A pair's V_α depends on |χ| only.
    """
    chi = abs(chi)
    alpha = squeezing_angle(gamma, chi, delta, nbar, eta, mu)
    b = gamma + chi * math.sin(2 * alpha)
    s = 4 * gamma * gamma * snr(gamma, nbar, eta, mu)
    return 4 * gamma * v0(gamma, nbar, mu) / (math.sqrt(b * b + s) + b), alpha


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Entanglement:
    """Steady-state conditional entanglement of one parameter set (all from the same numbers).

    ``S`` is the numerical separability 2√(V_plus·V_minus) (Eq. 15); ``S_closed_form`` the
    Eq. 16 value (or for unequal damping 2√(V_α(χ1) V_α(χ2)) from Eq. 16 per pair).
    ``V_plus``/``V_minus`` are V_α of the + and − pairs (model two: of (U1, U2) and (V1, V2)).
    ``alpha`` is Eq. 18's angle of the + pair (radians); ``alpha_plus``/``alpha_minus`` the
    numerical best-quadrature angles of the two pairs in their own planes (mod π).
    """

    model: str
    S: float
    V_plus: float
    V_minus: float
    alpha: float
    threshold: float
    entangled: bool
    E_N: float
    SNR: float
    V0: float
    S_closed_form: float | None
    S_numerical: float
    alpha_plus: float
    alpha_minus: float
    chi_effective: tuple[float, float]
    cov_plus: np.ndarray = field(repr=False)
    cov_minus: np.ndarray = field(repr=False)
    params: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        """JSON-ready dict (keys of ``labctl parametric theory --json``)."""
        return {
            "S": self.S, "V_plus": self.V_plus, "V_minus": self.V_minus, "alpha": self.alpha,
            "threshold": self.threshold, "entangled": self.entangled, "E_N": self.E_N,
            "SNR": self.SNR, "V0": self.V0, "S_closed_form": self.S_closed_form,
            "S_numerical": self.S_numerical, "alpha_deg": math.degrees(self.alpha),
            "alpha_plus": self.alpha_plus, "alpha_minus": self.alpha_minus,
            "chi_effective": list(self.chi_effective),
            "covariance_plus": self.cov_plus.tolist(), "covariance_minus": self.cov_minus.tolist(),
            "model": self.model, "params": dict(self.params),
        }


def _result(model, cov_p, cov_m, s_closed, alpha, chi_th, gamma, nbar, eta, mu, chis, params):
    vp, vm = squeezed_variance(cov_p), squeezed_variance(cov_m)
    s = 2 * math.sqrt(vp * vm)
    return Entanglement(
        model=model, S=s, V_plus=vp, V_minus=vm, alpha=alpha, threshold=chi_th,
        entangled=bool(s < 1), E_N=max(0.0, -math.log(s)), SNR=snr(gamma, nbar, eta, mu),
        V0=v0(gamma, nbar, mu), S_closed_form=s_closed, S_numerical=s,
        alpha_plus=squeezed_angle(cov_p), alpha_minus=squeezed_angle(cov_m),
        chi_effective=chis, cov_plus=cov_p, cov_minus=cov_m, params=params)


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------
def _finite(name: str, value: float) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} = {value!r} is not a number", fix=f"give {name} as a number")
    if not math.isfinite(x):
        raise InputError(f"{name} = {value} is not a finite number", fix=f"give a finite {name}")
    return x


def validate(gamma, chi, delta, nbar, eta, mu=None, *, gamma_diff=0.0, model="modulated",
             allow_threshold=False) -> None:
    """Raise :class:`InputError` unless γ > 0, χ ≥ 0, N ≥ 0, μ > 0, 0 < η ≤ 1, every pair below
    threshold (χ < χ_th; with ``allow_threshold`` χ = χ_th is accepted as a limit)."""
    gamma, chi, delta, nbar, eta = (_finite(n, v) for n, v in
                                    (("gamma", gamma), ("chi", chi), ("delta", delta),
                                     ("nbar", nbar), ("eta", eta)))
    gamma_diff = _finite("gamma_diff", gamma_diff)
    if model not in MODELS:
        raise InputError(f"unknown model {model!r}", fix="use 'modulated' or 'constant'")
    if gamma <= 0:
        raise InputError(f"damping rate γ = {gamma:g} must be > 0", fix="give a positive --gamma")
    if chi < 0:
        raise InputError(f"parametric drive χ = {chi:g} must be ≥ 0",
                         fix="give --chi ≥ 0 (the sign of the drive is absorbed in the phase)")
    if nbar < 0:
        raise InputError(f"bath occupation N = {nbar:g} must be ≥ 0", fix="give --nbar ≥ 0")
    if not 0 < eta <= 1:
        raise InputError(f"detection efficiency η = {eta:g} must be in (0, 1]",
                         fix="give 0 < --eta ≤ 1")
    if mu is not None:
        mu = _finite("mu", mu)
        if mu <= 0:
            raise InputError(f"measurement strength μ = {mu:g} must be > 0",
                             fix="give a positive --mu (same unit as γ)")
    if gamma_diff != 0 and model != "constant":
        raise InputError(
            "unequal damping (γ1 ≠ γ2) couples the ± pairs of the modulated-coupling scheme, "
            "which this theory does not cover (paper, Sections 2 and 7)",
            fix="use the constant-coupling model (--model constant) or set --gamma-diff 0")
    if abs(gamma_diff) >= 2 * gamma:
        raise InputError(
            f"γ1 − γ2 = {gamma_diff:g} with mean γ = {gamma:g} makes a damping rate ≤ 0",
            fix="keep |γ1 − γ2| < 2γ")
    chi_th = threshold(gamma, delta)
    c1, c2, _ = effective_drives(chi, gamma + gamma_diff / 2, gamma - gamma_diff / 2)
    worst = max(abs(c1), abs(c2))
    over = worst > chi_th if allow_threshold else worst >= chi_th
    if over:
        sym = "Δ" if model == "modulated" else "Γ"
        dname = "Δ" if model == "modulated" else "the coupling Γ"
        what = "χ" if gamma_diff == 0 else f"the effective drive max(|χ1|, |χ2|) (χ = {chi:g})"
        pct = (worst / chi_th - 1) * 100
        where = "at" if pct == 0 else f"{pct:.3g} % above"
        chi_max = chi_th - abs(gamma_diff) / 2
        raise InputError(
            f"{what} = {worst:g} is {where} the threshold χ_th = √(γ² + {sym}²) = {chi_th:.6g} "
            f"(γ = {gamma:g}, {dname} = {delta:g}): above threshold the amplified quadratures "
            "grow without bound and there is no steady state",
            fix=f"lower χ below {chi_max:.6g} or raise |{sym}| above "
                f"√({'χ' if gamma_diff == 0 else 'max|χ1,2|'}² − γ²) = "
                f"{threshold_detuning(gamma, worst):.6g}")


# --------------------------------------------------------------------------------------------
# The models
# --------------------------------------------------------------------------------------------
def modulated_coupling(gamma: float, chi: float, delta: float, nbar: float, eta: float,
                       mu: float, *, allow_threshold: bool = False) -> Entanglement:
    """Model one (Eq. 1–18): modulated coupling at 2ω_d = 2(ω_m − Δ), equal damping γ.

    Solves Eq. 12 for both pairs A± (Eq. 7) numerically and evaluates Eq. 16–18.
    """
    validate(gamma, chi, delta, nbar, eta, mu, allow_threshold=allow_threshold)
    diffusion = 2 * gamma * v0(gamma, nbar, mu) * np.eye(2)
    k = 4 * eta * mu
    cov_p = riccati_steady_state(pair_drift(gamma, chi, delta, +1), diffusion, k)
    cov_m = riccati_steady_state(pair_drift(gamma, chi, delta, -1), diffusion, k)
    s_closed, alpha = closed_form_S(gamma, chi, delta, nbar, eta, mu)
    return _result("modulated", cov_p, cov_m, s_closed, alpha, threshold(gamma, delta), gamma,
                   nbar, eta, mu, (chi, chi),
                   dict(gamma=gamma, chi=chi, delta=delta, nbar=nbar, eta=eta, mu=mu))


def constant_coupling(gamma1: float, gamma2: float, chi: float, splitting: float, nbar: float,
                      eta: float, mu: float, *, exact_noise: bool = False,
                      allow_threshold: bool = False) -> Entanglement:
    """Model two (Eq. 19–28): constant coupling Γ, resonant single-mode drives χ, damping γ1, γ2.

    The pairs (U1, U2) and (V1, V2) see drives χ1, χ2 (Eq. 26–27) and damping γ (Eq. 28); the
    paper gives both pairs white noise 2γV0 (Eq. 25). With ``exact_noise`` the thermal noise of
    the two oscillators is kept separate — the pair noise then has an off-diagonal
    (γ1 − γ2)(N + 1/2) the paper drops — and only the numerical S is returned (no closed form).
    With γ1 = γ2 the results equal model one's with Δ = Γ.
    """
    gamma1, gamma2 = _finite("gamma1", gamma1), _finite("gamma2", gamma2)
    if gamma1 <= 0 or gamma2 <= 0:
        raise InputError(f"damping rates γ1 = {gamma1:g}, γ2 = {gamma2:g} must both be > 0",
                         fix="give positive damping rates")
    c1, c2, gamma = effective_drives(chi, gamma1, gamma2)
    validate(gamma, chi, splitting, nbar, eta, mu, gamma_diff=gamma1 - gamma2, model="constant",
             allow_threshold=allow_threshold)
    k = 4 * eta * mu
    a_u = constant_pair_drift(gamma, c1, splitting, "U")
    a_v = constant_pair_drift(gamma, c2, splitting, "V")
    diffusion = 2 * gamma * v0(gamma, nbar, mu) * np.eye(2)
    d_u = d_v = diffusion
    if exact_noise:
        off = (gamma1 - gamma2) * (nbar + 0.5)
        d_u = d_v = diffusion + off * np.array([[0.0, 1.0], [1.0, 0.0]])
    cov_u = riccati_steady_state(a_u, d_u, k)
    cov_v = riccati_steady_state(a_v, d_v, k)
    s1, alpha = closed_form_S(gamma, c1, splitting, nbar, eta, mu)
    s2, _ = closed_form_S(gamma, c2, splitting, nbar, eta, mu)
    s_closed = None if exact_noise else math.sqrt(s1 * s2)
    return _result("constant", cov_u, cov_v, s_closed, alpha, threshold(gamma, splitting), gamma,
                   nbar, eta, mu, (c1, c2),
                   dict(gamma1=gamma1, gamma2=gamma2, gamma=gamma, chi=chi, splitting=splitting,
                        nbar=nbar, eta=eta, mu=mu, exact_noise=exact_noise))


def theory(gamma: float, chi: float, delta: float, nbar: float, eta: float, mu: float, *,
           model: str = "modulated", gamma_diff: float = 0.0, exact_noise: bool = False,
           allow_threshold: bool = False) -> Entanglement:
    """One entry point for both models. ``gamma`` is the mean damping; for ``model="constant"``
    ``delta`` is the coupling Γ and ``gamma_diff`` = γ1 − γ2."""
    validate(gamma, chi, delta, nbar, eta, mu, gamma_diff=gamma_diff, model=model,
             allow_threshold=allow_threshold)
    if model == "modulated":
        return modulated_coupling(gamma, chi, delta, nbar, eta, mu, allow_threshold=allow_threshold)
    return constant_coupling(gamma + gamma_diff / 2, gamma - gamma_diff / 2, chi, delta, nbar,
                             eta, mu, exact_noise=exact_noise, allow_threshold=allow_threshold)


def optimal_mu(gamma: float, chi: float, delta: float, nbar: float, eta: float, *,
               model: str = "modulated", gamma_diff: float = 0.0,
               allow_threshold: bool = False) -> tuple[float, Entanglement]:
    """Measurement strength μ minimising S at fixed χ, Δ (or Γ), N, η; returns (μ_opt, result).

    S(μ) falls as the measurement conditions the squeezed quadratures and rises again when
    back-action (the μ² term of Eq. 17) dominates; for χ ≫ γ the optimum is near γ(N + 1/2)
    (Section 4). A log-spaced scan over 10⁻⁶…10⁶ γ brackets the minimum, then Brent's bounded
    method (``scipy.optimize.minimize_scalar``) refines it in ln μ.
    """
    validate(gamma, chi, delta, nbar, eta, None, gamma_diff=gamma_diff, model=model,
             allow_threshold=allow_threshold)

    def s_of(ln_mu: float) -> float:
        return theory(gamma, chi, delta, nbar, eta, math.exp(ln_mu), model=model,
                      gamma_diff=gamma_diff, allow_threshold=allow_threshold).S

    grid = np.log(gamma) + np.linspace(math.log(1e-6), math.log(1e6), 121)
    vals = [s_of(x) for x in grid]
    i = int(np.argmin(vals))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    res = minimize_scalar(s_of, bounds=(lo, hi), method="bounded",
                          options={"xatol": 1e-10, "maxiter": 500})
    mu_opt = math.exp(res.x)
    return mu_opt, theory(gamma, chi, delta, nbar, eta, mu_opt, model=model,
                          gamma_diff=gamma_diff, allow_threshold=allow_threshold)


# --------------------------------------------------------------------------------------------
# Figure 2
# --------------------------------------------------------------------------------------------
def near_threshold_detuning(gamma: float, chi: float, margin: float = 0.0) -> float:
    """Δ (or Γ) placing a drive χ a fraction ``margin`` below threshold: χ = (1 − margin)·χ_th.

    margin = 0 is the threshold itself, Δ = √(χ² − γ²): S falls monotonically as Δ approaches
    it from above, so this is the infimum of S over Δ at fixed χ ("optimally squeezed", Section 7).
    """
    return threshold_detuning(gamma, chi / (1.0 - margin))


def figure2_curves(mu_over_gamma: np.ndarray, *, chis=(25.0, 50.0), nbar: float = 5.0,
                   eta: float = 1.0, asymmetry: float = 0.5, margin: float = 0.0) -> list[dict]:
    """Data of Fig. 2: S against μ/γ (γ = 1 = mean damping) for each χ/γ.

    Solid: symmetric damping (either model), Δ = near_threshold_detuning(γ, χ, margin).
    Dashed: constant coupling with γ_D = asymmetry·γ_S, read as γ_S = γ1 + γ2 = 2γ and
    γ_D = γ1 − γ2 (so 0.5 gives γ1 = 1.5γ, γ2 = 0.5γ, χ1,2 = χ ∓ γ/2); the coupling Γ puts the
    more strongly driven pair (χ2) at the same margin from threshold, Γ = √((χ2/(1−margin))² − γ²).
    """
    gamma = 1.0
    allow = margin == 0.0
    gd = asymmetry * 2 * gamma
    curves = []
    for chi in chis:
        d = near_threshold_detuning(gamma, chi, margin)
        s = [theory(gamma, chi, d, nbar, eta, m, allow_threshold=allow).S for m in mu_over_gamma]
        curves.append(dict(chi=chi, damping="symmetric", delta=d, gamma_diff=0.0, S=np.array(s)))
        if asymmetry:
            c2 = chi + abs(gd) / 2
            g = near_threshold_detuning(gamma, c2, margin)
            s = [theory(gamma, chi, g, nbar, eta, m, model="constant", gamma_diff=gd,
                        allow_threshold=allow).S for m in mu_over_gamma]
            curves.append(dict(chi=chi, damping="asymmetric", delta=g, gamma_diff=gd,
                               S=np.array(s)))
    return curves


def plot_figure2(path, *, mu_min: float = 1e-2, mu_max: float = 1e3, points: int = 161,
                 **kw) -> list[dict]:
    """Draw Fig. 2 (S against μ/γ) to ``path`` with matplotlib's Agg canvas; returns the curves."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from pathlib import Path

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    mus = np.logspace(math.log10(mu_min), math.log10(mu_max), points)
    curves = figure2_curves(mus, **kw)
    fig = Figure(figsize=(6.4, 4.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    shades = {c: col for c, col in zip(sorted({c["chi"] for c in curves}),
                                       ("#7fa7d9", "#123f80", "#444444", "#000000"))}
    for c in curves:
        sym = c["damping"] == "symmetric"
        label = (f"χ/γ = {c['chi']:g}, " +
                 ("γ1 = γ2" if sym else f"γ_D = {c['gamma_diff'] / 2:g} γ_S (constant coupling)"))
        ax.plot(mus, c["S"], ls="-" if sym else "--", color=shades[c["chi"]], lw=1.8, label=label)
    ax.axhline(1.0, color="grey", lw=0.9, ls=":", label="S = 1 (entangled below)")
    ax.set_xscale("log")
    ax.set_xlabel("measurement strength μ/γ")
    ax.set_ylabel("separability S = 2√(V$_{α+}$V$_{α−}$)")
    n, e = kw.get("nbar", 5.0), kw.get("eta", 1.0)
    m = kw.get("margin", 0.0)
    det = "at threshold (χ → χ_th)" if m == 0 else f"χ = {1 - m:g} χ_th"
    ax.set_title(f"Szorkovszky et al. 2014, Fig. 2: N = {n:g}, η = {e:g}, {det}", fontsize=9)
    ax.set_ylim(0, max(2.0, min(3.0, max(float(np.max(c["S"])) for c in curves) * 1.05)))
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    return curves
