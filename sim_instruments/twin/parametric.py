"""Stochastic simulation of the steady-state parametric-entanglement experiment.

Szorkovszky et al. 2014 (arXiv:1402.6392): two oscillators, parametric drive (modulated coupling
at 2ω_d with detuning Δ, Eq. 1–8, or constant coupling Γ with single-mode drives, Eq. 19–28),
thermal baths of occupation N, and an independent weak continuous measurement (rate μ,
efficiency η) of each oscillator's two quadratures, read out by one lock-in amplifier per
oscillator.

Model (rotating frame, r = (X1, Y1, X2, Y2), vacuum variance 1/2; see
``labctl.physics.estimation``):

    dr  = A r dt + dw,        E[dw dwᵀ] = diag(2γ_j(N + ½) + μ) dt       (thermal + back-action)
    dy_j = √(4ημ) r_j dt + dW_j                                          (measurement records)

with A from ``labctl.physics.parametric.full_drift``. This normalisation makes the Kalman error
covariance obey Eq. 12, so the conditional covariance of the simulation *is* V_α± of the theory.
The lock-in sees the detector voltage ``scale`` · (dy_j/dt)/√(4ημ) (so ``scale`` V per unit
quadrature) and filters it with ``order`` RC stages of time constant τ (6 dB/oct each), sampled
at the capture rate — or, ``order = 0``, averages it over each sample interval.

Integration: the oscillators, the lock-in filter states and the per-step integral of the record
form one linear SDE. Each step is its exact solution — transition e^{M h} and the exact
covariance of the noise increment (Van Loan; an Ornstein–Uhlenbeck step) — so the sampled
state and records have *no discretisation error* at any step h; ``substeps`` only refines the
grid the noise is drawn on (the statistics are identical, which the tests check). The first
state is drawn from the stationary distribution: no burn-in. The recursion is evaluated in
vectorised passes (``labctl.physics.estimation.linear_recursion``) with a seeded
``numpy.random.Generator``.

Lock-in simulators (``sim_instruments.models.sr865a.SR865AModel``) take their capture data from
:class:`ParametricTwin` through their ``trace_source`` hook: both lock-ins are served from the
same simulated run (oscillator 1's X, Y to one, oscillator 2's to the other).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from labctl.physics.estimation import (LockinFilter, ParametricModel, _augmented, linear_recursion,
                                       single_thread_blas, van_loan)


@dataclass
class SimulatedRun:
    """One simulated record set.

    ``records``: lock-in outputs (N×4 V: X1, Y1, X2, Y2) at ``times`` (s); ``truth``: the
    quadratures r(t_k) (N×4, dimensionless) at the same instants (for the boxcar record, the end
    of each averaging interval).
    """

    times: np.ndarray
    records: np.ndarray
    truth: np.ndarray
    model: ParametricModel
    lockin: LockinFilter
    scale: float
    seed: Any
    substeps: int

    @property
    def n(self) -> int:
        return len(self.times)

    def lockin_xy(self, oscillator: int) -> np.ndarray:
        """(N, 2) X, Y in volts of lock-in ``oscillator`` (1 or 2)."""
        if oscillator not in (1, 2):
            raise ValueError("oscillator must be 1 or 2")
        j = 2 * (oscillator - 1)
        return self.records[:, j: j + 2]

    def as_dict(self) -> dict:
        return dict(model=self.model.as_dict(), lockin=self.lockin.as_dict(), scale=self.scale,
                    seed=self.seed if isinstance(self.seed, (int, type(None))) else str(self.seed),
                    substeps=self.substeps, samples=self.n)


def _sqrt_psd(q: np.ndarray) -> np.ndarray:
    """A matrix L with L Lᵀ = Q for a symmetric positive semi-definite Q (eigenvalues < 0 from
    rounding are set to 0)."""
    w, v = np.linalg.eigh((q + q.T) / 2)
    return v * np.sqrt(np.clip(w, 0.0, None))


def step_model(model: ParametricModel, lockin: LockinFilter, scale: float,
               substeps: int = 1) -> dict:
    """Exact one-substep transition of the simulated state (x' = scale·r, lock-in states, and
    the record integral over the substep). Returned as a dict of F, L (noise root), H, masks."""
    vm = model.volts(scale)
    a = vm.drift()
    dv = np.diag(vm.diffusion())
    h = lockin.dt / substeps
    # lock-in (or boxcar) part, then the per-substep integral of the noisy record u = x' + √B ξ
    lk_rc = lockin if lockin.order else None
    if lk_rc is not None:
        m, w, hm, _ = _augmented(a, dv, vm.b, lk_rc, h)
    else:
        m = np.zeros((4, 4))
        w = np.zeros((4, 4))
        m[:] = a
        w[:] = np.diag(dv)
        hm = None
    d0 = m.shape[0]
    d = d0 + 4
    mm = np.zeros((d, d))
    ww = np.zeros((d, d))
    mm[:d0, :d0] = m
    ww[:d0, :d0] = w
    for j in range(4):
        mm[d0 + j, j] = 1.0                      # dI = x' dt + √B dW
        ww[d0 + j, d0 + j] = vm.b
        if lk_rc is not None:                    # the RC input sees the same dW
            s0 = 4 + j * lockin.order
            c = vm.b / lockin.time_constant
            ww[s0, d0 + j] = ww[d0 + j, s0] = c
    phi, q = van_loan(mm, ww, h)
    f = phi.copy()
    f[:, d0:] = 0.0                              # the integral restarts every substep
    return dict(f=f, l=_sqrt_psd(q), d=d, d0=d0, hm=hm, h=h, vm=vm)


@single_thread_blas
def simulate(model: ParametricModel, lockin: LockinFilter, duration: float | None = None, *,
             n_samples: int | None = None, scale: float = 1e-3, seed: Any = None,
             rng: np.random.Generator | None = None, substeps: int = 1,
             chunk: int = 262144) -> SimulatedRun:
    """Simulate ``duration`` s (or ``n_samples`` samples) of both lock-ins' outputs.

    :param model: physical parameters (rates in s⁻¹).
    :param lockin: time constant, filter order and capture rate (``order = 0``: boxcar record).
    :param scale: lock-in output volts per unit quadrature.
    :param seed, rng: a seed or a ``numpy.random.Generator`` (``rng`` wins).
    :param substeps: internal steps per sample (exact at any value; a check, not a need).
    """
    if n_samples is None:
        if duration is None:
            raise ValueError("give duration or n_samples")
        n_samples = int(round(duration * lockin.sample_rate))
    if n_samples < 1:
        raise ValueError("the record must have at least one sample")
    if substeps < 1 or int(substeps) != substeps:
        raise ValueError("substeps must be a positive whole number")
    rng = rng if rng is not None else np.random.default_rng(seed)
    st = step_model(model, lockin, scale, substeps)
    f, lroot, d, d0 = st["f"], st["l"], st["d"], st["d0"]
    # stationary start of (x', lock-in states): the integral part is reset anyway
    from scipy.linalg import solve_discrete_lyapunov

    fs_ = f[:d0, :d0]
    qs_ = lroot[:d0] @ lroot[:d0].T
    sig = solve_discrete_lyapunov(fs_, qs_)
    z = np.zeros(d)
    z[:d0] = _sqrt_psd(sig) @ rng.standard_normal(d0)
    total = n_samples * substeps
    records = np.empty((n_samples, 4))
    truth = np.empty((n_samples, 4))
    done = 0                                      # substeps done
    per_chunk = max(substeps, (chunk // substeps) * substeps)
    while done < total:
        m = min(per_chunk, total - done)
        u = rng.standard_normal((m, d)) @ lroot.T
        zs = linear_recursion(f, u, z)
        z = zs[-1]
        i0 = done // substeps
        ns = m // substeps
        sampled = zs[substeps - 1::substeps]                      # state at the sample instants
        truth[i0: i0 + ns] = sampled[:, :4] / scale
        if lockin.order:
            idx = [4 + j * lockin.order + lockin.order - 1 for j in range(4)]
            records[i0: i0 + ns] = sampled[:, idx]
        else:
            integ = zs[:, d0:].reshape(ns, substeps, 4).sum(axis=1)
            records[i0: i0 + ns] = integ / lockin.dt
        done += m
    if lockin.output_noise:
        records += rng.normal(0.0, lockin.output_noise, records.shape)
    times = (np.arange(n_samples) + 1) * lockin.dt
    return SimulatedRun(times, records, truth, model, lockin, scale, seed, substeps)


# ==============================================================================================
# The twin: capture data for the simulated lock-ins
# ==============================================================================================
@dataclass
class ParametricTwin:
    """Serves both simulated lock-ins from one simulated run.

    ``attach(lab_or_models)`` sets ``trace_source`` on the SR865A models (the one with option
    ``oscillator: 1`` — or the first — gets oscillator 1) and ``lab.parametric_twin`` (and
    ``lab.twin`` if no other twin is attached); ``fire(lab)`` is the common trigger edge for
    captures armed with ``trigger="trigger"``. When a lock-in starts a capture it
    calls ``trace_source(n, rate, settings)``; the twin simulates a new run with that lock-in's
    time constant, slope and rate unless the current run already matches and this lock-in has not
    consumed it yet, so the two lock-ins of one acquisition see the same physics. ``last_run``
    keeps the truth for checks.
    """

    model: ParametricModel
    scale: float = 1e-3
    seed: Any = None
    substeps: int = 1
    rng: np.random.Generator | None = None
    last_run: SimulatedRun | None = None
    _consumed: set = field(default_factory=set)
    runs: int = 0

    def __post_init__(self) -> None:
        if self.rng is None:
            self.rng = np.random.default_rng(self.seed)

    def set_model(self, model: ParametricModel) -> None:
        """New physics (e.g. the drive changed); the next capture simulates afresh."""
        self.model = model
        self.last_run = None
        self._consumed.clear()

    def _run_for(self, oscillator: int, n: int, rate: float, settings: dict) -> SimulatedRun:
        order = int(settings.get("order", 2))
        lk = LockinFilter(float(settings.get("time_constant", 1e-5)), order, float(rate))
        run = self.last_run
        if (run is None or oscillator in self._consumed or run.n < n
                or abs(run.lockin.sample_rate - rate) > 1e-9 * rate
                or run.lockin.order != lk.order
                or abs(run.lockin.time_constant - lk.time_constant) > 1e-12):
            self.last_run = run = simulate(self.model, lk, n_samples=n, scale=self.scale,
                                           rng=self.rng, substeps=self.substeps)
            self._consumed = set()
            self.runs += 1
        self._consumed.add(oscillator)
        return run

    def source(self, oscillator: int) -> Callable[[int, float, dict], np.ndarray]:
        """``trace_source`` for the lock-in of ``oscillator``: (n, rate, settings) -> (n, 2) V."""
        def trace(n: int, rate: float, settings: dict) -> np.ndarray:
            run = self._run_for(oscillator, n, rate, settings)
            return run.lockin_xy(oscillator)[:n].copy()
        return trace

    def attach(self, lab_or_models: Any) -> list:
        """Hook the SR865A models of a ``SimLab`` (or a list of models) to this twin."""
        from sim_instruments.models.sr865a import SR865AModel

        models = (lab_or_models.find(SR865AModel) if hasattr(lab_or_models, "find")
                  else list(lab_or_models))
        if not models:
            raise ValueError("no SR865A models to attach the parametric twin to")
        if len(models) > 2:
            raise ValueError(f"{len(models)} lock-ins found; the parametric twin serves two")

        def osc(m: Any, i: int) -> int:
            o = m.options.get("oscillator")
            return int(o) if o is not None else i + 1

        for i, m in enumerate(models):
            m.trace_source = self.source(osc(m, i))
            m.twin = self
        if hasattr(lab_or_models, "find"):            # a SimLab: don't displace another twin
            lab_or_models.parametric_twin = self
            if getattr(lab_or_models, "twin", None) is None:
                lab_or_models.twin = self
        return models

    def fire(self, models: Any) -> None:
        """The common trigger edge: start every armed (``CAPTURESTART …, TRIG``) capture of
        ``models`` (a SimLab or a list of SR865A models), as the drive generator's marker would."""
        from sim_instruments.models.sr865a import SR865AModel

        ms = models.find(SR865AModel) if hasattr(models, "find") else list(models)
        for m in ms:
            m.hardware_trigger()
