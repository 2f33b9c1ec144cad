"""Theory of steady-state parametric entanglement (Szorkovszky et al. 2014, arXiv:1402.6392).

Checks the numerical Riccati steady state (Eq. 12) against the closed form (Eq. 16–18), against a
time integration of the Riccati ODE, against the full four-quadrature model built from the
Hamiltonians (Eq. 2, 20), against the reference value S(γ=1, χ=25, Δ=25.5, N=5, η=1, μ=5.5) =
0.72154, and against the figure-level statements of the paper (Fig. 2, Sections 4 and 7).
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labctl.cli import main
from labctl.errors import InputError
from labctl.physics import parametric as pt

REF = dict(gamma=1.0, chi=25.0, delta=25.5, nbar=5.0, eta=1.0, mu=5.5)
S_REF = 0.72154


def agree(a: float, b: float, tol: float = pt.AGREEMENT_TOL) -> bool:
    return abs(a - b) <= tol * max(1.0, abs(a))


# ---------------------------------------------------------------- reference point ----------
def test_reference_point():
    r = pt.modulated_coupling(**REF)
    assert abs(r.S - S_REF) < 1e-4
    assert abs(r.S_closed_form - S_REF) < 1e-4
    assert agree(r.S, r.S_closed_form)
    assert r.threshold == pytest.approx(math.sqrt(1 + 25.5 ** 2), abs=1e-12)
    assert r.entangled is True
    assert abs(2 * math.sqrt(r.V_plus * r.V_minus) - r.S) < 1e-12
    # the two pairs are mirror images: same best-quadrature variance (Section 4)
    assert r.V_plus == pytest.approx(r.V_minus, rel=1e-12)
    assert r.E_N == pytest.approx(-math.log(r.S))
    assert r.SNR == pytest.approx(2 * 5.5 * (5.5) + 5.5 ** 2)  # Eq. 17
    assert r.V0 == pytest.approx(5 + 0.5 + 5.5 / 2)  # Eq. 14


def test_theory_entry_point_equals_model_one():
    assert pt.theory(**REF).S == pt.modulated_coupling(**REF).S


# ---------------------------------------------------------------- the models (Eq. 2–7, 19–25)
@pytest.mark.parametrize("chi,delta,gamma", [(25, 25.5, 1.0), (3.0, -1.2, 0.7), (0.0, 2.0, 1.0)])
def test_eq7_pairs_follow_from_hamiltonian_eq2(chi, delta, gamma):
    """Eq. 2 in (X1, Y1, X2, Y2), rotated to (X+, Y+, X−, Y−), is block-diagonal with Eq. 7."""
    a = pt.full_drift(pt.hamiltonian_modulated(chi, delta), gamma, gamma)
    t = pt.BASIS_MODULATED
    assert np.allclose(t @ t.T, np.eye(4))
    coll = t @ a @ t.T
    assert np.allclose(coll[:2, :2], pt.pair_drift(gamma, chi, delta, +1))
    assert np.allclose(coll[2:, 2:], pt.pair_drift(gamma, chi, delta, -1))
    assert np.allclose(coll[:2, 2:], 0) and np.allclose(coll[2:, :2], 0)


@pytest.mark.parametrize("gamma1,gamma2", [(1.0, 1.0), (1.5, 0.5), (0.3, 0.9)])
def test_eq25_pairs_follow_from_hamiltonian_eq20(gamma1, gamma2):
    """Eq. 20 plus damping γ1, γ2, rotated to (U1, U2, V1, V2) of Eq. 22, gives Eq. 24/25–28."""
    chi, split = 7.0, 6.5
    a = pt.full_drift(pt.hamiltonian_constant(chi, split), gamma1, gamma2)
    t = pt.BASIS_CONSTANT
    assert np.allclose(t @ t.T, np.eye(4))
    coll = t @ a @ t.T
    c1, c2, g = pt.effective_drives(chi, gamma1, gamma2)
    assert np.allclose(coll[:2, :2], pt.constant_pair_drift(g, c1, split, "U"))
    assert np.allclose(coll[2:, 2:], pt.constant_pair_drift(g, c2, split, "V"))
    assert np.allclose(coll[:2, 2:], 0) and np.allclose(coll[2:, :2], 0)


def test_full_four_quadrature_filter_equals_pair_filters():
    """Measuring X1, Y1, X2, Y2 (4×4 Riccati) conditions the collective pairs exactly as Eq. 12."""
    p = REF
    a = pt.full_drift(pt.hamiltonian_modulated(p["chi"], p["delta"]), p["gamma"], p["gamma"])
    d = 2 * p["gamma"] * pt.v0(p["gamma"], p["nbar"], p["mu"]) * np.eye(4)
    v = pt.riccati_steady_state(a, d, 4 * p["eta"] * p["mu"])
    t = pt.BASIS_MODULATED
    coll = t @ v @ t.T
    r = pt.modulated_coupling(**p)
    assert np.allclose(coll[:2, :2], r.cov_plus, atol=1e-10)
    assert np.allclose(coll[2:, 2:], r.cov_minus, atol=1e-10)
    assert np.allclose(coll[:2, 2:], 0, atol=1e-10)


def test_unequal_damping_full_model_equals_exact_noise_option():
    """Model two with γ1 ≠ γ2 from first principles (each oscillator its own thermal noise)."""
    g1, g2, chi, split, n, eta, mu = 1.5, 0.5, 10.0, 10.6, 5.0, 0.8, 4.0
    a = pt.full_drift(pt.hamiltonian_constant(chi, split), g1, g2)
    d = np.diag([2 * g1 * (n + 0.5) + mu] * 2 + [2 * g2 * (n + 0.5) + mu] * 2)
    v = pt.BASIS_CONSTANT @ pt.riccati_steady_state(a, d, 4 * eta * mu) @ pt.BASIS_CONSTANT.T
    r = pt.constant_coupling(g1, g2, chi, split, n, eta, mu, exact_noise=True)
    assert np.allclose(v[:2, :2], r.cov_plus, atol=1e-10)
    assert np.allclose(v[2:, 2:], r.cov_minus, atol=1e-10)
    assert r.S_closed_form is None
    # the paper's Eq. 25 (white pair noise 2γV0) is an approximation: close but not equal
    approx = pt.constant_coupling(g1, g2, chi, split, n, eta, mu)
    assert approx.S != pytest.approx(r.S, rel=1e-6)
    assert approx.S == pytest.approx(r.S, rel=0.05)


def test_constant_coupling_symmetric_equals_modulated():
    """Section 5: with γ1 = γ2 the constant-coupling scheme reproduces model one with Δ → Γ."""
    m = pt.modulated_coupling(**REF)
    c = pt.constant_coupling(1.0, 1.0, 25.0, 25.5, 5.0, 1.0, 5.5)
    assert c.S == pytest.approx(m.S, rel=1e-12)
    assert c.S_closed_form == pytest.approx(m.S_closed_form, rel=1e-12)
    assert pt.theory(1, 25, 25.5, 5, 1, 5.5, model="constant").S == pytest.approx(m.S, rel=1e-12)


# ---------------------------------------------------------------- threshold ---------------
@pytest.mark.parametrize("chi,delta", [(25, 25.5), (25, 24.0), (3, 0.5), (0.5, 0.0)])
def test_both_pairs_share_eigenvalues_and_threshold(chi, delta):
    """Eigenvalues of A± are −γ ± √(χ² − Δ²): both pairs cross threshold at χ_th together."""
    gamma = 1.0
    expect = np.sort_complex(-gamma + np.array([1, -1]) * np.sqrt(complex(chi ** 2 - delta ** 2)))
    for sign in (+1, -1):
        ev = np.sort_complex(np.linalg.eigvals(pt.pair_drift(gamma, chi, delta, sign)))
        assert np.allclose(ev, expect)
        stable = np.max(ev.real) < 0
        assert stable == (chi < pt.threshold(gamma, delta))


@pytest.mark.parametrize("chi,delta,pct", [(30, 10, "199"), (26, 25, "1.9"), (30, 29.2, "0.0")])
def test_above_threshold_rejected_with_threshold_named(chi, delta, pct):
    with pytest.raises(InputError) as e:
        pt.modulated_coupling(1, chi, delta, 5, 1, 5)
    msg = e.value.render()
    assert "threshold" in msg and f"{pt.threshold(1, delta):.6g}" in msg
    assert "% above" in msg and "raise |Δ|" in msg and "lower χ" in msg


def test_exactly_at_threshold_rejected_but_allowed_as_limit():
    d = pt.threshold_detuning(1.0, 25.0)
    with pytest.raises(InputError, match="threshold"):
        pt.modulated_coupling(1.0, 25.0, d, 5, 1, 5.5)
    at = pt.modulated_coupling(1.0, 25.0, d, 5, 1, 5.5, allow_threshold=True)
    near = pt.modulated_coupling(1.0, 25.0, d + 1e-7, 5, 1, 5.5)
    assert agree(at.S, at.S_closed_form) and at.S == pytest.approx(near.S, abs=1e-6)


def test_unequal_damping_threshold_is_set_by_the_stronger_pair():
    # γ1 − γ2 = 1: χ2 = χ + 0.5 must stay below √(γ² + Γ²)
    split = pt.threshold_detuning(1.0, 25.4)  # fine for χ = 25 with symmetric damping...
    pt.constant_coupling(1.0, 1.0, 25.0, split, 5, 1, 5.5)
    with pytest.raises(InputError, match="threshold"):  # ...but not once χ2 = 25.5
        pt.constant_coupling(1.5, 0.5, 25.0, split, 5, 1, 5.5)


@pytest.mark.parametrize("kw,word", [
    (dict(gamma=0.0), "γ"), (dict(gamma=-1.0), "γ"), (dict(chi=-1.0), "χ"),
    (dict(nbar=-0.1), "N"), (dict(eta=0.0), "η"), (dict(eta=1.5), "η"), (dict(mu=0.0), "μ"),
    (dict(mu=-2.0), "μ"), (dict(chi=float("nan")), "chi"), (dict(delta=float("inf")), "delta"),
])
def test_invalid_parameters_rejected(kw, word):
    with pytest.raises(InputError) as e:
        pt.modulated_coupling(**{**REF, **kw})
    assert word in e.value.render() and e.value.fix


def test_unequal_damping_needs_constant_model():
    with pytest.raises(InputError, match="constant"):
        pt.theory(1, 20, 25, 5, 1, 5, model="modulated", gamma_diff=0.5)
    with pytest.raises(InputError, match="damping"):
        pt.theory(1, 20, 25, 5, 1, 5, model="constant", gamma_diff=2.0)


# ---------------------------------------------------------------- Riccati: numerics --------
@pytest.mark.parametrize("p", [
    REF, dict(gamma=1.0, chi=50.0, delta=50.5, nbar=5.0, eta=1.0, mu=5.5),
    dict(gamma=2.0, chi=3.0, delta=-4.0, nbar=0.0, eta=0.3, mu=0.7),
    dict(gamma=0.5, chi=0.0, delta=1.0, nbar=2.0, eta=1.0, mu=1.0),
])
def test_time_integration_relaxes_to_the_care_solution(p):
    """Eq. 12 integrated with solve_ivp from a thermal state reaches the CARE steady state."""
    r = pt.modulated_coupling(**p)
    d = 2 * p["gamma"] * pt.v0(p["gamma"], p["nbar"], p["mu"]) * np.eye(2)
    k = 4 * p["eta"] * p["mu"]
    for sign, cov in ((+1, r.cov_plus), (-1, r.cov_minus)):
        a = pt.pair_drift(p["gamma"], p["chi"], p["delta"], sign)
        for v_init in ((p["nbar"] + 0.5) * np.eye(2), np.array([[30.0, -5.0], [-5.0, 2.0]])):
            v, t = pt.riccati_relax(a, d, k, v_init)
            assert np.allclose(v, cov, rtol=1e-7, atol=1e-9)
    vp = pt.riccati_relax(pt.pair_drift(p["gamma"], p["chi"], p["delta"], 1), d, k,
                          (p["nbar"] + 0.5) * np.eye(2))[0]
    vm = pt.riccati_relax(pt.pair_drift(p["gamma"], p["chi"], p["delta"], -1), d, k,
                          (p["nbar"] + 0.5) * np.eye(2))[0]
    s_ode = 2 * math.sqrt(pt.squeezed_variance(vp) * pt.squeezed_variance(vm))
    assert agree(s_ode, r.S) and agree(s_ode, r.S_closed_form)


def test_care_solution_is_the_physical_root():
    r = pt.modulated_coupling(**REF)
    a = pt.pair_drift(1.0, 25.0, 25.5, +1)
    d = 2 * pt.v0(1.0, 5.0, 5.5) * np.eye(2)
    k = 4 * 5.5
    assert np.max(np.abs(pt.riccati_rhs(r.cov_plus, a, d, k))) < 1e-9
    assert np.all(np.linalg.eigvalsh(r.cov_plus) > 0)  # a covariance
    assert np.max(np.linalg.eigvals(a - k * r.cov_plus).real) < 0  # stable filter
    # uncertainty relation of a physical state: det V ≥ 1/4
    assert np.linalg.det(r.cov_plus) >= 0.25 - 1e-12


def test_alpha_is_the_best_quadrature_angle():
    """Eq. 18's α (sin 2α > 0) is the angle of the + pair's squeezed quadrature; − pair at +90°."""
    for p in (REF, {**REF, "delta": -25.5}, dict(gamma=1.0, chi=4.0, delta=6.0, nbar=1.0,
                                                 eta=0.5, mu=2.0)):
        r = pt.modulated_coupling(**p)
        assert 0 < r.alpha < math.pi / 2
        assert r.alpha_plus == pytest.approx(r.alpha, abs=1e-8)
        assert r.alpha_minus == pytest.approx((r.alpha + math.pi / 2) % math.pi, abs=1e-8)
        assert math.copysign(1, math.cos(2 * r.alpha)) == math.copysign(1, p["delta"])


# ---------------------------------------------------------------- hypothesis ---------------
@st.composite
def below_threshold(draw):
    gamma = draw(st.floats(0.05, 20.0))
    delta = draw(st.floats(-300.0, 300.0))
    frac = draw(st.floats(0.0, 0.999999))
    return dict(gamma=gamma, chi=frac * pt.threshold(gamma, delta), delta=delta,
                nbar=draw(st.floats(0.0, 500.0)), eta=draw(st.floats(0.01, 1.0)),
                mu=gamma * 10 ** draw(st.floats(-4.0, 4.0)))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(below_threshold())
def test_numerical_equals_closed_form(p):
    r = pt.modulated_coupling(**p)
    assert agree(r.S, r.S_closed_form), (r.S, r.S_closed_form)
    assert r.V_plus == pytest.approx(r.V_minus, rel=1e-7)
    assert abs(2 * math.sqrt(r.V_plus * r.V_minus) - r.S) <= 1e-12 * r.S
    assert r.V_plus > 0 and r.S > 0
    # the conditional state is physical (uncertainty relation): det V ≥ 1/4
    assert np.linalg.det(r.cov_plus) >= 0.25 * (1 - 1e-9)


@settings(max_examples=150, deadline=None)
@given(below_threshold(), st.floats(-0.9, 0.9))
def test_numerical_equals_closed_form_unequal_damping(p, asym):
    """Constant coupling, γ1 − γ2 = 2γ·asym (Eq. 25–28): per-pair closed form vs Riccati."""
    gd = 2 * p["gamma"] * asym
    c2 = p["chi"] + abs(gd) / 2
    split = p["delta"]
    if c2 >= pt.threshold(p["gamma"], split):  # keep the stronger pair below threshold
        split = math.copysign(pt.threshold_detuning(p["gamma"], c2 * 1.001) + 1e-9, split or 1.0)
    r = pt.theory(p["gamma"], p["chi"], split, p["nbar"], p["eta"], p["mu"], model="constant",
                  gamma_diff=gd)
    assert agree(r.S, r.S_closed_form), (r.S, r.S_closed_form)


# ---------------------------------------------------------------- the paper's figures -------
@pytest.fixture(scope="module")
def fig2():
    mus = np.logspace(-2, 4, 121)
    return mus, pt.figure2_curves(mus)


def test_fig2_entanglement_window_and_optimum(fig2):
    mus, curves = fig2
    assert [(c["chi"], c["damping"]) for c in curves] == [
        (25.0, "symmetric"), (25.0, "asymmetric"), (50.0, "symmetric"), (50.0, "asymmetric")]
    for c in curves:
        s = c["S"]
        assert s[0] > 1  # weak measurement: not enough conditioning
        assert s.min() < 0.75  # a clear S < 1 region (Fig. 2)
        i = int(np.argmin(s))
        assert 0 < i < len(s) - 1  # an interior optimum in μ
        assert 2.0 < mus[i] < 12.0  # "optimal conditioning near μ ≈ γ(N + 1/2)" = 5.5 γ
        assert np.all(np.diff(s[: i + 1]) < 0) and np.all(np.diff(s[i:]) > 0)  # single minimum
        assert 0.97 < s[-1] < 1.0  # back-action dominated: S → 1/√η from below


def test_fig2_stronger_drive_is_better_and_scales_as_sqrt(fig2):
    """Section 4: for χ ≫ γ, S_min ∝ √(γ/χ); doubling χ gives ≈ 1/√2."""
    _, curves = fig2
    s25 = curves[0]["S"].min()
    s50 = curves[2]["S"].min()
    assert s50 < s25
    assert s50 / s25 == pytest.approx(1 / math.sqrt(2), rel=0.03)


def test_fig2_damping_asymmetry_costs_little(fig2):
    """Section 7: γ_D = 0.5 γ_S (dashed) is worse than symmetric, but only modestly."""
    _, curves = fig2
    for sym, asym in ((curves[0], curves[1]), (curves[2], curves[3])):
        assert np.all(asym["S"] >= sym["S"] - 1e-12)
        assert asym["S"].min() / sym["S"].min() - 1 < 0.02


def test_near_threshold_detuning_is_optimal():
    """Section 2: entanglement is best near threshold; S grows monotonically with Δ above it."""
    d_th = pt.threshold_detuning(1.0, 25.0)
    deltas = d_th + np.array([1e-6, 0.01, 0.1, 0.5, 1, 2, 5, 10, 20, 50, 100])
    s = [pt.modulated_coupling(1.0, 25.0, d, 5.0, 1.0, 5.5).S for d in deltas]
    assert np.all(np.diff(s) > 0)
    assert s[-1] > 1 > s[0]  # far detuned the drive no longer helps enough


def test_no_drive_no_entanglement():
    """χ = 0: measurement alone cannot entangle; S = 1 exactly for N = 0, η = 1."""
    assert pt.modulated_coupling(1.0, 0.0, 3.0, 0.0, 1.0, 2.0).S == pytest.approx(1.0, abs=1e-10)
    for n, eta in ((0.0, 0.5), (1.0, 1.0), (5.0, 0.9)):
        for mu in (0.01, 1.0, 100.0):
            assert pt.modulated_coupling(1.0, 0.0, 0.0, n, eta, mu).S > 1


def test_inefficient_detection_degrades():
    s = [pt.modulated_coupling(**{**REF, "eta": e}).S for e in (1.0, 0.8, 0.5, 0.2)]
    assert np.all(np.diff(s) > 0)


def test_optimal_mu():
    mu, r = pt.optimal_mu(1.0, 25.0, 25.5, 5.0, 1.0)
    assert 3.0 < mu < 10.0
    assert r.S < pt.modulated_coupling(**REF).S
    for f in (0.9, 1.1, 0.5, 2.0):
        assert pt.modulated_coupling(**{**REF, "mu": mu * f}).S > r.S
    assert agree(r.S, r.S_closed_form)


def test_figure2_png(tmp_path):
    out = tmp_path / "sub" / "fig2.png"
    curves = pt.plot_figure2(out, points=41)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(curves) == 4


# ---------------------------------------------------------------- CLI ----------------------
ARGS = ["parametric", "theory", "--gamma", "1", "--chi", "25", "--delta", "25.5", "--nbar", "5",
        "--eta", "1", "--mu", "5.5"]


def test_cli_theory_json(capsys):
    assert main(ARGS + ["--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    for key in ("S", "V_plus", "V_minus", "alpha", "threshold", "entangled", "E_N", "SNR",
                "S_closed_form", "S_numerical"):
        assert key in r
    assert abs(r["S"] - S_REF) < 1e-4
    assert abs(r["threshold"] - (1 + 25.5 ** 2) ** 0.5) < 1e-9
    assert r["entangled"] is True
    assert abs(2 * (r["V_plus"] * r["V_minus"]) ** 0.5 - r["S"]) < 1e-9
    assert abs(r["S_numerical"] - r["S_closed_form"]) < 1e-6


def test_cli_theory_text(capsys):
    assert main(ARGS) == 0
    out = capsys.readouterr().out
    assert "S = 2√(V_α+ V_α−) = 0.7215" in out and "entangled" in out and "threshold" in out


@pytest.mark.parametrize("change,word", [
    ({"--chi": "30", "--delta": "10"}, "threshold"), ({"--eta": "1.5"}, "η"),
    ({"--gamma": "0"}, "γ"), ({"--mu": "-1"}, "μ"), ({"--nbar": "nan"}, "nbar"),
])
def test_cli_invalid_exit_2(capsys, change, word):
    args = list(ARGS)
    for k, v in change.items():
        args[args.index(k) + 1] = v
    assert main(args + ["--json"]) == 2
    err = capsys.readouterr().err
    assert word in err and "Traceback" not in err


def test_cli_constant_model_and_optimum(capsys):
    assert main(ARGS + ["--model", "constant", "--gamma-diff", "0.2", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["model"] == "constant" and r["chi_effective"] == [24.9, 25.1]
    assert main(ARGS + ["--gamma-diff", "0.2"]) == 2  # modulated model needs equal damping
    capsys.readouterr()
    assert main(["parametric", "optimum", "--gamma", "1", "--chi", "25", "--delta", "25.5",
                 "--nbar", "5", "--eta", "1", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert 3 < r["mu_opt"] < 10 and r["S"] < S_REF


def test_cli_figure2(tmp_path, capsys):
    out = tmp_path / "f.png"
    assert main(["parametric", "figure2", "--out", str(out), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["curves"]
    assert out.stat().st_size > 0 and len(rows) == 4
    assert main(["parametric", "figure2", "--out", str(tmp_path / "f.txt")]) == 2
    assert main(["parametric", "figure2", "--out", str(out), "--eta", "2"]) == 2
