"""State and parameter estimation for the steady-state parametric-entanglement experiment.

Szorkovszky et al. 2014 (arXiv:1402.6392, seed ``szorkovszky2014_detuned_parametric_entanglement``)
propose to *verify* the entanglement by "reconstructing the conditional covariance matrix from the
measurement record". This module does that from what the lab actually records — the demodulated
outputs (X, Y) of one lock-in amplifier per oscillator — and from nothing else:

1. **Model** (:class:`ParametricModel`). Quadratures r = (X1, Y1, X2, Y2) (vacuum variance 1/2)
   obey the linear SDE  dr = A r dt + dw,  E[dw dwᵀ] = D dt,  with A the drift of
   :func:`labctl.physics.parametric.full_drift` (Eq. 6/7 modulated coupling, Eq. 24/25 constant
   coupling) and D = diag(2γ_j(N + ½) + μ): thermal noise plus measurement back-action, i.e.
   2γV0 per quadrature (Eq. 14). Each quadrature is measured with record
   dy_j = √(4ημ) r_j dt + dW_j (unit Wiener noise, independent of dw). For this classical linear
   Gaussian model the Kalman–Bucy error covariance obeys  dP/dt = AP + PAᵀ + D − 4ημ P²,  which
   in the collective basis is exactly Eq. 12 for each pair: the filter's error covariance *is* the
   paper's conditional covariance, and V_α± are its smallest pair eigenvalues. (A linear quantum
   system with Gaussian states has the same conditional moments and the same record statistics
   as this classical model: the simulated r is a Wigner-function sample.)

2. **Lock-in** (:class:`LockinFilter`). Each record is low-pass filtered by the lock-in (``order``
   cascaded RC stages of time constant τ: 6/12/18/24 dB/oct) and sampled at the capture rate; or
   (``order=0``) averaged over each sample interval (integrate and dump, the ideal record).
   Outputs are in volts, ``scale`` V per unit quadrature.

3. **Exact discretisation** (:func:`discretize`). Oscillators and lock-in filters form one linear
   SDE; over a sample interval its transition is the matrix exponential and its noise the exact
   covariance integral (Van Loan's block exponential, with scaling and squaring). The sampled
   process is an exact vector AR(1): there is no discretisation error at any sample rate.

4. **Kalman filter** (:func:`kalman_filter`) on that discrete model: estimates of r and of the
   collective quadratures at every sample, and the steady-state error covariance (discrete
   Riccati, ``solve_discrete_are``). As τ and 1/f_s → 0 it tends to the continuous Riccati
   solution (Eq. 12): :func:`lockin_penalty` reports how much the chosen lock-in settings cost.

5. **Parameter estimation** (:func:`fit_spectra`) without the model's inputs: the 4×4 cross
   spectral matrix of the records is fitted by the debiased Whittle likelihood, i.e. against the
   *exact* expected windowed periodogram of the discrete model (aliasing, lock-in roll-off and
   window leakage included), initialised by a moment estimate of the drift from lagged
   covariances. Identifiable from records alone: γ, Δ (or Γ), χ, the signal diffusion in V²/s and
   the imprecision noise in V²·s, hence SNR (Eq. 17). μ and the volts-per-quadrature scale then
   follow from independent calibrations of N and η (:func:`calibrate`); S scales with V0 and
   cannot be obtained from the records without them.

6. **Analysis** (:func:`analyse_records`): fit, calibration, Kalman filter with the fitted model,
   S with a statistical uncertainty from contiguous blocks (each refitted), innovation checks,
   and — for simulated data with known truth — the variance of (true − estimated) best
   quadratures.

Units: every rate in s⁻¹ (angular), times in s, frequencies in Hz, records in V.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np
from scipy.linalg import expm, schur, solve_continuous_lyapunov, solve_discrete_are, \
    solve_discrete_lyapunov
from scipy.optimize import minimize, nnls
from scipy.signal import lfilter

from ..errors import InputError, raise_input_errors
from . import parametric as pt

CHANNELS = ("X1", "Y1", "X2", "Y2")


# ==============================================================================================
# BLAS threads
# ==============================================================================================
class _SingleThreadBlas:
    """Run OpenBLAS single-threaded inside the block (re-entrant; restores the previous count).

    Everything here works on small matrices (4…48) many times over; a multi-threaded BLAS spends
    its time waking threads — ten times slower on a busy two-core machine. Found through the
    loaded libraries (``/proc/self/maps``, ctypes); a no-op where that is not possible.
    """

    def __init__(self) -> None:
        self._depth = 0
        self._libs: list | None = None
        self._saved: list[int] = []

    def _find(self) -> list:
        libs = []
        try:
            import ctypes

            paths = set()
            with open("/proc/self/maps") as fh:
                for line in fh:
                    if "openblas" in line.lower() and line.rstrip().endswith(".so") or ".so." in line and "openblas" in line.lower():
                        paths.add(line.split()[-1])
            for path in sorted(paths):
                lib = ctypes.CDLL(path)
                for suffix in ("64_", ""):
                    for stem in ("scipy_openblas", "openblas"):
                        get = getattr(lib, f"{stem}_get_num_threads{suffix}", None)
                        put = getattr(lib, f"{stem}_set_num_threads{suffix}", None)
                        if get is not None and put is not None:
                            libs.append((get, put))
                            break
                    else:
                        continue
                    break
        except Exception:  # pragma: no cover - platform without /proc or ctypes
            return []
        return libs

    def __enter__(self) -> "_SingleThreadBlas":
        if self._depth == 0:
            if self._libs is None:
                self._libs = self._find()
            self._saved = []
            for get, put in self._libs:
                try:
                    self._saved.append(int(get()))
                    put(1)
                except Exception:  # pragma: no cover
                    self._saved.append(-1)
        self._depth += 1
        return self

    def __exit__(self, *exc: Any) -> None:
        self._depth -= 1
        if self._depth == 0 and self._libs:
            for (get, put), n in zip(self._libs, self._saved):
                if n > 0:
                    try:
                        put(n)
                    except Exception:  # pragma: no cover
                        pass

    def __call__(self, func):
        import functools

        @functools.wraps(func)
        def wrapper(*a, **kw):
            with self:
                return func(*a, **kw)
        return wrapper


single_thread_blas = _SingleThreadBlas()
BASES = {"modulated": pt.BASIS_MODULATED, "constant": pt.BASIS_CONSTANT}
PAIR_NAMES = {"modulated": (("X+", "Y+"), ("X-", "Y-")), "constant": (("U1", "U2"), ("V1", "V2"))}
#: lock-in filter slopes (dB/oct) -> number of RC stages
SLOPES = {6: 1, 12: 2, 18: 3, 24: 4}
TWO_PI = 2.0 * math.pi


# ==============================================================================================
# Models
# ==============================================================================================
@dataclass(frozen=True)
class ParametricModel:
    """Physical parameters of one run; rates in s⁻¹ (angular), N and η pure numbers.

    ``delta`` is the detuning Δ (modulated coupling) or the coupling Γ (constant coupling);
    ``gamma`` the mean damping, ``gamma_diff`` = γ1 − γ2 (constant coupling only). ``chi`` may be
    negative only in fitted models (the sign is a phase convention; the theory uses |χ|).
    """

    model: str
    gamma: float
    chi: float
    delta: float
    nbar: float
    eta: float
    mu: float
    gamma_diff: float = 0.0

    def __post_init__(self) -> None:
        pt.validate(self.gamma, abs(self.chi), self.delta, self.nbar, self.eta, self.mu,
                    gamma_diff=self.gamma_diff, model=self.model)

    # -- matrices -------------------------------------------------------------------------------
    @property
    def gammas(self) -> tuple[float, float]:
        return self.gamma + self.gamma_diff / 2, self.gamma - self.gamma_diff / 2

    def drift(self) -> np.ndarray:
        """4×4 drift A of (X1, Y1, X2, Y2)."""
        return drift_matrix(self.model, self.gamma, self.chi, self.delta, self.gamma_diff)

    def diffusion(self) -> np.ndarray:
        """4×4 diffusion D = diag(2γ_j(N + ½) + μ) (thermal + back-action, Eq. 14)."""
        g1, g2 = self.gammas
        d1, d2 = 2 * g1 * (self.nbar + 0.5) + self.mu, 2 * g2 * (self.nbar + 0.5) + self.mu
        return np.diag([d1, d1, d2, d2])

    @property
    def measurement_rate(self) -> float:
        """k = 4ημ: the record is dy = √k r dt + dW."""
        return 4.0 * self.eta * self.mu

    @property
    def snr(self) -> float:
        return pt.snr(self.gamma, self.nbar, self.eta, self.mu)

    def basis(self) -> np.ndarray:
        return BASES[self.model]

    # -- theory ---------------------------------------------------------------------------------
    def theory(self) -> pt.Entanglement:
        """The paper's steady state (``labctl.physics.parametric.theory``; with unequal damping the
        exact per-oscillator noise, ``exact_noise=True``, as simulated here)."""
        return pt.theory(self.gamma, abs(self.chi), self.delta, self.nbar, self.eta, self.mu,
                         model=self.model, gamma_diff=self.gamma_diff,
                         exact_noise=self.gamma_diff != 0)

    def conditional_covariance(self) -> np.ndarray:
        """4×4 steady state of the continuous Riccati equation A P + P Aᵀ + D − 4ημ P² = 0."""
        return pt.riccati_steady_state(self.drift(), self.diffusion(), self.measurement_rate)

    def unconditional_covariance(self) -> np.ndarray:
        """4×4 stationary covariance: A Σ + Σ Aᵀ + D = 0 (``solve_continuous_lyapunov``)."""
        s = solve_continuous_lyapunov(self.drift(), -self.diffusion())
        return (s + s.T) / 2

    def volts(self, scale: float) -> "VoltsModel":
        """The same model for records in volts, ``scale`` V per unit quadrature."""
        return VoltsModel(self.model, self.gamma, self.chi, self.delta, self.gamma_diff,
                          tuple(scale ** 2 * np.diag(self.diffusion())[[0, 2]]),
                          scale ** 2 / self.measurement_rate)

    def with_(self, **kw: Any) -> "ParametricModel":
        return replace(self, **kw)

    def as_dict(self) -> dict:
        return dict(model=self.model, gamma=self.gamma, chi=self.chi, delta=self.delta,
                    nbar=self.nbar, eta=self.eta, mu=self.mu, gamma_diff=self.gamma_diff)


def drift_matrix(model: str, gamma: float, chi: float, delta: float,
                 gamma_diff: float = 0.0) -> np.ndarray:
    """4×4 drift of (X1, Y1, X2, Y2) for either model (any sign of χ, Δ)."""
    if model == "modulated":
        h = pt.hamiltonian_modulated(chi, delta)
    elif model == "constant":
        h = pt.hamiltonian_constant(chi, delta)
    else:
        raise InputError(f"unknown model {model!r}", fix="use 'modulated' or 'constant'")
    return pt.full_drift(h, gamma + gamma_diff / 2, gamma - gamma_diff / 2)


@dataclass(frozen=True)
class VoltsModel:
    """What the records determine: drift parameters, signal diffusion ``dv`` (V²/s, oscillator 1
    and 2) and imprecision noise ``b`` (two-sided PSD of each demodulated record, V²/Hz = V²·s)."""

    model: str
    gamma: float
    chi: float
    delta: float
    gamma_diff: float
    dv: tuple[float, float]
    b: float

    def drift(self) -> np.ndarray:
        return drift_matrix(self.model, self.gamma, self.chi, self.delta, self.gamma_diff)

    def diffusion(self) -> np.ndarray:
        return np.diag([self.dv[0], self.dv[0], self.dv[1], self.dv[1]])

    @property
    def snr(self) -> float:
        """SNR = 2ημV0/γ = D̄/(4γ²B) (Eq. 17), with D̄ the mean signal diffusion."""
        return float(np.mean(self.dv)) / (4 * self.gamma ** 2 * self.b)

    def conditional_covariance(self) -> np.ndarray:
        """Continuous-record Riccati steady state in V² (measurement gain 1, noise B)."""
        return pt.riccati_steady_state(self.drift(), self.diffusion(), 1.0 / self.b)


@dataclass(frozen=True)
class LockinFilter:
    """Demodulation and sampling of each record.

    ``order`` RC stages of time constant ``time_constant`` (s) — 1…4 for 6…24 dB/oct — sampled
    at ``sample_rate`` (Hz); ``order=0`` averages each sample interval instead (integrate and
    dump, the ideal measurement record). ``output_noise`` (V rms per sample) is white noise
    added after the filter (ADC, float32 rounding); 0 by default.
    """

    time_constant: float
    order: int
    sample_rate: float
    output_noise: float = 0.0

    def __post_init__(self) -> None:
        if self.order not in (0, 1, 2, 3, 4):
            raise InputError(f"lock-in filter order {self.order!r} must be 0 (boxcar) or 1…4",
                             fix="slopes 6/12/18/24 dB/oct are orders 1/2/3/4")
        if not (self.sample_rate > 0 and math.isfinite(self.sample_rate)):
            raise InputError(f"sample rate {self.sample_rate!r} must be a positive number of Hz")
        if self.order and not (self.time_constant > 0 and math.isfinite(self.time_constant)):
            raise InputError(f"time constant {self.time_constant!r} must be a positive time")
        if self.output_noise < 0:
            raise InputError("output_noise must be ≥ 0 V")

    @classmethod
    def from_slope(cls, time_constant: float, slope_db: int, sample_rate: float,
                   output_noise: float = 0.0) -> "LockinFilter":
        if slope_db not in SLOPES:
            raise InputError(f"filter slope {slope_db!r} dB/oct is not one of 6, 12, 18, 24")
        return cls(time_constant, SLOPES[slope_db], sample_rate, output_noise)

    @classmethod
    def boxcar(cls, sample_rate: float) -> "LockinFilter":
        return cls(0.0, 0, sample_rate)

    @property
    def dt(self) -> float:
        return 1.0 / self.sample_rate

    @property
    def slope_db(self) -> int:
        return 6 * self.order

    @property
    def enbw(self) -> float:
        """Equivalent noise bandwidth (Hz, one-sided): 1/4τ, 1/8τ, 3/32τ, 5/64τ; f_s/2 for boxcar."""
        if self.order == 0:
            return self.sample_rate / 2
        n = self.order
        return math.sqrt(math.pi) * math.gamma(n - 0.5) / (2 * math.gamma(n)) / (TWO_PI * self.time_constant)

    def as_dict(self) -> dict:
        return dict(time_constant=self.time_constant, order=self.order, slope_db=self.slope_db,
                    sample_rate=self.sample_rate, output_noise=self.output_noise, enbw=self.enbw)


# ==============================================================================================
# Exact discretisation
# ==============================================================================================
def van_loan(m: np.ndarray, w: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """Exact transition Φ = e^{M dt} and noise Q = ∫₀^dt e^{Ms} W e^{Mᵀs} ds of dz = Mz dt + dw.

    Van Loan (1978): exp([[−M, W], [0, Mᵀ]] h) = [[·, Φ⁻¹Q], [0, Φᵀ]]. It is evaluated on a step
    h = dt/2^k with ‖M‖h ≤ ½ (no exponentially large blocks for stiff lock-in filters) and
    doubled k times: Φ(2h) = Φ(h)², Q(2h) = Φ(h)Q(h)Φ(h)ᵀ + Q(h).
    """
    n = m.shape[0]
    norm = float(np.max(np.sum(np.abs(m), axis=1))) * dt
    k = max(0, int(math.ceil(math.log2(norm / 0.5)))) if norm > 0.5 else 0
    h = dt / 2 ** k
    c = np.zeros((2 * n, 2 * n))
    c[:n, :n] = -m
    c[:n, n:] = w
    c[n:, n:] = m.T
    e = expm(c * h)
    phi = e[n:, n:].T
    q = phi @ e[:n, n:]
    q = (q + q.T) / 2
    for _ in range(k):
        q = phi @ q @ phi.T + q
        q = (q + q.T) / 2
        phi = phi @ phi
    return phi, q


def _augmented(a: np.ndarray, dv: np.ndarray, b: float, lk: LockinFilter,
               step: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Continuous (M, W) of z = (x', filter states), output matrix H and the mask of states that
    are reset after every ``step`` (integrate and dump). x' = scale·r in volts."""
    n = lk.order
    if n == 0:
        d = 8
        m = np.zeros((d, d))
        w = np.zeros((d, d))
        m[:4, :4] = a
        w[:4, :4] = np.diag(dv)
        for j in range(4):
            m[4 + j, j] = 1.0 / step
            w[4 + j, 4 + j] = b / step ** 2
        h = np.zeros((4, d))
        h[:, 4:] = np.eye(4)
        reset = np.r_[np.zeros(4, bool), np.ones(4, bool)]
        return m, w, h, reset
    d = 4 + 4 * n
    tau = lk.time_constant
    m = np.zeros((d, d))
    w = np.zeros((d, d))
    m[:4, :4] = a
    w[:4, :4] = np.diag(dv)
    h = np.zeros((4, d))
    for j in range(4):
        s0 = 4 + j * n
        m[s0, j] = 1.0 / tau
        w[s0, s0] = b / tau ** 2
        for s in range(n):
            m[s0 + s, s0 + s] = -1.0 / tau
            if s:
                m[s0 + s, s0 + s - 1] = 1.0 / tau
        h[j, s0 + n - 1] = 1.0
    return m, w, h, np.zeros(d, bool)


@dataclass
class DiscreteModel:
    """z_{k+1} = F z_k + w_k (Cov w = Q), y_k = H z_k + v_k (Cov v = R): the exact sampled model
    of the lock-in outputs; the first four states are the quadratures in volts."""

    f: np.ndarray
    q: np.ndarray
    h: np.ndarray
    r: np.ndarray
    lockin: LockinFilter
    volts: VoltsModel
    _stat: np.ndarray | None = field(default=None, repr=False)

    @property
    def dim(self) -> int:
        return self.f.shape[0]

    def stationary_covariance(self) -> np.ndarray:
        if self._stat is None:
            s = solve_discrete_lyapunov(self.f, self.q)
            self._stat = (s + s.T) / 2
        return self._stat

    def autocovariance(self, lags: int) -> np.ndarray:
        """R(m) = E[y_{k+m} y_kᵀ] for m = 0…lags−1, shape (lags, 4, 4)."""
        sig_h = self.stationary_covariance() @ self.h.T          # d×4
        blk = 64
        pw = np.empty((blk, self.dim, self.dim))
        pw[0] = np.eye(self.dim)
        for i in range(1, blk):
            pw[i] = self.f @ pw[i - 1]
        fb = self.f @ pw[-1]
        out = np.empty((lags, 4, 4))
        x = sig_h
        for start in range(0, lags, blk):
            stop = min(lags, start + blk)
            out[start:stop] = self.h @ (pw[: stop - start] @ x)
            x = fb @ x
        out[0] += self.r
        return out

    def transfer(self, freqs: np.ndarray) -> np.ndarray:
        """T(f) = H (e^{iω} − F)⁻¹, ω = 2πf/f_s; shape (nf, 4, d)."""
        om = TWO_PI * np.asarray(freqs, float) / self.lockin.sample_rate
        mats = np.exp(1j * om)[:, None, None] * np.eye(self.dim) - self.f
        return np.swapaxes(np.linalg.solve(np.swapaxes(mats, 1, 2),
                                           np.broadcast_to(self.h.T, (len(om),) + self.h.T.shape)), 1, 2)

    def psd(self, freqs: np.ndarray) -> np.ndarray:
        """Two-sided cross spectral density matrix of the records (V²/Hz), shape (nf, 4, 4)."""
        t = self.transfer(freqs)
        s = t @ self.q @ np.conj(np.swapaxes(t, 1, 2)) + self.r
        return s / self.lockin.sample_rate


def discretize(vm: VoltsModel, lk: LockinFilter, *, floor: float = 1e-12) -> DiscreteModel:
    """Exact discrete model of the lock-in outputs of ``vm`` (see the module docstring).

    ``R`` = output_noise² plus ``floor`` times the mean output variance (a numerical floor that
    keeps the discrete Riccati equation regular when the outputs are noiseless samples)."""
    a = vm.drift()
    m, w, h, reset = _augmented(a, np.diag(vm.diffusion()), vm.b, lk, lk.dt)
    phi, q = van_loan(m, w, lk.dt)
    f = phi.copy()
    f[:, reset] = 0.0
    dm = DiscreteModel(f, q, h, np.zeros((4, 4)), lk, vm)
    var = float(np.trace(h @ dm.stationary_covariance() @ h.T)) / 4
    dm.r = (lk.output_noise ** 2 + floor * var) * np.eye(4)
    return dm


# ==============================================================================================
# Linear recursions (simulation and steady-state filtering in O(N) vectorised passes)
# ==============================================================================================
def linear_recursion(f: np.ndarray, u: np.ndarray, z0: np.ndarray) -> np.ndarray:
    """z_{k+1} = F z_k + u_k for k = 0…N−1 (u: N×d); returns z_1…z_N (N×d).

    The complex Schur form F = Q T Qᴴ (stable also for the defective matrices of cascaded RC
    stages) makes the recursion triangular; each component is then one first-order IIR filter
    (``scipy.signal.lfilter``) driven by the components below it. Exact up to rounding.
    """
    t, qm = schur(np.asarray(f, complex), output="complex")
    v = qm.conj().T @ np.asarray(u, float).T.astype(complex)
    a0 = qm.conj().T @ np.asarray(z0, complex)
    d, n = v.shape
    out = np.empty((d, n), complex)
    for i in range(d - 1, -1, -1):
        g = v[i]
        if i + 1 < d:
            g[0] += t[i, i + 1:] @ a0[i + 1:]
            if n > 1:
                g[1:] += t[i, i + 1:] @ out[i + 1:, :-1]
        out[i], _ = lfilter([1.0], [1.0, -t[i, i]], g, zi=[t[i, i] * a0[i]])
    return (qm @ out).real.T


# ==============================================================================================
# Kalman filter
# ==============================================================================================
@dataclass
class KalmanResult:
    """Steady-state Kalman filter of one record set.

    ``estimates``: filtered quadratures (N×4, dimensionless if ``scale`` is known, else volts)
    in (X1, Y1, X2, Y2); ``collective``: the same in the model's collective basis;
    ``covariance``: steady-state error covariance of (X1, Y1, X2, Y2) (same units);
    ``innovations``: y_k − E[y_k | y_<k] (V), ``innovation_cov`` their predicted covariance;
    ``burn_in``: samples at the start where the filter has not converged (excluded from checks).
    """

    estimates: np.ndarray
    collective: np.ndarray
    covariance: np.ndarray
    innovations: np.ndarray
    innovation_cov: np.ndarray
    burn_in: int
    scale: float | None
    model: str

    def pair_covariances(self) -> tuple[np.ndarray, np.ndarray]:
        c = BASES[self.model] @ self.covariance @ BASES[self.model].T
        return c[:2, :2], c[2:, 2:]

    def innovation_check(self) -> dict:
        """Whitened innovations: their covariance should be the identity and their lag-1
        correlation zero if the model (and the fitted parameters) describe the records."""
        nu = self.innovations[self.burn_in:]
        lc = np.linalg.cholesky(self.innovation_cov)
        wv = np.linalg.solve(lc, nu.T).T
        var = wv.var(axis=0)
        lag1 = np.array([np.corrcoef(wv[1:, i], wv[:-1, i])[0, 1] for i in range(4)])
        return dict(normalized_variance=var.tolist(), lag1_correlation=lag1.tolist(),
                    max_variance_deviation=float(np.max(np.abs(var - 1))),
                    max_abs_lag1=float(np.max(np.abs(lag1))), samples=int(len(nu)))


def steady_state_gain(dm: DiscreteModel) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(P⁻, P, K, S): prior and posterior error covariance, gain and innovation covariance of the
    steady-state filter (``solve_discrete_are`` with a = Fᵀ, b = Hᵀ)."""
    pm = solve_discrete_are(dm.f.T, dm.h.T, dm.q, dm.r)
    pm = (pm + pm.T) / 2
    s = dm.h @ pm @ dm.h.T + dm.r
    k = np.linalg.solve(s, dm.h @ pm).T
    p = pm - k @ s @ k.T
    return pm, (p + p.T) / 2, k, (s + s.T) / 2


@single_thread_blas
def kalman_filter(records: np.ndarray, dm: DiscreteModel, *, scale: float | None = None) -> KalmanResult:
    """Steady-state Kalman filter of ``records`` (N×4 volts: X1, Y1, X2, Y2) with model ``dm``.

    ẑ_k = (I − KH)F ẑ_{k−1} + K y_k, evaluated with :func:`linear_recursion`. With ``scale``
    (V per unit quadrature) the estimates and covariance are returned in quadrature units.
    """
    y = np.asarray(records, float)
    pm, p, k, s = steady_state_gain(dm)
    g = (np.eye(dm.dim) - k @ dm.h) @ dm.f
    z = linear_recursion(g, y @ k.T, np.zeros(dm.dim))
    prev = np.vstack([np.zeros(dm.dim), z[:-1]])
    innov = y - prev @ (dm.h @ dm.f).T
    rho = float(np.max(np.abs(np.linalg.eigvals(g))))
    burn = int(min(len(y) // 4, math.ceil(12.0 / max(-math.log(max(rho, 1e-300)), 1e-12))))
    x = z[:, :4]
    cov = p[:4, :4]
    if scale is not None:
        x = x / scale
        cov = cov / scale ** 2
    model = dm.volts.model
    return KalmanResult(x, x @ BASES[model].T, cov, innov, s, burn, scale, model)


@single_thread_blas
def mismatch_covariance(true_dm: DiscreteModel, true_scale: float, filt_dm: DiscreteModel,
                        filt_scale: float) -> np.ndarray:
    """Actual 4×4 error covariance (quadrature units) of the steady-state filter built on
    ``filt_dm`` (its gain, its scale) when the records come from ``true_dm``.

    Joint stationary covariance of (z_k, ẑ_k): z_k = F z_{k−1} + w, ẑ_k = G'ẑ_{k−1} + K'(H z_k + v),
    from a discrete Lyapunov equation; error r − r̂ = z[:4]/s − ẑ[:4]/s'. Equals the filter's own
    covariance when the models agree; otherwise it is larger (a filter on wrong parameters).
    """
    _, _, k, _ = steady_state_gain(filt_dm)
    g = (np.eye(filt_dm.dim) - k @ filt_dm.h) @ filt_dm.f
    d, dp = true_dm.dim, filt_dm.dim
    t = np.zeros((d + dp, d + dp))
    t[:d, :d] = true_dm.f
    t[d:, :d] = k @ true_dm.h @ true_dm.f
    t[d:, d:] = g
    gam = np.zeros((d + dp, d + 4))
    gam[:d, :d] = np.eye(d)
    gam[d:, :d] = k @ true_dm.h
    gam[d:, d:] = k
    c = np.zeros((d + 4, d + 4))
    c[:d, :d] = true_dm.q
    c[d:, d:] = true_dm.r
    sig = solve_discrete_lyapunov(t, gam @ c @ gam.T)
    e = np.zeros((4, d + dp))
    e[:, :4] = np.eye(4) / true_scale
    e[:, d:d + 4] = -np.eye(4) / filt_scale
    out = e @ sig @ e.T
    return (out + out.T) / 2


def directional_separability(err_cov: np.ndarray, predicted_cov: np.ndarray, model: str) -> dict:
    """S from the error variances along the best directions the filter *predicts* (what an
    experimenter uses), for an actual error covariance ``err_cov``."""
    ap, am = pair_blocks(err_cov, model)
    pp, pm_ = pair_blocks(predicted_cov, model)
    up = np.linalg.eigh(pp)[1][:, 0]
    um = np.linalg.eigh(pm_)[1][:, 0]
    vp, vm = float(up @ ap @ up), float(um @ am @ um)
    return dict(S=2 * math.sqrt(max(vp, 0) * max(vm, 0)), V_plus=vp, V_minus=vm)


# ==============================================================================================
# Collective quadratures, S
# ==============================================================================================
def pair_blocks(cov4: np.ndarray, model: str) -> tuple[np.ndarray, np.ndarray]:
    c = BASES[model] @ cov4 @ BASES[model].T
    return c[:2, :2], c[2:, 2:]


def separability(cov4: np.ndarray, model: str) -> dict:
    """S = 2√(V_α+ V_α−) (Eq. 15) and the pair data of a 4×4 (X1, Y1, X2, Y2) covariance."""
    cp, cm = pair_blocks(cov4, model)
    vp, vm = pt.squeezed_variance(cp), pt.squeezed_variance(cm)
    return dict(S=2 * math.sqrt(max(vp, 0) * max(vm, 0)), V_plus=vp, V_minus=vm,
                angle_plus=pt.squeezed_angle(cp), angle_minus=pt.squeezed_angle(cm),
                cov_plus=cp, cov_minus=cm)


@single_thread_blas
def lockin_penalty(model: ParametricModel, lk: LockinFilter, scale: float = 1.0) -> dict:
    """Conditional covariance reachable through the lock-in (discrete Kalman filter on its
    outputs) against the ideal continuous record (Eq. 12): S_lockin ≥ S_theory."""
    dm = discretize(model.volts(scale), lk)
    _, p, _, _ = steady_state_gain(dm)
    lock = separability(p[:4, :4] / scale ** 2, model.model)
    ideal = separability(model.conditional_covariance(), model.model)
    return dict(S_theory=ideal["S"], S_lockin=lock["S"], V_plus_lockin=lock["V_plus"],
                V_minus_lockin=lock["V_minus"], ratio=lock["S"] / ideal["S"])


# ==============================================================================================
# Spectra and the debiased Whittle fit
# ==============================================================================================
@dataclass
class Periodogram:
    """Averaged cross periodogram of M non-overlapping Hann-windowed segments of length L."""

    freqs: np.ndarray           # Hz, bins 1…L/2−1
    p: np.ndarray               # (nf, 4, 4) two-sided density V²/Hz
    segments: int
    nperseg: int
    sample_rate: float
    window: np.ndarray = field(repr=False)

    @property
    def window_power(self) -> float:
        return float(np.sum(self.window ** 2))

    @property
    def window_autocorrelation(self) -> np.ndarray:
        """c_w(m) = Σ_n w_n w_{n+m}, m = 0…L−1."""
        if not hasattr(self, "_cw"):
            w = self.window
            self._cw = np.fft.irfft(np.abs(np.fft.rfft(w, 2 * len(w))) ** 2)[: len(w)]
        return self._cw


def periodogram(records: np.ndarray, sample_rate: float, nperseg: int) -> Periodogram:
    y = np.asarray(records, float)
    y = y - y.mean(axis=0)
    n = len(y)
    m = n // nperseg
    if m < 1:
        raise InputError(f"record of {n} samples is shorter than one segment of {nperseg}",
                         fix="record longer or use a shorter segment")
    w = np.hanning(nperseg + 2)[1:-1]
    seg = y[: m * nperseg].reshape(m, nperseg, 4) * w[None, :, None]
    x = np.fft.rfft(seg, axis=1)[:, 1: nperseg // 2]                      # (m, nf, 4)
    p = np.einsum("mfi,mfj->fij", x, np.conj(x)) / (m * sample_rate * np.sum(w ** 2))
    freqs = np.arange(1, nperseg // 2) * sample_rate / nperseg
    return Periodogram(freqs, p, m, nperseg, sample_rate, w)


def expected_periodogram(dm: DiscreteModel, pg: Periodogram) -> np.ndarray:
    """Exact expectation of the windowed periodogram of the model (Sykulski et al. 2019,
    "debiased Whittle"): Σ_m c_w(m) R(m) e^{−2πi jm/L}, c_w the window autocorrelation."""
    L = pg.nperseg
    cw = pg.window_autocorrelation
    r = dm.autocovariance(L)
    g = np.fft.fft(cw[:, None, None] * r, axis=0)[1: L // 2]
    e = g + np.conj(np.swapaxes(g, 1, 2)) - cw[0] * r[0]
    return e / (pg.sample_rate * pg.window_power)


def whittle_nll(dm: DiscreteModel, pg: Periodogram) -> float:
    e = expected_periodogram(dm, pg)
    try:
        lc = np.linalg.cholesky(e)
    except np.linalg.LinAlgError:
        return math.inf
    logdet = 2 * np.sum(np.log(np.real(np.diagonal(lc, axis1=1, axis2=2))))
    tr = np.real(np.trace(np.linalg.solve(e, pg.p), axis1=1, axis2=2)).sum()
    return float(pg.segments * (logdet + tr))


@dataclass
class SpectralFit:
    """Result of :func:`fit_spectra` (all rates in s⁻¹; ``dv`` V²/s; ``b`` V²/Hz)."""

    volts: VoltsModel
    nll: float
    periodogram: Periodogram
    lockin: LockinFilter
    init: VoltsModel
    evaluations: int
    success: bool

    @property
    def snr(self) -> float:
        return self.volts.snr

    def discrete(self) -> DiscreteModel:
        return discretize(self.volts, self.lockin)

    def model_psd(self) -> np.ndarray:
        """Expected periodogram of the fitted model at ``periodogram.freqs`` (for plots)."""
        return expected_periodogram(self.discrete(), self.periodogram)

    def collective_spectra(self) -> dict:
        """Measured and fitted PSDs of the collective quadratures (V²/Hz, two-sided)."""
        bm = BASES[self.volts.model]
        names = [n for pair in PAIR_NAMES[self.volts.model] for n in pair]
        meas = np.real(np.einsum("ai,fij,aj->fa", bm, self.periodogram.p, bm))
        fit = np.real(np.einsum("ai,fij,aj->fa", bm, self.model_psd(), bm))
        return dict(freqs=self.periodogram.freqs, names=names, measured=meas, fitted=fit)


def _params_to_volts(theta: np.ndarray, model: str, s0: float, gamma_diff: float,
                     separate: bool) -> VoltsModel:
    gamma = s0 * math.exp(theta[0])
    delta = s0 * theta[1]
    chi_max = math.hypot(gamma, delta) - abs(gamma_diff) / 2
    chi = chi_max * math.tanh(theta[2])
    if separate:
        dv = (math.exp(theta[3]), math.exp(theta[4]))
        b = math.exp(theta[5])
    else:
        dv = (math.exp(theta[3]),) * 2
        b = math.exp(theta[4])
    return VoltsModel(model, gamma, chi, delta, gamma_diff, dv, b)


def _volts_to_params(vm: VoltsModel, s0: float, separate: bool) -> np.ndarray:
    chi_max = math.hypot(vm.gamma, vm.delta) - abs(vm.gamma_diff) / 2
    r = max(-1 + 1e-9, min(1 - 1e-9, vm.chi / chi_max))
    th = [math.log(vm.gamma / s0), vm.delta / s0, math.atanh(r)]
    th += [math.log(vm.dv[0]), math.log(vm.dv[1])] if separate else [math.log(np.mean(vm.dv))]
    th.append(math.log(vm.b))
    return np.array(th)


def _component_spectra(model: str, gamma: float, chi: float, delta: float, gamma_diff: float,
                       lk: LockinFilter, pg: Periodogram) -> np.ndarray:
    """Expected periodograms of the three unit noise sources — signal diffusion of oscillator 1,
    of oscillator 2, imprecision noise — for fixed drift; shape (3, nf, 4, 4).

    The model is linear in the noise intensities, so E = D1·E₁ + D2·E₂ + B·E₃ exactly: the
    amplitudes cost nothing in the fit and their derivatives are exact.
    """
    a = drift_matrix(model, gamma, chi, delta, gamma_diff)
    ws = [np.array([1.0, 1.0, 0.0, 0.0]), np.array([0.0, 0.0, 1.0, 1.0])]
    m, w_noise, h, reset = _augmented(a, np.zeros(4), 1.0, lk, lk.dt)
    d = m.shape[0]
    sources = []
    for dv in ws:
        w = np.zeros((d, d))
        w[:4, :4] = np.diag(dv)
        sources.append(w)
    w_noise = w_noise.copy()
    w_noise[:4, :4] = 0.0
    sources.append(w_noise)
    if lk.order:                      # M Hurwitz: Q = Σ − ΦΣΦᵀ, Σ the stationary covariance
        phi = expm(m * lk.dt)
        sigmas = []
        for w in sources:
            sg = solve_continuous_lyapunov(m, -w)
            sigmas.append((sg + sg.T) / 2)
        f = phi
    else:                             # integrate and dump: exact Van Loan per source
        sigmas = []
        f = None
        for w in sources:
            phi, q = van_loan(m, w, lk.dt)
            f = phi.copy()
            f[:, reset] = 0.0
            sg = solve_discrete_lyapunov(f, q)
            sigmas.append((sg + sg.T) / 2)
    L = pg.nperseg
    cols = np.concatenate([sg @ h.T for sg in sigmas], axis=1)            # d × 12
    blk = 64
    pw = np.empty((blk, d, d))
    pw[0] = np.eye(d)
    for i in range(1, blk):
        pw[i] = f @ pw[i - 1]
    fb = f @ pw[-1]
    r = np.empty((L, 4, cols.shape[1]))
    x = cols
    for s in range(0, L, blk):
        e = min(L, s + blk)
        r[s:e] = h @ (pw[: e - s] @ x)
        x = fb @ x
    r = r.reshape(L, 4, 3, 4).transpose(2, 0, 1, 3)                          # (3, L, 4, 4)
    cw = pg.window_autocorrelation
    g = np.fft.fft(cw[None, :, None, None] * r, axis=1)[:, 1: L // 2]
    out = g + np.conj(np.swapaxes(g, 2, 3)) - cw[0] * r[:, :1]
    return out / (pg.sample_rate * pg.window_power)


class _Whittle:
    """Debiased Whittle likelihood, its gradient and Fisher information in θ =
    (ln γ/s0, Δ/s0, atanh(χ/χ_max), ln D1[, ln D2], ln B)."""

    def __init__(self, pg: Periodogram, lk: LockinFilter, model: str, s0: float,
                 gamma_diff: float, separate: bool, free: np.ndarray | None = None) -> None:
        self.pg, self.lk, self.model, self.s0 = pg, lk, model, s0
        self.gd, self.separate = gamma_diff, separate
        n = 6 if separate else 5
        self.free = np.ones(n, bool) if free is None else np.asarray(free, bool)
        self.evaluations = 0
        self._cache: dict = {}

    def drift_params(self, th: np.ndarray) -> tuple[float, float, float]:
        gamma = self.s0 * math.exp(th[0])
        delta = self.s0 * th[1]
        chi = (math.hypot(gamma, delta) - abs(self.gd) / 2) * math.tanh(th[2])
        return gamma, chi, delta

    def amplitudes(self, th: np.ndarray) -> np.ndarray:
        if self.separate:
            return np.exp(np.array([th[3], th[4], th[5]]))
        return np.exp(np.array([th[3], th[3], th[4]]))

    def components(self, th: np.ndarray) -> np.ndarray:
        key = tuple(np.round(th[:3], 14))
        if key not in self._cache:
            self.evaluations += 1
            g, c, d = self.drift_params(th)
            if len(self._cache) > 64:
                self._cache.clear()
            self._cache[key] = _component_spectra(self.model, g, c, d, self.gd, self.lk, self.pg)
        return self._cache[key]

    def expected(self, th: np.ndarray) -> np.ndarray:
        comp = self.components(th)
        amp = self.amplitudes(th)
        e = amp[0] * comp[0] + amp[1] * comp[1] + amp[2] * comp[2]
        floor = self.lk.output_noise ** 2 / self.lk.sample_rate
        floor += 1e-12 * float(np.max(np.real(np.diagonal(e, axis1=1, axis2=2))))
        return e + floor * np.eye(4)

    def nll(self, th: np.ndarray) -> float:
        try:
            e = self.expected(th)
            lc = np.linalg.cholesky(e)
        except (np.linalg.LinAlgError, ValueError, OverflowError, FloatingPointError):
            return math.inf
        logdet = 2 * np.sum(np.log(np.real(np.diagonal(lc, axis1=1, axis2=2))))
        tr = np.real(np.trace(np.linalg.solve(e, self.pg.p), axis1=1, axis2=2)).sum()
        v = float(self.pg.segments * (logdet + tr))
        return v if math.isfinite(v) else math.inf

    def derivatives(self, th: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """E and ∂E/∂θ (forward differences for the drift parameters, exact for amplitudes)."""
        e = self.expected(th)
        amp = self.amplitudes(th)
        comp = self.components(th)
        des = []
        for i in range(3):
            if not self.free[i]:
                des.append(None)
                continue
            step = 1e-5 * max(1.0, abs(th[i]))
            t2 = th.copy()
            t2[i] += step
            c2 = self.components(t2) - comp
            des.append((amp[0] * c2[0] + amp[1] * c2[1] + amp[2] * c2[2]) / step)
        if self.separate:
            des += [amp[0] * comp[0], amp[1] * comp[1], amp[2] * comp[2]]
        else:
            des += [amp[0] * (comp[0] + comp[1]), amp[2] * comp[2]]
        return e, [d for d, f in zip(des, self.free) if f]

    def score_fisher(self, th: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        e, des = self.derivatives(th)
        einv = np.linalg.inv(e)
        a = einv - einv @ self.pg.p @ einv
        m = self.pg.segments
        x = [einv @ de for de in des]
        grad = np.array([m * np.real(np.einsum("fij,fji->", a, de)) for de in des])
        n = len(des)
        fis = np.empty((n, n))
        for i in range(n):
            for j in range(i, n):
                fis[i, j] = fis[j, i] = m * np.real(np.einsum("fij,fji->", x[i], x[j]))
        return grad, fis


def _fisher_scoring(wh: _Whittle, th0: np.ndarray, maxiter: int = 40,
                    tol: float = 1e-7) -> tuple[np.ndarray, float, bool]:
    th = np.array(th0, float)
    f0 = wh.nll(th)
    if not math.isfinite(f0):
        return th, f0, False
    free = wh.free
    drift_free = free.copy()
    drift_free[3:] = False
    for _ in range(maxiter):
        grad_f, fis = wh.score_fisher(th)
        try:
            sf = -np.linalg.solve(fis + 1e-12 * np.trace(fis) * np.eye(len(grad_f)), grad_f)
        except np.linalg.LinAlgError:
            return th, f0, False
        step = np.zeros_like(th)
        step[free] = sf
        grad = np.zeros_like(th)
        grad[free] = grad_f
        # keep the drift parameters from jumping across the parameter space in one step
        big = np.max(np.abs(step[:3])) if drift_free.any() else 0.0
        if big > 0.5:
            step *= 0.5 / big
        lam = 1.0
        while lam > 1e-4:
            t2 = th + lam * step
            f2 = wh.nll(t2)
            if f2 <= f0 + 1e-4 * lam * float(grad @ step):
                break
            lam /= 2
        else:
            return th, f0, abs(float(grad @ step)) < 1e-3
        th, f_old, f0 = t2, f0, f2
        if abs(f_old - f0) < tol * max(1.0, abs(f0)) and np.max(np.abs(lam * step)) < 1e-6:
            return th, f0, True
    return th, f0, True


def _lag_cov(y: np.ndarray, lag: int) -> np.ndarray:
    n = len(y)
    return y[lag:].T @ y[: n - lag] / (n - lag)


@single_thread_blas
def moment_estimate(records: np.ndarray, lk: LockinFilter, model: str,
                    gamma_diff: float = 0.0) -> VoltsModel:
    """Initial estimate from lagged covariances, independent of any guess.

    Beyond the lock-in's memory the records' lag covariance obeys C(ℓ0 + δ) = e^{Aδ} C(ℓ0)
    exactly, so A ≈ logm(C(ℓ0+δ)C(ℓ0)⁻¹)/δ; δ is doubled while the rotation and decay stay
    resolvable. A is projected on the model's linear family −γ + Δ·∂A/∂Δ + χ·∂A/∂χ (least
    squares); the signal diffusion and imprecision noise then follow from C(0) and C(ℓ0) by
    non-negative least squares against unit-amplitude models.
    """
    from scipy.linalg import logm

    y = np.asarray(records, float)
    y = y - y.mean(axis=0)
    n = len(y)
    fs = lk.sample_rate
    lag0 = 1 if lk.order == 0 else max(1, int(math.ceil(8 * lk.order * lk.time_constant * fs)))
    c0 = _lag_cov(y, lag0)
    best = None
    delta = 1
    while lag0 + delta < n // 8:
        phi = _lag_cov(y, lag0 + delta) @ np.linalg.inv(c0)
        ev = np.linalg.eigvals(phi)
        if np.min(np.abs(ev)) < 0.25 or np.max(np.abs(np.angle(ev))) > 1.2:
            break
        a_hat = np.real(logm(phi)) * fs / delta
        if np.all(np.isfinite(a_hat)):
            best = a_hat
        delta *= 2
    if best is None:
        best = -np.eye(4) * fs / max(n, 1) * 100
    # linear family: A = −γ·diag(1 ± gd/2γ…) + Δ·AΔ + χ·Aχ
    a_d = drift_matrix(model, 0.0, 0.0, 1.0) - drift_matrix(model, 0.0, 0.0, 0.0)
    a_c = drift_matrix(model, 0.0, 1.0, 0.0) - drift_matrix(model, 0.0, 0.0, 0.0)
    a_g = -np.eye(4)
    off = drift_matrix(model, 0.0, 0.0, 0.0, gamma_diff)
    basis = np.stack([a_g.ravel(), a_d.ravel(), a_c.ravel()], axis=1)
    coef, *_ = np.linalg.lstsq(basis, (best - off).ravel(), rcond=None)
    gamma = max(abs(coef[0]), 1e-3 * fs / n, 1e-9)
    delta_est, chi = float(coef[1]), float(coef[2])
    chi_max = math.hypot(gamma, delta_est) - abs(gamma_diff) / 2
    if abs(chi) >= 0.98 * chi_max:
        chi = math.copysign(0.98 * chi_max, chi)
    # amplitudes: C(ℓ) ≈ Dv·R1(ℓ) + B·R2(ℓ) for ℓ = 0, ℓ0
    unit_sig = discretize(VoltsModel(model, gamma, chi, delta_est, gamma_diff, (1.0, 1.0), 1e-30), lk)
    unit_noise = discretize(VoltsModel(model, gamma, chi, delta_est, gamma_diff, (1e-30, 1e-30), 1.0), lk)
    lags = max(lag0 + 1, 2)
    r1 = unit_sig.autocovariance(lags)
    r2 = unit_noise.autocovariance(lags)
    cm = np.stack([_lag_cov(y, 0), _lag_cov(y, lag0)])
    rows = np.stack([np.stack([r1[0], r1[lag0]]).ravel(), np.stack([r2[0], r2[lag0]]).ravel()], axis=1)
    sol, _ = nnls(rows, cm.ravel())
    dv = max(sol[0], 1e-30)
    b = max(sol[1], 1e-6 * dv / gamma ** 2, 1e-30)
    return VoltsModel(model, float(gamma), float(chi), float(delta_est), gamma_diff, (dv, dv), float(b))


def default_nperseg(n: int) -> int:
    """Segment length: a power of two with at least 16 segments, 256…16384."""
    target = max(256, n // 16)
    return int(min(16384, 2 ** int(math.floor(math.log2(target)))))


@single_thread_blas
def fit_spectra(records: np.ndarray, lockin: LockinFilter, *, model: str = "modulated",
                gamma_diff: float = 0.0, separate_noise: bool | None = None,
                nperseg: int | None = None, init: VoltsModel | None = None,
                fix: dict | None = None, maxiter: int = 40) -> SpectralFit:
    """Fit γ, Δ (or Γ), χ, the signal diffusion and the imprecision noise to the records' cross
    spectral matrix by the debiased Whittle likelihood (module docstring, item 5).

    ``gamma_diff`` (γ1 − γ2, constant model) is held fixed; ``separate_noise`` (default: when it
    is non-zero) fits one signal diffusion per oscillator. ``init``: a starting point (default:
    :func:`moment_estimate`). ``fix``: {"gamma": γ, "delta": Δ} (s⁻¹) held at independently
    calibrated values (ring-down; Δ = ω_m − ω_d from the drive frequency), which removes the
    strong Δ–χ correlation near threshold. Fisher scoring with a backtracking line search in
    θ = (ln γ, Δ, atanh(χ/χ_max), ln D, ln B) — a parametrisation in which every candidate is
    below threshold — and a Nelder–Mead polish if scoring stalls.
    """
    y = np.asarray(records, float)
    if y.ndim != 2 or y.shape[1] != 4:
        raise InputError(f"records must have shape (N, 4) (X1, Y1, X2, Y2), not {y.shape}")
    if not np.all(np.isfinite(y)):
        raise InputError("records contain NaN or infinite values", fix="check the capture")
    separate = bool(gamma_diff) if separate_noise is None else bool(separate_noise)
    pg = periodogram(y, lockin.sample_rate, nperseg or default_nperseg(len(y)))
    start = init if init is not None else moment_estimate(y, lockin, model, gamma_diff)
    start = replace(start, model=model, gamma_diff=gamma_diff)
    fix = dict(fix or {})
    unknown = set(fix) - {"gamma", "delta"}
    if unknown:
        raise InputError(f"cannot hold {', '.join(sorted(unknown))} fixed in the fit",
                         fix="only gamma and delta (s⁻¹) can be fixed")
    if fix:
        g_new = float(fix.get("gamma", start.gamma))
        d_new = float(fix.get("delta", start.delta))
        cmax = math.hypot(g_new, d_new) - abs(gamma_diff) / 2
        start = replace(start, gamma=g_new, delta=d_new,
                        chi=math.copysign(min(abs(start.chi), 0.98 * cmax), start.chi or 1.0))
    s0 = abs(start.gamma) + abs(start.delta) + abs(start.chi)
    free = np.ones(6 if separate else 5, bool)
    free[0] = "gamma" not in fix
    free[1] = "delta" not in fix
    wh = _Whittle(pg, lockin, model, s0, gamma_diff, separate, free)
    th0 = _volts_to_params(start, s0, separate)
    th, f, ok = _fisher_scoring(wh, th0, maxiter=maxiter)
    if not ok or not math.isfinite(f):
        base = th.copy()

        def sub(v: np.ndarray) -> float:
            t = base.copy()
            t[free] = v
            return wh.nll(t)

        res = minimize(sub, th[free], method="Nelder-Mead",
                       options=dict(maxfev=3000, xatol=1e-7, fatol=1e-6, adaptive=True))
        if res.fun < f:
            th = base.copy()
            th[free] = res.x
            f = float(res.fun)
        th, f, ok = _fisher_scoring(wh, th, maxiter=maxiter)
    vm = _params_to_volts(th, model, s0, gamma_diff, separate)
    return SpectralFit(vm, f, pg, lockin, start, wh.evaluations, bool(ok and math.isfinite(f)))


# ==============================================================================================
# Calibration and the full analysis
# ==============================================================================================
def calibrate(vm: VoltsModel, nbar: float, eta: float) -> tuple[ParametricModel, float]:
    """μ and the scale (V per unit quadrature) from a fitted volts model and calibrated N, η.

    D̄ = scale²(2γ(N + ½) + μ), B = scale²/(4ημ)  ⇒  μ = −γ(N + ½) + √(γ²(N + ½)² + D̄/(4ηB)),
    scale = √(4ημB). (Equivalently μ solves SNR = 2ημ(N + ½)/γ + ημ²/γ², Eq. 17.)
    """
    dbar = float(np.mean(vm.dv))
    g = vm.gamma
    mu = -g * (nbar + 0.5) + math.sqrt((g * (nbar + 0.5)) ** 2 + dbar / (4 * eta * vm.b))
    scale = math.sqrt(4 * eta * mu * vm.b)
    pm = ParametricModel(vm.model, vm.gamma, vm.chi, vm.delta, nbar, eta, mu, vm.gamma_diff)
    return pm, scale


def _block_slices(n: int, blocks: int) -> list[slice]:
    edges = np.linspace(0, n, blocks + 1).astype(int)
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:])]


def _mean_sem(values: Sequence[float]) -> tuple[float, float]:
    v = np.asarray([x for x in values if np.isfinite(x)], float)
    if len(v) < 2:
        return (float(v[0]) if len(v) else math.nan), math.nan
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v)))


def truth_statistics(truth: np.ndarray, kf: KalmanResult, *, blocks: int = 16) -> dict:
    """Variance of (true − estimated) best collective quadratures (simulation only).

    The best directions are the filter's own (smallest eigenvector of each predicted pair
    covariance); variances, S = 2√(v+ v−) and their standard errors come from ``blocks``
    contiguous blocks after the filter's burn-in.
    """
    bm = BASES[kf.model]
    err = (np.asarray(truth, float) - kf.estimates)[kf.burn_in:] @ bm.T
    cp, cm = kf.pair_covariances()
    up = np.linalg.eigh(cp)[1][:, 0]
    um = np.linalg.eigh(cm)[1][:, 0]
    ep, em = err[:, :2] @ up, err[:, 2:] @ um
    vps, vms, ss = [], [], []
    for sl in _block_slices(len(err), blocks):
        a, b = float(np.mean(ep[sl] ** 2)), float(np.mean(em[sl] ** 2))
        vps.append(a)
        vms.append(b)
        ss.append(2 * math.sqrt(a * b))
    vp, dvp = _mean_sem(vps)
    vm_, dvm = _mean_sem(vms)
    s, ds = _mean_sem(ss)
    full = np.cov(err.T)
    return dict(V_plus=vp, V_plus_err=dvp, V_minus=vm_, V_minus_err=dvm, S=s, S_err=ds,
                V_plus_predicted=float(np.linalg.eigvalsh(cp)[0]),
                V_minus_predicted=float(np.linalg.eigvalsh(cm)[0]),
                error_covariance=full.tolist(), blocks=blocks, samples=int(len(err)))


@dataclass
class ParametricAnalysis:
    """Everything :func:`analyse_records` found; ``summary()`` is JSON-ready, ``arrays()`` is what
    a run file should store next to the raw records."""

    model: str
    nbar: float
    eta: float
    lockin: LockinFilter
    fit: SpectralFit
    fitted: ParametricModel
    scale: float
    parameters: dict              # name -> (value, standard error), rates in s⁻¹
    s_fit: dict                   # S (ideal record) and S_lockin from fitted parameters, ± errors
    kalman: KalmanResult
    innovation: dict
    truth: dict | None = None
    truth_ideal_filter: dict | None = None
    true_model: ParametricModel | None = None
    theory: dict | None = None
    blocks: int = 0

    def summary(self) -> dict:
        out = dict(model=self.model, nbar=self.nbar, eta=self.eta, lockin=self.lockin.as_dict(),
                   parameters={k: dict(value=v[0], error=v[1]) for k, v in self.parameters.items()},
                   scale_V_per_unit=self.scale, S=self.s_fit, innovation=self.innovation,
                   fit=dict(nll=self.fit.nll, evaluations=self.fit.evaluations,
                            success=self.fit.success, segments=self.fit.periodogram.segments,
                            nperseg=self.fit.periodogram.nperseg),
                   blocks=self.blocks, burn_in=self.kalman.burn_in)
        if self.theory is not None:
            out["theory"] = self.theory
        if self.truth is not None:
            out["truth"] = self.truth
        if self.true_model is not None:
            out["true_parameters"] = self.true_model.as_dict()
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        """Arrays worth storing: estimates, collective estimates, conditional covariance,
        innovations and the measured/fitted collective spectra."""
        spec = self.fit.collective_spectra()
        return {"estimates": self.kalman.estimates.astype(np.float32),
                "collective_estimates": self.kalman.collective.astype(np.float32),
                "conditional_covariance": self.kalman.covariance,
                "innovations": self.kalman.innovations.astype(np.float32),
                "spectra_freqs": spec["freqs"], "spectra_measured": spec["measured"],
                "spectra_fitted": spec["fitted"]}


@single_thread_blas
def analyse_records(records: np.ndarray, lockin: LockinFilter, *, model: str = "modulated",
                    nbar: float, eta: float, gamma_diff: float = 0.0, blocks: int = 6,
                    truth: np.ndarray | None = None, true_model: ParametricModel | None = None,
                    true_scale: float | None = None, nperseg: int | None = None,
                    fix: dict | None = None) -> ParametricAnalysis:
    """The whole analysis of one record set (N×4 volts; X1, Y1, X2, Y2).

    Fit (:func:`fit_spectra`), calibrate μ and the scale from N and η (:func:`calibrate`),
    Kalman-filter the records with the fitted model, and estimate S two ways: for an ideal
    continuous record (the paper's Eq. 12 with the fitted parameters) and through these lock-in
    settings (the filter actually run). Uncertainties: each of ``blocks`` contiguous blocks is
    refitted from the global fit; errors are the blocks' standard deviation / √blocks.
    ``S_mismatch_penalty``: how much worse a filter built on parameters *this* uncertain does
    on average (:func:`mismatch_covariance` with the block fits as filters, scaled by 1/blocks
    — the penalty is quadratic in the parameter error); ``S_filter_expected`` = S_lockin + it.
    Near threshold this is not small: hold γ and Δ at calibrated values (``fix``) if you can.
    With ``truth`` (simulated quadratures, N×4) the variance of (true − estimated) best
    quadratures is measured as well, for the fitted filter and, with ``true_model``/``true_scale``,
    the filter built on the true parameters.
    """
    y = np.asarray(records, float)
    fit = fit_spectra(y, lockin, model=model, gamma_diff=gamma_diff, nperseg=nperseg, fix=fix)
    fitted, scale = calibrate(fit.volts, nbar, eta)
    dm = fit.discrete()
    kf = kalman_filter(y, dm, scale=scale)

    def derived(vm: VoltsModel) -> dict:
        pm, sc = calibrate(vm, nbar, eta)
        ideal = separability(pm.conditional_covariance(), model)
        _, p, _, _ = steady_state_gain(discretize(vm, lockin))
        lock = separability(p[:4, :4] / sc ** 2, model)
        return dict(gamma=vm.gamma, delta=vm.delta, chi=abs(vm.chi), mu=pm.mu, snr=vm.snr,
                    scale=sc, S=ideal["S"], V_plus=ideal["V_plus"], V_minus=ideal["V_minus"],
                    S_lockin=lock["S"], V_plus_lockin=lock["V_plus"], V_minus_lockin=lock["V_minus"])

    central = derived(fit.volts)
    per_block: list[dict] = []
    block_models: list[VoltsModel] = []
    if blocks >= 2:
        nb = max(256, (nperseg or fit.periodogram.nperseg) // 2)
        for sl in _block_slices(len(y), blocks):
            seg = y[sl]
            npb = min(fit.periodogram.nperseg, default_nperseg(len(seg)))
            npb = max(min(npb, len(seg) // 4), min(nb, len(seg)))
            try:
                bf = fit_spectra(seg, lockin, model=model, gamma_diff=gamma_diff, nperseg=npb,
                                 init=fit.volts, fix=fix, maxiter=20)
                per_block.append(derived(bf.volts))
                block_models.append(bf.volts)
            except (InputError, ValueError, np.linalg.LinAlgError):
                continue
    errors = {k: _mean_sem([b[k] for b in per_block])[1] if len(per_block) >= 2 else math.nan
              for k in central}
    params = {k: (central[k], errors[k]) for k in ("gamma", "delta", "chi", "mu", "snr", "scale")}
    s_fit = {k: central[k] for k in ("S", "V_plus", "V_minus", "S_lockin", "V_plus_lockin",
                                     "V_minus_lockin")}
    s_fit.update({k + "_err": errors[k] for k in ("S", "V_plus", "V_minus", "S_lockin",
                                                  "V_plus_lockin", "V_minus_lockin")})
    pen = []
    for bv in block_models:
        try:
            _, bs = calibrate(bv, nbar, eta)
            fdm = discretize(bv, lockin)
            _, pf, _, _ = steady_state_gain(fdm)
            err = mismatch_covariance(dm, scale, fdm, bs)
            pen.append(directional_separability(err, pf[:4, :4] / bs ** 2, model)["S"]
                       - central["S_lockin"])
        except (np.linalg.LinAlgError, ValueError):
            continue
    s_fit["S_mismatch_penalty"] = float(np.mean(pen)) / len(pen) if pen else math.nan
    s_fit["S_filter_expected"] = central["S_lockin"] + (s_fit["S_mismatch_penalty"] if pen else 0.0)
    s_fit["E_N"] = max(0.0, -math.log(central["S"])) if central["S"] > 0 else math.nan
    s_fit["entangled"] = bool(central["S"] + 2 * (errors["S"] if np.isfinite(errors["S"]) else 0) < 1)
    an = ParametricAnalysis(model, nbar, eta, lockin, fit, fitted, scale, params, s_fit, kf,
                            kf.innovation_check(), blocks=len(per_block))
    if true_model is not None:
        th = true_model.theory()
        pen = lockin_penalty(true_model, lockin, true_scale or 1.0)
        an.true_model = true_model
        an.theory = dict(S=th.S, V_plus=th.V_plus, V_minus=th.V_minus, alpha=th.alpha,
                         threshold=th.threshold, SNR=th.SNR, S_lockin=pen["S_lockin"],
                         V_plus_lockin=pen["V_plus_lockin"], V_minus_lockin=pen["V_minus_lockin"])
    if truth is not None:
        an.truth = {"fitted_filter": truth_statistics(truth, kf)}
        if true_model is not None and true_scale is not None:
            kt = kalman_filter(y, discretize(true_model.volts(true_scale), lockin), scale=true_scale)
            an.truth["true_filter"] = truth_statistics(truth, kt)
    return an


# ==============================================================================================
# The ``parametric:`` section of a sequence
# ==============================================================================================
#: SR865A time constants (OFLT 0…21) and capture-rate grid (1.25 MHz / 2^n)
TIME_CONSTANTS = tuple(float(f"{m}e{e}") for e in range(-6, 5) for m in (1, 3))
MAX_CAPTURE_RATE = 1.25e6
CAPTURE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class ParametricSettings:
    """The ``parametric:`` section of a sequence, converted.

    Rates are written as ordinary frequencies in the file (``gamma: 50 Hz`` means γ/2π = 50 Hz)
    and stored here as angular rates in s⁻¹ (γ = 2π · 50 s⁻¹). See docs/parametric-experiment.md.
    """

    model: str
    gamma: float
    chi: float
    delta: float
    nbar: float
    eta: float
    mu: float
    gamma_diff: float
    duration: float
    sample_rate: float
    settle: float
    time_constant: float
    slope_db: int
    sensitivity: float | None
    scale: float
    mechanical_frequency: float | None
    blocks: int
    fix: tuple[str, ...] = ()
    raw: dict = field(default_factory=dict, repr=False)

    def fixed_values(self) -> dict:
        """The ``fix`` dict for :func:`analyse_records` (γ, Δ at the sequence's values)."""
        return {k: getattr(self, k) for k in self.fix}

    @property
    def n_samples(self) -> int:
        return int(round(self.duration * self.sample_rate))

    def physical_model(self) -> ParametricModel:
        return ParametricModel(self.model, self.gamma, self.chi, self.delta, self.nbar, self.eta,
                               self.mu, self.gamma_diff)

    def lockin(self) -> LockinFilter:
        return LockinFilter.from_slope(self.time_constant, self.slope_db, self.sample_rate)

    @property
    def reference_frequency(self) -> float | None:
        """Lock-in reference ω_d/2π (Hz): f_m − Δ/2π (modulated), f_m (constant coupling)."""
        if self.mechanical_frequency is None:
            return None
        if self.model == "modulated":
            return self.mechanical_frequency - self.delta / TWO_PI
        return self.mechanical_frequency

    @property
    def drive_frequency(self) -> float | None:
        """Parametric drive 2ω_d/2π (Hz)."""
        f = self.reference_frequency
        return None if f is None else 2 * f

    def as_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("model", "gamma", "chi", "delta", "nbar", "eta", "mu",
                                            "gamma_diff", "duration", "sample_rate", "settle",
                                            "time_constant", "slope_db", "sensitivity", "scale",
                                            "mechanical_frequency", "blocks", "fix")}
        d.update(n_samples=self.n_samples, reference_frequency=self.reference_frequency,
                 drive_frequency=self.drive_frequency, rates_unit="s^-1 (angular)")
        return d


def parametric_settings(seq: Any) -> ParametricSettings:
    """Read and check the ``parametric:`` section of a loaded sequence
    (:func:`labctl.sequence.load_sequence`), reporting every problem as ``file:line: what — fix``.
    """
    from .. import units

    doc = seq.doc
    raw = seq.raw.get("parametric")
    errs: list[InputError] = []

    def err(path: tuple, what: str, fix: str | None = None) -> None:
        errs.append(doc.error(("parametric",) + path, what, fix))

    if not isinstance(raw, dict):
        raise doc.error(("parametric",) if raw is not None else (),
                        "an 'experiment: parametric' sequence needs a 'parametric:' mapping",
                        "see sequences/parametric_steady_state.yaml")
    known = {"model", "gamma", "chi", "delta", "coupling", "nbar", "eta", "mu", "gamma_diff",
             "record", "lockin", "settle", "mechanical_frequency", "analysis", "description"}
    for k in raw:
        if k not in known:
            err((k,), f"unknown key '{k}' in parametric", "keys: " + ", ".join(sorted(known)))

    def rate(key: str, path: tuple | None = None, required: bool = True, default: float = 0.0,
             src: dict | None = None) -> float:
        src = raw if src is None else src
        path = path or (key,)
        if key not in src:
            if required:
                err(path[:-1] or (key,), f"parametric needs '{key}'",
                    f"e.g. {key}: 50 Hz (rates are written as frequencies: γ/2π)")
            return default
        try:
            return TWO_PI * units.parse_as(src[key], "Hz", where=f"parametric.{key}")
        except InputError as e:
            err(path, e.what, "write a rate as a frequency with a unit, e.g. 50 Hz (meaning γ/2π)")
            return default

    def number(key: str, default: float | None = None) -> float:
        if key not in raw:
            if default is None:
                err((), f"parametric needs '{key}'", f"e.g. {key}: 1")
                return math.nan
            return default
        try:
            return units.parse_as(raw[key], "1", where=f"parametric.{key}")
        except InputError as e:
            err((key,), e.what, "a plain number")
            return math.nan

    def quantity(src: dict, path: tuple, key: str, dim: str, default: float | None) -> float | None:
        if key not in src:
            if default is None:
                err(path, f"'{'.'.join(map(str, path))}' needs '{key}'")
            return default
        try:
            return units.parse_as(src[key], dim, where=f"parametric.{'.'.join(map(str, path + (key,)))}")
        except InputError as e:
            err(path + (key,), e.what)
            return default

    model = raw.get("model", "modulated")
    if model not in pt.MODELS:
        err(("model",), f"unknown model {model!r}", "use 'modulated' or 'constant'")
        model = "modulated"
    gamma = rate("gamma")
    chi = rate("chi")
    dkey = "delta" if "delta" in raw or model == "modulated" else "coupling"
    delta = rate(dkey)
    mu = rate("mu")
    gamma_diff = rate("gamma_diff", required=False)
    nbar = number("nbar")
    eta = number("eta")
    settle = quantity(raw, (), "settle", "s", -1.0)
    fm = quantity(raw, (), "mechanical_frequency", "Hz", -1.0)
    rec = raw.get("record") or {}
    if not isinstance(rec, dict):
        err(("record",), "'record' must be a mapping", "e.g. record: {duration: 1 s, sample_rate: 78.125 kHz}")
        rec = {}
    duration = quantity(rec, ("record",), "duration", "s", None) or math.nan
    fs = quantity(rec, ("record",), "sample_rate", "Hz", None) or math.nan
    lk = raw.get("lockin") or {}
    if not isinstance(lk, dict):
        err(("lockin",), "'lockin' must be a mapping", "e.g. lockin: {time_constant: 10 us, slope: 12}")
        lk = {}
    tau = quantity(lk, ("lockin",), "time_constant", "s", None) or math.nan
    slope = lk.get("slope", 12)
    if isinstance(slope, str):
        slope = slope.replace("dB/oct", "").replace("dB", "").strip()
        try:
            slope = int(slope)
        except ValueError:
            pass
    if slope not in SLOPES:
        err(("lockin", "slope"), f"filter slope {lk.get('slope')!r} is not 6, 12, 18 or 24 dB/oct",
            "e.g. slope: 12")
        slope = 12
    sens = quantity(lk, ("lockin",), "sensitivity", "V", -1.0)
    scale = quantity(lk, ("lockin",), "scale", "V", 1e-3)
    ana = raw.get("analysis") or {}
    if not isinstance(ana, dict):
        err(("analysis",), "'analysis' must be a mapping", "e.g. analysis: {blocks: 6, fix: [delta]}")
        ana = {}
    for k in ana:
        if k not in ("blocks", "fix"):
            err(("analysis", k), f"unknown key '{k}' in parametric.analysis", "keys: blocks, fix")
    blocks = ana.get("blocks", 6)
    if isinstance(blocks, bool) or not isinstance(blocks, int) or not 0 <= blocks <= 100:
        err(("analysis", "blocks"), f"blocks {blocks!r} must be a whole number 0…100", "e.g. blocks: 6")
        blocks = 6
    fixed = ana.get("fix", [])
    if isinstance(fixed, str):
        fixed = [fixed]
    if not isinstance(fixed, list) or any(f not in ("gamma", "delta") for f in fixed):
        err(("analysis", "fix"), f"fix {ana.get('fix')!r} must list gamma and/or delta",
            "e.g. fix: [delta] (Δ is known from the drive frequency)")
        fixed = []
    # instrument facts (SR865A)
    match = [t for t in TIME_CONSTANTS if abs(tau - t) <= 1e-9 * t] if math.isfinite(tau) else [tau]
    if match:
        tau = match[0]
    elif tau > 0:
        near = min(TIME_CONSTANTS, key=lambda t: abs(math.log(t / tau)))
        err(("lockin", "time_constant"), f"time constant {tau:g} s is not an SR865A setting",
            f"use 1, 3, 10, 30 … × 10^k s, e.g. {near:g} s")
    else:
        err(("lockin", "time_constant"), f"time constant {tau:g} s must be positive", "e.g. 10 us")
    if math.isfinite(fs):
        k = math.log2(MAX_CAPTURE_RATE / fs) if fs > 0 else -1
        if fs <= 0 or fs > MAX_CAPTURE_RATE or abs(k - round(k)) > 1e-9 or round(k) > 20:
            ks = min(20, max(0, round(k))) if fs > 0 else 0
            err(("record", "sample_rate"), f"sample rate {fs:g} Hz is not 1.25 MHz/2^n (n = 0…20)",
                f"e.g. {MAX_CAPTURE_RATE / 2 ** ks:g} Hz")
    if math.isfinite(fs) and math.isfinite(duration):
        n = duration * fs
        if n < 4096:
            err(("record", "duration"), f"the record has only {n:.0f} samples",
                "record at least 4096 samples (for the spectral fit)")
        if n * 2 * 4 > CAPTURE_BYTES:
            err(("record", "duration"),
                f"{n:.0f} samples of (X, Y) need {n * 8 / 2**20:.2f} MB, more than the 4 MB "
                "capture buffer of the SR865A",
                f"shorten to {CAPTURE_BYTES / 8 / fs:g} s or lower the sample rate")
    if settle is not None and settle < 0:
        settle = 20.0 / gamma if gamma > 0 else 0.0
    fmv = fm if fm is not None and fm >= 0 else None
    if not errs:
        try:
            pt.validate(gamma, chi, delta, nbar, eta, mu, gamma_diff=gamma_diff, model=model)
        except InputError as e:
            key = "chi" if "threshold" in e.what else "gamma"
            err((key,), e.what.replace("γ =", "γ =").replace(" = ", " = ", 1) +
                " (rates here in s⁻¹ = 2π × the Hz written)", e.fix)
    raise_input_errors(errs)
    return ParametricSettings(model, gamma, chi, delta, nbar, eta, mu, gamma_diff, duration, fs,
                              float(settle or 0.0), tau, int(slope), sens if sens and sens > 0 else None,
                              float(scale), fmv, int(blocks), tuple(fixed), dict(raw))
