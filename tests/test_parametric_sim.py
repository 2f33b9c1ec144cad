"""Parametric experiment: stochastic simulation, Kalman filter and parameter estimation.

Checks, each against an independent reference:
* exact discretisation — the sampled state's stationary covariance is the Lyapunov solution of
  the drift; composing sub-steps reproduces the one-step transition and noise; simulations with
  different sub-steps have the same statistics (no dependence on dt);
* the simulation's unconditional covariance agrees with ``solve_continuous_lyapunov``;
* the filter's covariance: continuous 4×4 Riccati = the paper's pair covariances (Eq. 12);
  discrete filters on ever faster records converge to it;
* the variance of (true − estimated) best quadratures = V_α± within its statistical error;
* S estimated from the records alone = theory within its error; fitted γ, Δ, χ, μ recover the
  simulation's inputs (both models);
* the lock-in simulators fed by the twin, the sequence section, the command.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from labctl.cli import main
from labctl.errors import InputError
from labctl.physics import estimation as est
from labctl.physics import parametric as pt
from labctl.physics.estimation import (LockinFilter, ParametricModel, analyse_records, discretize,
                                       fit_spectra, kalman_filter, linear_recursion, lockin_penalty,
                                       separability, steady_state_gain, truth_statistics, van_loan)
from sim_instruments.twin.parametric import ParametricTwin, simulate, step_model

G = 2 * math.pi * 50.0                                    # γ = 2π·50 Hz
PAPER = dict(gamma=G, chi=25 * G, delta=25.5 * G, nbar=5.0, eta=1.0, mu=5.5 * G)
LOCKIN = LockinFilter.from_slope(10e-6, 12, 1.25e6 / 16)   # the shipped sequence's settings
SCALE = 1e-3


def paper_model(model="modulated", **kw) -> ParametricModel:
    return ParametricModel(model, **{**PAPER, **kw})


# -- exact discretisation ---------------------------------------------------------------------
def test_linear_recursion_equals_the_loop():
    rng = np.random.default_rng(0)
    f = 0.9 * np.eye(6) + 0.05 * rng.standard_normal((6, 6))
    f *= 0.97 / max(abs(np.linalg.eigvals(f)))
    f[3, 4] = 0.3                                        # and a defective-looking block
    u = rng.standard_normal((500, 6))
    z0 = rng.standard_normal(6)
    z, ref = z0.copy(), []
    for k in range(500):
        z = f @ z + u[k]
        ref.append(z)
    assert np.allclose(linear_recursion(f, u, z0), ref, atol=1e-10)


def test_van_loan_substeps_compose_to_the_full_step():
    m = paper_model()
    vm = m.volts(SCALE)
    mm, w, _, _ = est._augmented(vm.drift(), np.diag(vm.diffusion()), vm.b, LOCKIN, LOCKIN.dt)
    phi, q = van_loan(mm, w, LOCKIN.dt)
    p4, q4 = van_loan(mm, w, LOCKIN.dt / 4)
    pc, qc = np.eye(len(mm)), np.zeros_like(mm)
    for _ in range(4):
        pc, qc = p4 @ pc, p4 @ qc @ p4.T + q4
    assert np.allclose(pc, phi, rtol=1e-10, atol=1e-12)
    assert np.allclose(qc, q, rtol=1e-9, atol=1e-9 * np.max(np.abs(q)))


@pytest.mark.parametrize("model", ["modulated", "constant"])
def test_discrete_stationary_state_is_the_lyapunov_solution(model):
    """Exact discretisation: the sampled quadratures' covariance equals A Σ + Σ Aᵀ + D = 0 to
    rounding at any sample rate (a coarse and a fine one)."""
    m = paper_model(model, gamma_diff=0.3 * G if model == "constant" else 0.0)
    sig = m.unconditional_covariance()
    assert np.allclose(m.drift() @ sig + sig @ m.drift().T, -m.diffusion(), atol=1e-8 * np.max(sig))
    for lk in (LOCKIN, LockinFilter.boxcar(5e3), LockinFilter.from_slope(3e-4, 24, 2e3)):
        dm = discretize(m.volts(1.0), lk)
        assert np.allclose(dm.stationary_covariance()[:4, :4], sig, rtol=1e-7, atol=1e-7 * np.max(sig))


def test_simulation_covariance_matches_lyapunov_and_is_independent_of_dt():
    """Sample covariance of the simulated state (and the lag-1 covariance e^{A dt}Σ) against the
    Lyapunov solution, for 1 and 4 sub-steps per sample: within 4 standard errors (from blocks)."""
    m = ParametricModel("modulated", gamma=1.0, chi=4.0, delta=4.5, nbar=2.0, eta=0.8, mu=1.5)
    lk = LockinFilter.from_slope(0.01, 12, 50.0)
    sig = m.unconditional_covariance()
    lag = discretize(m.volts(1.0), lk).f[:4, :4] @ sig
    for sub, seed in ((1, 11), (4, 12)):
        run = simulate(m, lk, n_samples=200_000, scale=1.0, seed=seed, substeps=sub)
        x = run.truth
        blocks = np.array_split(np.arange(len(x)), 25)
        c0 = np.array([np.cov(x[b].T, bias=True) for b in blocks])
        c1 = np.array([x[b][1:].T @ x[b][:-1] / (len(b) - 1) for b in blocks])
        for c, ref in ((c0, sig), (c1, lag)):
            mean, sem = c.mean(0), c.std(0, ddof=1) / math.sqrt(len(c))
            z = np.abs(mean - ref) / (sem + 1e-3 * np.max(sig))
            assert np.max(z) < 4.5, (sub, np.max(z))


def test_records_statistics_match_the_discrete_model_for_any_substep():
    """The lock-in outputs themselves: covariance at lag 0 and 3 equal the model's R(m)."""
    m = paper_model()
    lk = LockinFilter.from_slope(30e-6, 24, 1.25e6 / 32)
    ref = discretize(m.volts(SCALE), lk).autocovariance(4)
    for sub in (1, 3):
        y = simulate(m, lk, n_samples=60_000, scale=SCALE, seed=20 + sub, substeps=sub).records
        blocks = np.array_split(np.arange(len(y)), 20)
        for lagk in (0, 3):
            c = np.array([y[b][lagk:].T @ y[b][: len(b) - lagk] / (len(b) - lagk) for b in blocks])
            mean, sem = c.mean(0), c.std(0, ddof=1) / math.sqrt(len(c))
            assert np.max(np.abs(mean - ref[lagk]) / (sem + 1e-3 * np.max(ref[0]))) < 4.5


# -- conditional covariance -----------------------------------------------------------------------
@pytest.mark.parametrize("model", ["modulated", "constant"])
def test_continuous_riccati_is_the_papers_pair_covariance(model):
    m = paper_model(model)
    th = m.theory()
    cp, cm = est.pair_blocks(m.conditional_covariance(), model)
    assert np.allclose(cp, th.cov_plus, rtol=1e-8, atol=1e-10)
    assert np.allclose(cm, th.cov_minus, rtol=1e-8, atol=1e-10)
    assert separability(m.conditional_covariance(), model)["S"] == pytest.approx(th.S, rel=1e-9)
    assert th.S == pytest.approx(0.721539, abs=1e-6)          # docs/parametric.md reference point


def test_unequal_damping_riccati_matches_exact_noise_theory():
    m = paper_model("constant", gamma_diff=0.5 * G)
    th = pt.theory(G, 25 * G, 25.5 * G, 5, 1, 5.5 * G, model="constant", gamma_diff=0.5 * G,
                   exact_noise=True)
    assert separability(m.conditional_covariance(), "constant")["S"] == pytest.approx(th.S, rel=1e-8)


def test_discrete_filter_converges_to_the_riccati_solution():
    """Kalman filters on records of growing bandwidth approach Eq. 12: the deficit of the ideal
    (boxcar) record shrinks ∝ 1/f_s² (second order), and fast lock-in settings cost < 0.3 %."""
    m = paper_model()
    s_th = m.theory().S
    gaps = []
    for fs in (2e4, 8e4, 3.2e5):
        pen = lockin_penalty(m, LockinFilter.boxcar(fs))
        assert pen["S_lockin"] >= s_th * (1 - 1e-9)
        gaps.append(pen["S_lockin"] - s_th)
    assert gaps[0] > gaps[1] > gaps[2]
    assert gaps[1] / gaps[2] == pytest.approx(16.0, rel=0.1)       # second order in 1/f_s
    assert gaps[2] < 1e-4 * s_th
    fast = lockin_penalty(m, LockinFilter.from_slope(1e-6, 12, 1.25e6))
    assert fast["ratio"] - 1 < 3e-3
    # the shipped sequence's lock-in settings cost 0.47 %
    assert lockin_penalty(m, LOCKIN)["ratio"] == pytest.approx(1.0047, abs=5e-4)


@pytest.mark.parametrize("model,seed", [("modulated", 5), ("constant", 6)])
def test_truth_variance_of_best_quadratures_matches_theory(model, seed):
    """Simulated truth minus the Kalman estimate (true parameters): the variance along the best
    quadratures is V_α± of the filter (= theory within 0.5 %) within 3 standard errors."""
    m = paper_model(model)
    run = simulate(m, LOCKIN, 1.0, scale=SCALE, seed=seed)
    kf = kalman_filter(run.records, discretize(m.volts(SCALE), LOCKIN), scale=SCALE)
    st = truth_statistics(run.truth, kf)
    th = m.theory()
    pen = lockin_penalty(m, LOCKIN, SCALE)
    assert pen["V_plus_lockin"] == pytest.approx(th.V_plus, rel=6e-3)
    for key, pred in (("V_plus", pen["V_plus_lockin"]), ("V_minus", pen["V_minus_lockin"])):
        assert abs(st[key] - pred) < 3 * st[key + "_err"], (key, st[key], pred, st[key + "_err"])
    assert abs(st["S"] - pen["S_lockin"]) < 3 * st["S_err"]
    assert st["S_err"] < 0.015
    inn = kf.innovation_check()
    assert inn["max_variance_deviation"] < 0.03 and inn["max_abs_lag1"] < 0.03


def test_mismatched_filter_error_covariance_predicts_the_truth():
    """A filter on wrong parameters does worse; mismatch_covariance predicts by how much."""
    m = paper_model()
    wrong = m.with_(chi=24.6 * G)                        # χ 1.6 % low: S 0.725 → 0.775
    run = simulate(m, LOCKIN, 1.0, scale=SCALE, seed=8)
    fdm = discretize(wrong.volts(SCALE), LOCKIN)
    kf = kalman_filter(run.records, fdm, scale=SCALE)
    st = truth_statistics(run.truth, kf)
    err = est.mismatch_covariance(discretize(m.volts(SCALE), LOCKIN), SCALE, fdm, SCALE)
    pred = est.directional_separability(err, kf.covariance, "modulated")
    assert pred["S"] > lockin_penalty(m, LOCKIN, SCALE)["S_lockin"] + 0.02
    assert abs(st["S"] - pred["S"]) < 3 * st["S_err"]
    same = est.mismatch_covariance(fdm, SCALE, fdm, SCALE)
    assert np.allclose(same, steady_state_gain(fdm)[1][:4, :4] / SCALE ** 2, rtol=1e-6, atol=1e-9)


# -- estimation from the records alone ------------------------------------------------------------
def test_expected_periodogram_is_the_mean_of_simulated_periodograms():
    m = paper_model()
    run = simulate(m, LOCKIN, n_samples=2 ** 17, scale=SCALE, seed=9)
    pg = est.periodogram(run.records, LOCKIN.sample_rate, 1024)
    e = est.expected_periodogram(discretize(m.volts(SCALE), LOCKIN), pg)
    # average over frequency bands of 32 bins and compare diagonals (χ²-distributed estimates)
    d_meas = np.real(np.diagonal(pg.p, axis1=1, axis2=2))[:480].reshape(15, 32, 4).mean(1)
    d_exp = np.real(np.diagonal(e, axis1=1, axis2=2))[:480].reshape(15, 32, 4).mean(1)
    rel_err = 1 / math.sqrt(pg.segments * 32 / 2)            # Hann bins are ~50 % correlated
    assert np.max(np.abs(d_meas / d_exp - 1)) < 5 * rel_err
    # and the plain model PSD agrees with the expected periodogram where the spectrum is smooth
    s = est.discretize(m.volts(SCALE), LOCKIN).psd(pg.freqs)
    hi = pg.freqs > 5e3
    assert np.allclose(np.real(np.diagonal(s, axis1=1, axis2=2))[hi],
                       np.real(np.diagonal(e, axis1=1, axis2=2))[hi], rtol=0.02)


@pytest.mark.parametrize("model,seed", [("modulated", 2), ("constant", 3)])
def test_fitted_parameters_recover_the_inputs(model, seed):
    """Free fit of γ, Δ, χ, D, B; μ from the calibrated N, η. Tolerances: 5 standard errors of
    the block estimate and at most 8 % (γ, μ) / 2.5 % (Δ, χ) for a 1 s record."""
    m = paper_model(model)
    run = simulate(m, LOCKIN, 1.0, scale=SCALE, seed=seed)
    an = analyse_records(run.records, LOCKIN, model=model, nbar=m.nbar, eta=m.eta, blocks=5)
    assert an.fit.success
    for key, tol in (("gamma", 0.08), ("delta", 0.025), ("chi", 0.025), ("mu", 0.08)):
        v, e = an.parameters[key]
        true = abs(getattr(m, key))
        assert abs(v - true) < max(5 * e, 0.0) and abs(v / true - 1) < tol, (key, v, true, e)
    assert an.scale == pytest.approx(SCALE, rel=0.05)
    assert an.parameters["snr"][0] == pytest.approx(m.snr, rel=0.2)


def test_fit_with_calibrated_detuning_pins_chi():
    m = paper_model()
    run = simulate(m, LOCKIN, 1.0, scale=SCALE, seed=4)
    fit = fit_spectra(run.records, LOCKIN, fix={"delta": m.delta})
    assert fit.volts.delta == m.delta
    assert abs(fit.volts.chi) == pytest.approx(m.chi, rel=2e-3)
    with pytest.raises(InputError):
        fit_spectra(run.records, LOCKIN, fix={"chi": 1.0})


def test_estimated_S_matches_theory_within_its_error():
    """S from the records alone (fit + calibration + Riccati) against the theory, over three
    independent runs: each within 3σ, and the σ are sensible (0.5 %…4 %)."""
    m = paper_model()
    s_th = m.theory().S
    for seed in (30, 31, 32):
        run = simulate(m, LOCKIN, 1.0, scale=SCALE, seed=seed)
        an = analyse_records(run.records, LOCKIN, nbar=5, eta=1, blocks=6, fix={"delta": m.delta})
        s, e = an.s_fit["S"], an.s_fit["S_err"]
        assert 0.005 * s_th < e < 0.04 * s_th
        assert abs(s - s_th) < 3 * e, (seed, s, e)
        assert an.s_fit["S_lockin"] > s
        assert an.s_fit["entangled"]


def test_analysis_summary_is_json_and_arrays_have_the_record_length():
    m = paper_model()
    run = simulate(m, LOCKIN, 0.25, scale=SCALE, seed=40)
    an = analyse_records(run.records, LOCKIN, nbar=5, eta=1, blocks=2, truth=run.truth,
                         true_model=m, true_scale=SCALE)
    text = json.dumps(an.summary(), default=float)
    assert "S_lockin" in text and "true_filter" in text
    arrs = an.arrays()
    assert arrs["estimates"].shape == (run.n, 4) and arrs["conditional_covariance"].shape == (4, 4)
    assert arrs["spectra_measured"].shape == arrs["spectra_fitted"].shape


def test_bad_records_are_refused():
    with pytest.raises(InputError):
        fit_spectra(np.zeros((100, 3)), LOCKIN)
    y = np.zeros((5000, 4))
    y[3, 1] = np.nan
    with pytest.raises(InputError):
        fit_spectra(y, LOCKIN)
    with pytest.raises(InputError):
        LockinFilter(1e-5, 5, 1e4)


# -- twin and lock-in simulators ---------------------------------------------------------------------
def test_twin_serves_both_lockins_from_one_run():
    from drivers.srs_sr865a import SR865A
    from labctl.instrument.transport import ModelTransport
    from sim_instruments.lab import SimLab
    from sim_instruments.models.sr865a import SR865AModel

    lab = SimLab(seed=1)
    insts = []
    for osc in (2, 1):                                      # order must not matter
        model = SR865AModel(f"li{osc}", oscillator=osc)
        lab.add(f"li{osc}", model)
        t = ModelTransport(f"sim://li{osc}", model, read_termination="\n", write_termination="\n")
        li = SR865A(f"li{osc}", t, oscillator=osc)
        li.configure_filter("10 us", 12)
        insts.append(li)
    twin = ParametricTwin(paper_model(), scale=SCALE, seed=3)
    twin.attach(lab)
    assert lab.twin is twin
    rate = insts[0].capture_rate_max / 2
    data = {li.oscillator: li.acquire_xy(8192, rate) for li in insts}
    run = twin.last_run
    assert twin.runs == 1 and run.lockin.sample_rate == rate and run.lockin.order == 2
    for osc in (1, 2):
        assert np.allclose(data[osc], run.lockin_xy(osc)[:8192], rtol=1e-6, atol=1e-9)
    # a second acquisition is a new run
    insts[1].acquire_xy(4096, rate)
    assert twin.runs == 2


def test_step_model_has_no_reset_on_the_lockin_states():
    st = step_model(paper_model(), LOCKIN, SCALE)
    d0 = st["d0"]
    assert np.all(st["f"][:, d0:] == 0) and np.any(st["f"][:, 4:d0] != 0)


# -- sequence and command ----------------------------------------------------------------------------
def test_shipped_sequence_validates_and_converts():
    from labctl.sequence import load_sequence

    seq = load_sequence("sequences/parametric_steady_state.yaml")
    ps = est.parametric_settings(seq)
    assert seq.experiment == "parametric" and ps.model == "modulated"
    assert ps.gamma == pytest.approx(G) and ps.chi / ps.gamma == pytest.approx(25)
    assert ps.physical_model().theory().S == pytest.approx(0.7215389, abs=1e-6)
    assert ps.lockin() == LOCKIN and ps.n_samples == 78125 and ps.fix == ("delta",)
    assert ps.reference_frequency == pytest.approx(3.2e6 - 1275.0)
    assert ps.drive_frequency == pytest.approx(2 * (3.2e6 - 1275.0))
    assert main(["validate", "sequences/parametric_steady_state.yaml"]) == 0


def test_parametric_section_errors_name_the_line(tmp_path):
    from labctl.sequence import load_sequence

    text = open("sequences/parametric_steady_state.yaml").read()
    bad = (text.replace("chi: 1.25 kHz", "chi: 2 kHz").replace("time_constant: 10 us", "time_constant: 20 us")
           .replace("sample_rate: 78.125 kHz", "sample_rate: 80 kHz"))
    p = tmp_path / "bad.yaml"
    p.write_text(bad)
    with pytest.raises(InputError) as ei:
        est.parametric_settings(load_sequence(p))
    msg = ei.value.render()
    assert "20 us" not in msg or "time constant" in msg
    assert "bad.yaml:" in msg and "not an SR865A setting" in msg and "1.25 MHz/2^n" in msg
    p.write_text(text.replace("gamma: 50 Hz", "gamma: 50"))
    with pytest.raises(InputError) as ei:
        est.parametric_settings(load_sequence(p))
    assert "rate" in ei.value.render() or "Hz" in ei.value.render()
    p.write_text(text.replace("chi: 1.25 kHz", "chi: 2 kHz"))
    with pytest.raises(InputError) as ei:
        est.parametric_settings(load_sequence(p))
    assert "threshold" in ei.value.render()


def test_command_prints_theory_and_estimate_json(capsys):
    rc = main(["parametric", "simulate", "--duration", "0.25 s", "--blocks", "2", "--seed", "4", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["theory"]["S"] == pytest.approx(0.7215389, abs=1e-6)
    assert abs(out["S"]["S"] - out["theory"]["S"]) < 0.1
    assert {"gamma", "delta", "chi", "mu"} <= set(out["parameters"])
    assert out["truth"]["true_filter"]["S"] > 0


def test_command_table_and_errors(capsys):
    assert main(["parametric", "simulate", "--duration", "0.2 s", "--blocks", "0", "--boxcar",
                 "--sample-rate", "39.0625 kHz"]) == 0
    text = capsys.readouterr().out
    assert "S = 2√(V_α+ V_α−)" in text and "(boxcar)" in text
    assert main(["parametric", "simulate", "--chi", "2 kHz"]) == 2
    assert "threshold" in capsys.readouterr().err
    assert main(["parametric", "simulate", "--fix", "chi"]) == 2


def test_triggered_captures_of_both_lockins_start_on_one_edge():
    from drivers.srs_sr865a import SR865A
    from labctl.instrument.transport import ModelTransport
    from sim_instruments.lab import SimLab
    from sim_instruments.models.sr865a import SR865AModel

    lab = SimLab(seed=2)
    lab.twin = "another twin"
    li = {}
    for osc in (1, 2):
        model = SR865AModel(f"li{osc}", oscillator=osc)
        lab.add(f"li{osc}", model)
        li[osc] = SR865A(f"li{osc}", ModelTransport(f"sim://li{osc}", model), oscillator=osc)
        li[osc].configure_filter("10 us", 12)
    twin = ParametricTwin(paper_model(), scale=SCALE, seed=4)
    twin.attach(lab)
    assert lab.twin == "another twin" and lab.parametric_twin is twin
    rate = li[1].capture_rate_max / 2
    for l in li.values():
        l.configure_capture(4096, rate)
        l.start_capture("one", "trigger")
    assert all(l.captured_bytes() == 0 for l in li.values())
    twin.fire(lab)
    data = {}
    for osc, l in li.items():
        l.stop_capture()
        data[osc] = l.read_capture(4096).data
    assert twin.runs == 1
    assert np.allclose(np.hstack([data[1], data[2]]), twin.last_run.records[:4096], rtol=1e-6, atol=1e-9)
