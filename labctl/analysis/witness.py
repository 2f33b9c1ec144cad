"""Second-order coherences and the DLCZ entanglement witness, with their counting statistics.

Implements the analysis of Riedinger et al., "Remote quantum entanglement between two micromechanical
oscillators", Nature 556, 473 (2018) (``/work/shared/seeds/riedinger2018_remote_entanglement.txt``):

* second-order coherence between read photons on detector i and herald (pump) photons on detector j,
  from counts over N trials (``docs/physics.md``)::

      g2[r_i, p_j] = C(r_i, p_j) N / (C(r_i) C(p_j))            (dimensionless)

* the upper bound of the entanglement witness for herald detector j (main text, Eq. 3)::

      R_m(θ, j) = 4 (g2[r1,pj] + g2[r2,pj] − 1) / (g2[r1,pj] − g2[r2,pj])²

  R_m < 1 for some θ and j implies entanglement; 0.995 is the bound reduced for systematic errors
  (Supplementary, "Entanglement witness and Systematic Errors").

* its statistics (Supplementary, "Statistical Analysis"): maximum-likelihood values with an interval
  holding ±34 % of the probability; the g2 densities follow from binomial statistics of the
  coincidence counts; the density of R_m follows from the g2 densities; R_m,sym combines herald
  detectors 1 and 2 as two independent measurements of one quantity.

Statistical model (all choices documented in ``docs/analysis.md``)
-------------------------------------------------------------------
*g2 density.* A coincidence count C(r_i,p_j) is C successes in N Bernoulli trials with unknown
coincidence probability q. Its binomial likelihood L(q) ∝ q^C (1 − q)^(N−C), normalised over q, is the
Beta(C + 1, N − C + 1) density (the posterior for a flat prior on q). The singles are treated as fixed
(their relative errors, ~1/√C(r_i) ≈ 0.3 %, are far below those of the coincidences, ≥ 8 %), so
g2 = q N² / (C(r_i) C(p_j)) is q rescaled. Its mode is the plug-in value C N / (C(r_i) C(p_j)).

*R_m density.* The supplement discretises the two g2 densities on equidistant grids and sums the
products P(g2_r1 ∈ [a, a+δa]) P(g2_r2 ∈ [b, b+δb]) over the cells where R_m(a, b) ∈ [f, f+δf]. This
module evaluates the limit δa, δb → 0 of that sum directly: the cumulative distribution

    P(R_m ≤ f) = ∫ da p_A(a) P_B({b : R_m(a, b) ≤ f})

where, for fixed a, {b : R_m ≤ f} follows in closed form from the quadratic f (b − a)² − 4 (b − a)
− 4 (2a − 1) ≥ 0, and P_B is the exact Beta distribution function of the other g2 (tabulated and
interpolated). The a-integral is a midpoint rule in probability (nodes at the quantiles
(k + ½)/n of p_A). R_m is symmetric in its two arguments; the better-determined g2 (larger count)
is integrated by quadrature. Densities are difference quotients of this distribution function on a
grid that adapts to where the probability is, so the result does not depend on a histogram binning.

*Values and intervals.* The value is the maximum-likelihood (ML) value, the mode of the density of
R_m. The interval is the central one: from the 16 % to the 84 % quantile (50 % ± 34 %). This is the
convention that reproduces the published numbers (θ_opt: R_m(θ_opt,1) = 0.612 +0.152/−0.057); the
alternative, 34 % of the probability on each side of the mode, gives +0.098/−0.107 there and is not
what the authors used. For very skewed densities (a few counts) the mode may lie outside the central
interval; the interval is still reported as the 16 %–84 % quantiles.

*R_m,sym.* R_m(θ,1) and R_m(θ,2) are two independent measurements of one quantity; the density of
the common value given both is the normalised product of the two densities. Its mode, central
interval and P(R_m,sym < bound) for the bounds 1.0 and 0.995 are reported.

Performance: one full analysis (both herald detectors and R_m,sym) takes about 0.1 s.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from .counts import Counts


def _special():  # noqa: ANN202
    """scipy.special, imported on first use (it costs ~0.2 s, paid only when g2 is analysed)."""
    import scipy.special

    return scipy.special

#: Probability on each side of the median held by the reported interval (supplement: "±34 %").
HALF_INTERVAL = 0.34
#: Bounds for which the confidence P(R_m,sym < bound) is reported: the classicality bound 1 and the
#: bound reduced for systematic errors, 0.995 (Supplementary, "Entanglement witness and Systematic
#: Errors").
BOUNDS = (1.0, 0.995)

# numerical parameters (checked for convergence in tests/test_witness_stats.py)
_N_QUAD = 128          # quadrature nodes over the better-determined g2
_N_TABLE = 8193        # points of the tabulated distribution function of the other g2
_TAIL = 1e-13          # probability cut off at each end of a g2 table
_N_PROBE = 601         # first look: sinh-spaced points over ±_PROBE_SPAN (log-spaced for |f| > 1)
_PROBE_SPAN = 1e30
_N_QUANTILE = 600      # points placed at equal probability steps of each R_m
_N_UNIFORM = 400       # uniform points across the bulk of both R_m densities
_N_ZOOM = 65           # points per refinement step of the mode
_ZOOM_STEPS = 2
_N_PLOT = 600          # bins of the plotting densities


# ---------------------------------------------------------------------------------------------
# second-order coherences

def g2_value(c: int, n: int, r: int, p: int) -> float | None:
    """Plug-in (= maximum-likelihood) g2 = C N / (C_r C_p); None if a single count is zero.

    Args:
        c: coincidence count C(r_i, p_j) (events).
        n: number of trials N.
        r: read single count C(r_i) (events).
        p: herald single count C(p_j) (events).
    """
    if r <= 0 or p <= 0:
        return None
    return float(c) * float(n) / (float(r) * float(p))


def g2_matrix(counts: Counts) -> list[list[float | None]]:
    """g2[r_i, p_j] as a 2×2 list, row i = read detector, column j = herald detector (physics.md).

    An entry is None when its read or herald single count is zero (g2 undefined).
    """
    return [[g2_value(counts.coincidences[i][j], counts.trials, counts.read[i], counts.pump[j])
             for j in range(2)] for i in range(2)]


@dataclass
class G2Density:
    """Probability density of one g2 given its coincidence count (binomial statistics).

    g2 = q · scale with q ~ Beta(C + 1, N − C + 1), the normalised binomial likelihood of the
    coincidence probability q; scale = N² / (C_r C_p) with the singles treated as fixed.

    Args:
        c: coincidence count C(r_i, p_j) (events), 0 ≤ c ≤ n.
        n: number of trials N (> 0).
        r, p: read and herald single counts (> 0).
    """

    c: int
    n: int
    r: int
    p: int
    _x0: float = field(init=False, repr=False)
    _h: float = field(init=False, repr=False)
    _table: np.ndarray = field(init=False, repr=False)
    _step: np.ndarray = field(init=False, repr=False)
    _slope: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.r <= 0 or self.p <= 0 or self.n <= 0 or not 0 <= self.c <= self.n:
            raise ValueError(f"g2 undefined for C={self.c}, N={self.n}, C_r={self.r}, C_p={self.p}")
        self.alpha = self.c + 1.0
        self.beta = self.n - self.c + 1.0
        self.scale = float(self.n) * float(self.n) / (float(self.r) * float(self.p))
        lo = self.ppf(_TAIL) if self.c > 0 else 0.0
        hi = self.ppf(1.0 - _TAIL)
        if not hi > lo:  # pragma: no cover - degenerate only for absurd inputs
            hi = lo + max(abs(lo), 1.0) * 1e-9
        x = np.linspace(lo, hi, _N_TABLE)
        q = np.clip(x / self.scale, 0.0, 1.0)
        table = np.maximum.accumulate(_special().betainc(self.alpha, self.beta, q))
        table[0], table[-1] = 0.0, 1.0
        self._x0, self._h, self._table = float(lo), float(x[1] - x[0]), table
        self._step = np.append(np.diff(table), 0.0)
        # probability density times table step: the slopes of the smooth (cubic Hermite) lookup
        with np.errstate(divide="ignore", invalid="ignore"):
            logpdf = ((self.alpha - 1.0) * np.log(q) + (self.beta - 1.0) * np.log1p(-q)
                      - _special().betaln(self.alpha, self.beta))
        if self.c == 0:
            logpdf[q == 0.0] = -_special().betaln(self.alpha, self.beta)
        self._slope = np.nan_to_num(np.exp(logpdf) * (self._h / self.scale), nan=0.0, posinf=0.0)

    @property
    def mode(self) -> float:
        """Maximum-likelihood g2 = C N / (C_r C_p)."""
        return self.c / self.n * self.scale

    def ppf(self, u: Any) -> Any:
        """Quantile function (inverse distribution function) of g2."""
        return _special().betaincinv(self.alpha, self.beta, u) * self.scale

    def cdf(self, x: np.ndarray) -> np.ndarray:
        """P(g2 ≤ x), from the table (linear interpolation, absolute error ≲ 2e-6)."""
        t = np.asarray(x, dtype=float) - self._x0
        t *= 1.0 / self._h
        np.clip(t, 0.0, _N_TABLE - 1 - 1e-9, out=t)
        i = t.astype(np.intp)
        t -= i
        t *= self._step[i]
        t += self._table[i]
        return t

    def smooth_cdf(self, x: np.ndarray) -> np.ndarray:
        """P(g2 ≤ x) by cubic Hermite interpolation of the table with the density as slopes.

        Continuously differentiable (so densities derived from it are free of interpolation
        steps); absolute error ≲ 1e-7. Slower than :meth:`cdf`; used to locate modes.
        """
        t = np.asarray(x, dtype=float) - self._x0
        t *= 1.0 / self._h
        below, above = t <= 0.0, t >= _N_TABLE - 1
        np.clip(t, 0.0, _N_TABLE - 1 - 1e-9, out=t)
        i = t.astype(np.intp)
        t -= i
        t2 = t * t
        t3 = t2 * t
        tab, sl = self._table, self._slope
        out = ((2 * t3 - 3 * t2 + 1) * tab[i] + (t3 - 2 * t2 + t) * sl[i]
               + (3 * t2 - 2 * t3) * tab[i + 1] + (t3 - t2) * sl[i + 1])
        out[below] = 0.0
        out[above] = 1.0
        return out

    def exact_cdf(self, x: np.ndarray) -> np.ndarray:
        """P(g2 ≤ x) from the regularised incomplete beta function (slower; for checks)."""
        q = np.clip(np.asarray(x, float) / self.scale, 0.0, 1.0)
        return _special().betainc(self.alpha, self.beta, q)


def rm_value(a: float | None, b: float | None) -> float | None:
    """Plug-in R_m = 4 (a + b − 1) / (a − b)² (main text Eq. 3); inf if a == b, None if undefined."""
    if a is None or b is None:
        return None
    if a == b:
        return math.inf if a + b - 1 > 0 else (-math.inf if a + b - 1 < 0 else None)
    return 4.0 * (a + b - 1.0) / (a - b) ** 2


class RmDistribution:
    """Distribution of R_m(g2_a, g2_b) = 4 (a + b − 1)/(a − b)² for independent g2 densities.

    ``cdf(f)`` is P(R_m ≤ f), the δ → 0 limit of the supplement's discretised sum over cells.
    """

    def __init__(self, g_a: G2Density, g_b: G2Density, n_quad: int | None = None) -> None:
        # R_m is symmetric: integrate over the better-determined g2 (the larger count)
        if g_b.c > g_a.c:
            g_a, g_b = g_b, g_a
        self.quad, self.other = g_a, g_b
        n = n_quad or _N_QUAD
        u = (np.arange(n) + 0.5) / n
        self.nodes = np.asarray(g_a.ppf(u), dtype=float)

    def cdf(self, f: np.ndarray, exact: bool = False, chunk: int = 1 << 19) -> np.ndarray:
        """P(R_m ≤ f) at each f (vectorised, in chunks to bound memory).

        ``exact`` evaluates the other g2's distribution function by smooth (cubic Hermite)
        interpolation instead of linear (slower; used to locate the mode).
        """
        f = np.atleast_1d(np.asarray(f, dtype=float))
        out = np.empty_like(f)
        step = max(1, chunk // len(self.nodes))
        for s in range(0, len(f), step):
            out[s:s + step] = self._cdf(f[s:s + step], exact)
        return out

    def estimate(self) -> "Estimate":
        """ML value (mode) and central ±34 % interval (16 %, 84 % quantiles) of R_m."""
        grid, (F,) = _adaptive_grid([self])
        return _estimate(self, grid, F)

    def _cdf(self, f: np.ndarray, exact: bool) -> np.ndarray:
        Fb = self.other.smooth_cdf if exact else self.other.cdf
        a = self.nodes[:, None]
        two_a1 = 2.0 * a - 1.0
        out = np.empty(len(f))
        # For fixed a, with d = b − a: R_m ≤ f  ⇔  f d² − 4 d − 4 (2a − 1) ≥ 0 (d ≠ 0). Its roots are
        # d_small = −2(2a − 1)/(1 + √x) (stable as f → 0) and d_large = 2(1 + √x)/f, x = 1 + f(2a − 1).
        pos, neg, zero = f > 0.0, f < 0.0, f == 0.0
        for mask, sign in ((pos, 1), (neg, -1)):
            if not mask.any():
                continue
            ff = f[mask][None, :]
            x = 1.0 + ff * two_a1
            real = x > 0.0
            sq = np.sqrt(np.where(real, x, 0.0))
            Fs = Fb(a - 2.0 * two_a1 / (1.0 + sq))
            Fl = Fb(a + 2.0 * (1.0 + sq) / ff)
            if sign > 0:   # parabola opens upwards: b − a outside (d_small, d_large); all b if x ≤ 0
                g = np.where(real, 1.0 - Fl + Fs, 1.0)
            else:          # opens downwards: b − a inside (d_large, d_small); no b if x ≤ 0
                g = np.where(real, Fs - Fl, 0.0)
            out[mask] = g.mean(axis=0)
        if zero.any():     # R_m ≤ 0  ⇔  b ≤ 1 − a
            out[zero] = Fb(1.0 - self.nodes).mean()
        return np.clip(out, 0.0, 1.0)


# ---------------------------------------------------------------------------------------------
# numerical helpers

def _inverse(F: np.ndarray, x: np.ndarray, u: np.ndarray) -> np.ndarray:
    """x where the nondecreasing tabulated F(x) reaches u (linear within each step)."""
    u = np.asarray(u, dtype=float)
    idx = np.clip(np.searchsorted(F, u, side="left"), 1, len(F) - 1)
    F0, F1 = F[idx - 1], F[idx]
    dF = F1 - F0
    w = np.where(dF > 0, (u - F0) / np.where(dF > 0, dF, 1.0), 0.5)
    return x[idx - 1] + np.clip(w, 0.0, 1.0) * (x[idx] - x[idx - 1])


def _probe_grid() -> np.ndarray:
    t = np.linspace(-math.asinh(_PROBE_SPAN), math.asinh(_PROBE_SPAN), _N_PROBE)
    return np.sinh(t)


def _equal_probability_points(F: np.ndarray, x: np.ndarray, n: int) -> np.ndarray:
    eps = 1e-9
    u = np.linspace(eps, 1.0 - eps, n)
    return _inverse(F, x, u)


@dataclass
class Estimate:
    """ML value and central ±34 % interval of a density (None when undefined)."""

    value: float | None
    lower: float | None
    upper: float | None

    def to_dict(self) -> dict[str, float | None]:
        return {"value": _num(self.value), "lower": _num(self.lower), "upper": _num(self.upper)}


def _num(x: float | None) -> float | None:
    if x is None or not math.isfinite(x):
        return None
    return float(x)


# ---------------------------------------------------------------------------------------------
# the analysis

def _bin_density(F: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Mean density in each interval [x_k, x_k+1] from the distribution function F at x."""
    return np.diff(F) / np.diff(x)


def _adaptive_grid(dists: Sequence["RmDistribution"]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Points where the probability of all ``dists`` is resolved, and each distribution function there.

    A sinh-spaced probe over ±1e9 finds where the probability is; two refinements place points at
    equal probability steps; the final grid holds _N_QUANTILE equal-probability points of each
    distribution, a uniform grid across the bulk of all of them (where a product of two densities
    lives), the probe, and the bounds of BOUNDS exactly.
    """
    pts = [_probe_grid(), np.array(BOUNDS)]
    if dists:
        probe = pts[0]
        first = [d.cdf(probe) for d in dists]
        for _ in range(2):
            refine = np.unique(np.concatenate(
                [probe] + [_equal_probability_points(F, probe, 200) for F in first]))
            first = [d.cdf(refine) for d in dists]
            probe = refine
        qpts = [_equal_probability_points(F, probe, _N_QUANTILE) for F in first]
        lo = min(float(_inverse(F, probe, np.array([1e-3]))[0]) for F in first)
        hi = max(float(_inverse(F, probe, np.array([1 - 1e-3]))[0]) for F in first)
        pts += qpts + [np.linspace(lo, hi, _N_UNIFORM)]
    grid = np.unique(np.concatenate(pts))
    Fs = [np.maximum.accumulate(d.cdf(grid)) for d in dists]
    return grid, Fs


def _refine_mode(density_on: Callable[[np.ndarray], np.ndarray], F: np.ndarray, x: np.ndarray) -> float:
    """The mode of the density whose distribution function is F on the points x.

    The densest 0.5 % of the probability (the narrowest step between quantiles, free of numerical
    noise) brackets the mode together with its neighbours. Within the bracket ``density_on`` (bin
    densities on given edges) is evaluated on _N_ZOOM points and a parabola is fitted by least
    squares; its vertex is the mode (the fit averages over the small integrable spikes the
    quadrature leaves in densities of very few counts). The bracket is then halved around the vertex
    and the fit repeated.
    """
    q = _inverse(F, x, np.linspace(0.0, 1.0, 201))
    width = np.diff(q)
    inner = np.arange(1, 199)                     # skip the open-ended outermost steps
    m = int(inner[np.argmin(width[inner])])
    w = width[m]
    lo = max(q[max(m - 2, 0)], q[m] - 3 * w)      # never reach into the open-ended end steps
    hi = min(q[min(m + 3, 200)], q[m + 1] + 3 * w)
    mode = 0.5 * (q[m] + q[m + 1])
    for _ in range(_ZOOM_STEPS):
        if not hi > lo:
            break
        e = np.linspace(lo, hi, _N_ZOOM)
        c = 0.5 * (e[1:] + e[:-1])
        dens = density_on(e)
        k = int(np.argmax(dens))
        mode = float(c[k])
        t = (c - c[k]) / (hi - lo)
        try:
            a2, a1, _ = np.polyfit(t, dens, 2)
        except (np.linalg.LinAlgError, ValueError):  # pragma: no cover - degenerate fit
            a2 = 0.0
        if a2 < 0:
            vertex = c[k] - a1 / (2 * a2) * (hi - lo)
            if lo <= vertex <= hi:
                mode = float(vertex)
        half = 0.25 * (hi - lo)
        lo, hi = mode - half, mode + half
    return mode


def _estimate(d: "RmDistribution", grid: np.ndarray, F: np.ndarray) -> Estimate:
    mode = _refine_mode(lambda e: _bin_density(d.cdf(e, exact=True), e), F, grid)
    lower, upper = _inverse(F, grid, np.array([0.5 - HALF_INTERVAL, 0.5 + HALF_INTERVAL]))
    return Estimate(mode, float(lower), float(upper))


class WitnessAnalysis:
    """g2, R_m(θ, 1), R_m(θ, 2) and R_m,sym with their densities for one set of counts.

    Use :meth:`summary` (the ``labctl witness --json`` object) and :meth:`densities` (for plots);
    or the shortcuts :func:`analyze_counts` and :func:`witness_densities`.
    """

    def __init__(self, counts: Counts) -> None:
        self.counts = counts
        self.g2 = g2_matrix(counts)
        self.rm_plugin = [rm_value(self.g2[0][j], self.g2[1][j]) for j in range(2)]
        self.dists: list[RmDistribution | None] = []
        for j in range(2):
            if self.g2[0][j] is None or self.g2[1][j] is None:
                self.dists.append(None)
                continue
            ga = G2Density(counts.coincidences[0][j], counts.trials, counts.read[0], counts.pump[j])
            gb = G2Density(counts.coincidences[1][j], counts.trials, counts.read[1], counts.pump[j])
            self.dists.append(RmDistribution(ga, gb))
        self._build_grid()
        self.rm = [self._estimate_single(k) for k in range(2)]
        self.rm_sym, self.confidence = self._estimate_sym()

    def _build_grid(self) -> None:
        live = [d for d in self.dists if d is not None]
        self.grid, Fs = _adaptive_grid(live)
        it = iter(Fs)
        self.F = [next(it) if d is not None else None for d in self.dists]

    def _estimate_single(self, k: int) -> Estimate:
        d, F = self.dists[k], self.F[k]
        if d is None or F is None:
            return Estimate(None, None, None)
        return _estimate(d, self.grid, F)

    def _estimate_sym(self) -> tuple[Estimate, dict[str, float | None]]:
        none_conf: dict[str, float | None] = {_bound_key(b): None for b in BOUNDS}
        if any(d is None for d in self.dists):
            return Estimate(None, None, None), none_conf
        x = self.grid
        d1, d2 = (_bin_density(F, x) for F in self.F)  # type: ignore[arg-type]
        mass = d1 * d2 * np.diff(x)
        Z = float(mass.sum())
        if not Z > 0 or not math.isfinite(Z):
            # the two densities do not overlap numerically: no common value
            return Estimate(None, None, None), none_conf
        self._sym_norm = Z
        cum = np.concatenate([[0.0], np.cumsum(mass)]) / Z
        dists = self.dists

        def density_on(e: np.ndarray) -> np.ndarray:
            return (_bin_density(dists[0].cdf(e, exact=True), e)  # type: ignore[union-attr]
                    * _bin_density(dists[1].cdf(e, exact=True), e))  # type: ignore[union-attr]

        mode = _refine_mode(density_on, cum, x)
        lower, upper = _inverse(cum, x, np.array([0.5 - HALF_INTERVAL, 0.5 + HALF_INTERVAL]))
        conf = {_bound_key(b): float(np.clip(cum[int(np.searchsorted(x, b))], 0.0, 1.0)) for b in BOUNDS}
        return Estimate(mode, float(lower), float(upper)), conf

    # outputs -----------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """The ``labctl witness --json`` object (docs/interfaces.md); JSON-safe (None for undefined)."""
        return {
            "g2": [[_num(v) for v in row] for row in self.g2],
            "Rm": [e.to_dict() for e in self.rm],
            "Rm_sym": self.rm_sym.to_dict(),
            "confidence": dict(self.confidence),
            "counts": self.counts.to_dict(),
        }

    def densities(self, n: int = _N_PLOT) -> dict[str, Any]:
        """Probability densities of R_m(θ,1), R_m(θ,2) and R_m,sym for plots.

        Returns ``{"Rm": [d1, d2], "Rm_sym": d}`` where each d is None (undefined) or a dict with
        ``grid`` (bin centres, dimensionless R_m values), ``density`` (probability per unit R_m,
        normalised over the whole real line, so it integrates to slightly below 1 over the grid),
        ``value``, ``lower`` and ``upper`` (as in :meth:`summary`). Each grid spans the 0.1 %–99.9 %
        quantiles of its density, widened to include its interval.
        """
        out: dict[str, Any] = {"Rm": [], "Rm_sym": None}
        for k in range(2):
            d, F, est = self.dists[k], self.F[k], self.rm[k]
            if d is None or F is None:
                out["Rm"].append(None)
                continue
            lo, hi = _inverse(F, self.grid, np.array([1e-3, 1 - 1e-3]))
            edges = np.linspace(min(lo, est.value), max(hi, est.value), n + 1)  # type: ignore[type-var]
            dens = _bin_density(d.cdf(edges), edges)
            out["Rm"].append({"grid": 0.5 * (edges[1:] + edges[:-1]), "density": dens, **est.to_dict()})
        sym = self.rm_sym
        if sym.value is not None and sym.lower is not None and sym.upper is not None:
            span = sym.upper - sym.lower
            lo = max(min(e["grid"][0] for e in out["Rm"]), min(sym.value, sym.lower) - 3 * span)
            hi = min(max(e["grid"][-1] for e in out["Rm"]), max(sym.value, sym.upper) + 3 * span)
            if not hi > lo:
                lo, hi = min(sym.value, sym.lower) - 3 * span, max(sym.value, sym.upper) + 3 * span
            edges = np.linspace(lo, hi, n + 1)
            dens = (_bin_density(self.dists[0].cdf(edges), edges)  # type: ignore[union-attr]
                    * _bin_density(self.dists[1].cdf(edges), edges)) / self._sym_norm  # type: ignore[union-attr]
            out["Rm_sym"] = {"grid": 0.5 * (edges[1:] + edges[:-1]), "density": dens, **sym.to_dict()}
        return out


def _bound_key(b: float) -> str:
    return repr(float(b))  # 1.0 -> "1.0", 0.995 -> "0.995"


def analyze_counts(counts: Counts) -> dict[str, Any]:
    """g2 and the witness with statistics for summed counts: the ``labctl witness --json`` object.

    Keys: ``g2`` (2×2, row = read detector, column = herald detector), ``Rm`` (two objects for herald
    detectors 1 and 2 with ``value`` (ML), ``lower``, ``upper`` (16 % and 84 % quantiles)),
    ``Rm_sym`` (same keys), ``confidence`` (``"1.0"`` and ``"0.995"`` → P(R_m,sym < bound)) and
    ``counts``. Undefined quantities (a zero single count) are None.
    """
    return WitnessAnalysis(counts).summary()


def witness_densities(counts: Counts, n: int = _N_PLOT) -> dict[str, Any]:
    """Grids and densities of R_m(θ,1), R_m(θ,2) and R_m,sym for plots (see WitnessAnalysis.densities)."""
    return WitnessAnalysis(counts).densities(n)


# ---------------------------------------------------------------------------------------------
# text report

def _fmt(x: float | None, width: int = 7) -> str:
    if x is None:
        return "n/a".rjust(width)
    return f"{x:{width}.3f}" if abs(x) < 1000 else f"{x:{width}.3g}"


def format_report(result: dict[str, Any], files: Sequence[str] = ()) -> str:
    """A readable table of :func:`analyze_counts` output for the terminal."""
    c = result["counts"]
    g2 = result["g2"]
    lines = []
    src = f" summed over {len(files)} files" if len(files) > 1 else (f" from {files[0]}" if files else "")
    lines.append(f"Counts{src}: N = {c['trials']} trials")
    lines.append(f"  herald singles  C(p1) = {c['pump'][0]:>10}   C(p2) = {c['pump'][1]:>10}")
    lines.append(f"  read singles    C(r1) = {c['read'][0]:>10}   C(r2) = {c['read'][1]:>10}")
    lines.append("  coincidences C(r_i,p_j)           p1           p2")
    for i in range(2):
        lines.append(f"    r{i + 1}                       {c['coincidences'][i][0]:>10}   "
                     f"{c['coincidences'][i][1]:>10}")
    lines.append("")
    lines.append("Second-order coherence g2[r_i,p_j] = C(r_i,p_j) N / (C(r_i) C(p_j))")
    lines.append("               p1        p2")
    for i in range(2):
        lines.append(f"    r{i + 1}    {_fmt(g2[i][0], 9)} {_fmt(g2[i][1], 9)}")
    lines.append("")
    lines.append("Entanglement witness R_m (main text Eq. 3): maximum-likelihood value,")
    lines.append("68 % interval = 16 %–84 % quantiles of its density")

    def row(name: str, e: dict[str, float | None], why: str) -> str:
        v, lo, hi = e["value"], e["lower"], e["upper"]
        if v is None or lo is None or hi is None:
            return f"  {name:<11} undefined ({why})"
        text = f"  {name:<11} {_fmt(v)}   [{_fmt(lo, 0)}, {_fmt(hi, 0)}]"
        if lo <= v <= hi:
            text += f"   (+{_fmt(hi - v, 0)} / -{_fmt(v - lo, 0)})"
        else:
            text += "   (very skewed density: the ML value lies outside the central interval)"
        return text

    why_rm = "a read or herald single count is zero"
    lines.append(row("R_m(θ, 1)", result["Rm"][0], why_rm))
    lines.append(row("R_m(θ, 2)", result["Rm"][1], why_rm))
    lines.append(row("R_m,sym", result["Rm_sym"],
                     "needs both R_m, and their densities must overlap"))
    lines.append("")
    for key, p in result["confidence"].items():
        txt = "n/a" if p is None else f"{100 * p:.1f} %"
        lines.append(f"  P(R_m,sym < {key:<5}) = {txt}")
    lines.append("R_m < 1 implies entanglement; 0.995 is the bound reduced for systematic errors.")
    return "\n".join(lines)
