"""g2 and the entanglement witness with their statistics (labctl.analysis.witness).

Reference numbers are independent of the code: the published values of Riedinger et al. 2018
(Supplementary, "Statistical Analysis", θ_opt data set), closed-form g2, Monte-Carlo sampling of the
g2 densities, and the frequentist coverage of the intervals for counts drawn from known rates.
"""
from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
from scipy import stats

import labctl.analysis.witness as W
from labctl.analysis import Counts, WitnessAnalysis, analyze_counts, g2_matrix, rm_value, witness_densities
from labctl.analysis.witness import G2Density, RmDistribution

N_OPT = 1_114_000_000
THETA_OPT = Counts(N_OPT, (111134, 184114), (108723, 167427), ((9, 129), (130, 37)))


@pytest.fixture(scope="module")
def opt() -> dict:
    return analyze_counts(THETA_OPT)


# --- published values (supplement, θ_opt) -----------------------------------------------------

@pytest.mark.parametrize("k, value, plus, minus", [(0, 0.612, 0.152, 0.057), (1, 0.846, 0.210, 0.090)])
def test_rm_reproduces_published(opt: dict, k: int, value: float, plus: float, minus: float) -> None:
    r = opt["Rm"][k]
    assert r["value"] == pytest.approx(value, abs=0.005)
    assert r["upper"] == pytest.approx(value + plus, abs=0.006)
    assert r["lower"] == pytest.approx(value - minus, abs=0.006)
    assert r["lower"] < r["value"] < r["upper"]


def test_rm_sym_and_confidence_reproduce_published(opt: dict) -> None:
    s = opt["Rm_sym"]
    assert s["value"] == pytest.approx(0.74, abs=0.006)       # published 0.74 (+0.12/-0.06)
    assert s["upper"] == pytest.approx(0.86, abs=0.01)
    assert s["lower"] == pytest.approx(0.68, abs=0.01)
    assert s["lower"] < s["value"] < s["upper"]
    assert opt["confidence"]["1.0"] == pytest.approx(0.984, abs=0.0015)    # published 98.4 %
    assert opt["confidence"]["0.995"] == pytest.approx(0.983, abs=0.0015)  # published 98.3 %
    assert opt["confidence"]["0.995"] < opt["confidence"]["1.0"]


def test_json_keys_and_layout(opt: dict) -> None:
    assert set(opt) == {"g2", "Rm", "Rm_sym", "confidence", "counts"}
    assert [set(r) for r in opt["Rm"]] == [{"value", "lower", "upper"}] * 2
    assert set(opt["Rm_sym"]) == {"value", "lower", "upper"}
    assert set(opt["confidence"]) == {"1.0", "0.995"}
    assert opt["counts"] == THETA_OPT.to_dict()
    json.dumps(opt, allow_nan=False)
    # row = read detector, column = herald detector
    assert opt["g2"][1][0] == pytest.approx(130 * 1.114e9 / (167427 * 111134), rel=1e-12)
    assert opt["g2"][0][1] == pytest.approx(129 * 1.114e9 / (108723 * 184114), rel=1e-12)


def test_fast_enough() -> None:
    analyze_counts(THETA_OPT)  # warm-up (imports, caches)
    t0 = time.perf_counter()
    analyze_counts(THETA_OPT)
    assert time.perf_counter() - t0 < 0.5


# --- closed forms ---------------------------------------------------------------------------

def test_g2_closed_form() -> None:
    c = Counts(100, (10, 20), (5, 50), ((1, 2), (3, 4)))
    assert g2_matrix(c) == [[pytest.approx(2.0), pytest.approx(2.0)],
                            [pytest.approx(0.6), pytest.approx(0.4)]]
    assert rm_value(2.0, 10.0) == pytest.approx(4 * 11 / 64)
    assert rm_value(3.0, 3.0) == math.inf
    assert rm_value(None, 1.0) is None


def test_g2_density_is_the_normalised_binomial_likelihood() -> None:
    n, c, r, p = 10_000, 7, 300, 400
    g = G2Density(c, n, r, p)
    scale = n * n / (r * p)
    q = np.linspace(1e-5, 3e-3, 50)
    # likelihood q^c (1-q)^(n-c), normalised over q: Beta(c+1, n-c+1)
    assert np.allclose(g.cdf(q * scale), stats.beta(c + 1, n - c + 1).cdf(q), atol=1e-6)
    assert np.allclose(g.smooth_cdf(q * scale), stats.beta(c + 1, n - c + 1).cdf(q), atol=1e-9)
    assert g.mode == pytest.approx(c * n / (r * p))


@pytest.mark.parametrize("ca, cb, n, ra, rb, p", [
    (9, 130, N_OPT, 108723, 167427, 111134),     # θ_opt, herald detector 1
    (2, 1, 10_000, 100, 120, 110),               # few counts, heavy tails
    (0, 0, 1_000_000, 100, 100, 100),            # no coincidences at all
    (40, 45, 1_000_000, 1000, 1000, 1000),       # g2 ≈ equal: R_m large, both tails
    (30, 20, 10_000, 1000, 1000, 1000),          # g2 < 1: R_m negative
])
def test_rm_distribution_matches_monte_carlo(ca: int, cb: int, n: int, ra: int, rb: int, p: int) -> None:
    """P(R_m ≤ f) against sampling g2 from Beta distributions (independent of the quadrature)."""
    rng = np.random.default_rng(12345)
    ga, gb = G2Density(ca, n, ra, p), G2Density(cb, n, rb, p)
    m = 400_000
    a = rng.beta(ca + 1, n - ca + 1, m) * n * n / (ra * p)
    b = rng.beta(cb + 1, n - cb + 1, m) * n * n / (rb * p)
    R = 4 * (a + b - 1) / (a - b) ** 2
    f = np.concatenate([np.quantile(R, [0.02, 0.16, 0.3, 0.5, 0.7, 0.84, 0.98]), [-1.0, 0.0, 1.0]])
    emp = (R[:, None] <= f[None, :]).mean(axis=0)
    assert np.allclose(RmDistribution(ga, gb).cdf(f), emp, atol=3e-3)


def test_discretisation_converged(monkeypatch: pytest.MonkeyPatch, opt: dict) -> None:
    """Finer quadrature, tables and grids change nothing that is reported."""
    for name, value in [("_N_QUAD", 1024), ("_N_TABLE", 32769), ("_N_QUANTILE", 3000),
                        ("_N_UNIFORM", 3000), ("_N_ZOOM", 129)]:
        monkeypatch.setattr(W, name, value)
    fine = analyze_counts(THETA_OPT)
    for k in range(2):
        for key in ("value", "lower", "upper"):
            assert opt["Rm"][k][key] == pytest.approx(fine["Rm"][k][key], abs=1e-3)
    for key in ("value", "lower", "upper"):
        assert opt["Rm_sym"][key] == pytest.approx(fine["Rm_sym"][key], abs=1e-3)
    for key in ("1.0", "0.995"):
        assert opt["confidence"][key] == pytest.approx(fine["confidence"][key], abs=5e-4)


def test_mode_is_the_maximum_of_the_plotted_density() -> None:
    dens = witness_densities(THETA_OPT)
    for d in dens["Rm"] + [dens["Rm_sym"]]:
        x, y = d["grid"], d["density"]
        assert np.all(y >= 0)
        step = x[1] - x[0]
        assert abs(x[np.argmax(y)] - d["value"]) < 3 * step
        # normalised over the real line: the plotted range holds nearly all of the probability
        assert 0.99 < float(np.sum(y) * step) <= 1.0 + 1e-6
        assert d["lower"] < d["value"] < d["upper"]


def test_sym_is_the_normalised_product_of_the_two_densities() -> None:
    w = WitnessAnalysis(THETA_OPT)
    x = np.linspace(0.3, 2.5, 4001)
    d1 = np.diff(w.dists[0].cdf(x)) / np.diff(x)
    d2 = np.diff(w.dists[1].cdf(x)) / np.diff(x)
    prod = d1 * d2
    cum = np.concatenate([[0], np.cumsum(prod)]) / prod.sum()
    assert np.interp(1.0, x, cum) == pytest.approx(w.confidence["1.0"], abs=1e-3)
    assert np.interp(0.5 - 0.34, cum, x) == pytest.approx(w.rm_sym.lower, abs=2e-3)
    assert np.interp(0.5 + 0.34, cum, x) == pytest.approx(w.rm_sym.upper, abs=2e-3)


def test_symmetric_setup_gives_equal_rm_and_a_sharper_sym() -> None:
    c = Counts(10**9, (10**5, 10**5), (10**5, 10**5), ((20, 100), (100, 20)))
    r = analyze_counts(c)
    assert r["Rm"][0] == pytest.approx(r["Rm"][1])
    s, one = r["Rm_sym"], r["Rm"][0]
    assert s["upper"] - s["lower"] < one["upper"] - one["lower"]
    # plug-in R_m = 4 (2 + 10 - 1)/64
    assert one["lower"] < 44 / 64 * 1.2 and one["upper"] > 44 / 64 * 0.8


# --- coverage of the intervals for synthetic counts from known rates ------------------------

def test_g2_interval_coverage() -> None:
    """The 16 %–84 % interval of g2 covers the true g2 in ≈ 68 % of repeated experiments."""
    rng = np.random.default_rng(7)
    n, r, p, g_true = 10**8, 50_000, 60_000, 4.0
    lam = g_true * r * p / n
    hits = 0
    reps = 4000
    dens: dict[int, G2Density] = {}
    for c in rng.poisson(lam, reps):
        g = dens.setdefault(int(c), G2Density(int(c), n, r, p))
        lo, hi = g.ppf(0.16), g.ppf(0.84)
        hits += lo <= g_true <= hi
    assert 0.64 < hits / reps < 0.73


def test_rm_interval_coverage() -> None:
    """The R_m interval covers the true R_m in roughly 68 % of experiments drawn from known rates."""
    rng = np.random.default_rng(2018)
    n, r1, r2, p = N_OPT, 108723, 167427, 111134
    g_a, g_b = 0.9, 7.5                    # true g2[r1,p1], g2[r2,p1]  (θ_opt-like)
    r_true = 4 * (g_a + g_b - 1) / (g_a - g_b) ** 2
    lam_a, lam_b = g_a * r1 * p / n, g_b * r2 * p / n
    reps, hits, ml = 300, 0, []
    for ca, cb in zip(rng.poisson(lam_a, reps), rng.poisson(lam_b, reps)):
        est = RmDistribution(G2Density(int(ca), n, r1, p), G2Density(int(cb), n, r2, p)).estimate()
        hits += est.lower <= r_true <= est.upper  # type: ignore[operator]
        ml.append(est.value)
    # binomial standard error at 300 repetitions: 2.7 %
    assert 0.59 < hits / reps < 0.77
    assert np.median(ml) == pytest.approx(r_true, rel=0.1)


# --- degenerate inputs -------------------------------------------------------------------------

@pytest.mark.parametrize("counts, defined", [
    (Counts(10**6, (100, 100), (100, 100), ((0, 0), (0, 0))), True),          # no coincidences
    (Counts(10**6, (1000, 1000), (1000, 1000), ((5, 5), (5, 5))), True),      # g2 equal: plug-in R_m = inf
    (Counts(1000, (0, 10), (10, 10), ((0, 0), (0, 0))), False),               # herald 1 never clicked
    (Counts(1000, (10, 10), (0, 10), ((0, 0), (0, 0))), False),               # read 1 never clicked
    (Counts(1, (0, 0), (0, 0), ((0, 0), (0, 0))), False),                     # nothing at all
    (Counts(5, (5, 5), (5, 5), ((5, 5), (5, 5))), True),                      # every trial coincides
    (Counts(10**13, (10**9,) * 2, (10**9,) * 2, ((2 * 10**5, 10**6), (10**6, 2 * 10**5))), True),  # huge
    (Counts(10**6, (10**5,) * 2, (10**5,) * 2, ((1000, 9000), (1000, 9000))), True),  # R_m(1) < 0, R_m(2) > 0
])
def test_degenerate_inputs_never_crash(counts: Counts, defined: bool) -> None:
    r = analyze_counts(counts)
    text = json.dumps(r, allow_nan=False)     # no inf/nan in the JSON
    assert "NaN" not in text
    if not defined:
        assert r["Rm_sym"]["value"] is None and r["confidence"]["1.0"] is None
    for e in r["Rm"]:
        if e["value"] is not None:
            assert math.isfinite(e["value"]) and e["lower"] <= e["upper"]
    for p in r["confidence"].values():
        assert p is None or 0.0 <= p <= 1.0
    witness_densities(counts)


def test_equal_g2_has_a_finite_ml_value() -> None:
    r = analyze_counts(Counts(10**6, (1000, 1000), (1000, 1000), ((5, 5), (5, 5))))
    assert rm_value(5.0, 5.0) == math.inf
    assert math.isfinite(r["Rm"][0]["value"]) and r["Rm"][0]["value"] > 1
    assert r["confidence"]["1.0"] < 0.5


# --- property-based: any valid counts give a JSON-safe result ---------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@st.composite
def _valid_counts(draw: st.DrawFn) -> Counts:
    n = draw(st.one_of(st.integers(1, 100), st.integers(1, 10**6), st.integers(1, 10**13)))
    pump = [draw(st.integers(0, n)) for _ in range(2)]
    read = [draw(st.integers(0, n)) for _ in range(2)]
    co = [[draw(st.integers(0, min(read[i], pump[j]))) for j in range(2)] for i in range(2)]
    return Counts(n, tuple(pump), tuple(read), tuple(tuple(r) for r in co))  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(_valid_counts())
def test_any_valid_counts_analyse(counts: Counts) -> None:
    r = analyze_counts(counts)
    json.dumps(r, allow_nan=False)
    for e in r["Rm"] + [r["Rm_sym"]]:
        vals = [e["value"], e["lower"], e["upper"]]
        assert all(v is None for v in vals) or all(v is not None for v in vals)
        if e["lower"] is not None:
            assert e["lower"] <= e["upper"]
    for p in r["confidence"].values():
        assert p is None or 0.0 <= p <= 1.0
