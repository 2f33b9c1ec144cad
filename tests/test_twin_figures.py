"""The seed's figures in simulation, with statistical tolerances (Riedinger et al. 2018):
Fig. 3 (phase sweep), Fig. 4 (delay sweep), Fig. S3 (pump-probe). Each point is sampled with the
sequence's own number of trials and counted in its compiled detection windows."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import curve_fit

from sim_instruments.twin import devices as dv
from sim_instruments.twin.sampler import count_windows
from sim_instruments.twin.scenarios import witness_setup

DOM = 2 * math.pi * 45e6


def g2_of(c: dict) -> np.ndarray:
    n = c["trials"]
    return np.array([[c["coincidences"][i][j] * n / (c["read"][i] * c["pump"][j]) for j in range(2)]
                     for i in range(2)])


def _trials(setup) -> int:
    raw = setup.compiled.sequence.raw.get("trials")
    return int(float(raw))


def test_phase_sweep_fig3():
    """g2 cross (g2[0][1], g2[1][0]) and same (g2[0][0], g2[1][1]) oscillate out of phase with
    period 2π in Δφ; fringe amplitude > 1 in g2 units (main text Fig. 3)."""
    s = witness_setup("sequences/phase_sweep.yaml", seed=33)
    try:
        n = _trials(s)
        assert n == 2e8
        dphi, g = [], []
        for k, pt in enumerate(s.compiled.points):
            s.apply(k)
            ev, _ = s.twin.simulate_events(n)
            pw, rw = s.windows(k)
            g.append(g2_of(count_windows(ev, pw, rw, n, 250e-12)))
            dphi.append(pt["awg"]["phase_offset"])
        g = np.array(g)
        x = np.array(dphi)
        series = {"cross 1,2": g[:, 0, 1], "cross 2,1": g[:, 1, 0], "same 1,1": g[:, 0, 0], "same 2,2": g[:, 1, 1]}
        phases, amps = {}, {}
        for name, y in series.items():
            A = np.stack([np.ones_like(x), np.cos(x), np.sin(x)], axis=1)
            coef, *_ = np.linalg.lstsq(A, y, rcond=None)
            amps[name] = math.hypot(coef[1], coef[2])
            phases[name] = math.atan2(coef[2], coef[1])      # maximum at Δφ = phase
            assert amps[name] > 1.0, name
        for a in ("cross 1,2", "cross 2,1"):
            for b in ("same 1,1", "same 2,2"):
                d = (phases[a] - phases[b]) % (2 * math.pi)
                assert abs(d - math.pi) < 0.5, (a, b, d)               # out of phase
        # period: least squares over trial periods, all four series with their own offsets
        diff = (g[:, 0, 1] + g[:, 1, 0]) - (g[:, 0, 0] + g[:, 1, 1])
        best = min(np.linspace(1.5, 2.5, 201) * math.pi,
                   key=lambda P: np.linalg.lstsq(np.stack([np.ones_like(x), np.cos(2 * math.pi * x / P),
                                                           np.sin(2 * math.pi * x / P)], 1), diff, rcond=None)[1].sum())
        assert best == pytest.approx(2 * math.pi, rel=0.08)          # seed: 1.95 π
        # θ_opt of the witness (Δφ = 0.2 π) lies near the cross-detector maximum
        assert math.cos(0.2 * math.pi - phases["cross 2,1"]) > 0.8
    finally:
        s.close()


def test_delay_sweep_fig4():
    """Fringes every 2π/ΔΩ_m (22 ns) in τ, visibility decaying with 1/Γ_A: early |cross − same|
    more than twice the late one at τ > 3 us (main text Fig. 4). The compiled AWG ramps are
    referenced to their pulses."""
    s = witness_setup("sequences/delay_sweep.yaml", seed=44)
    try:
        n = _trials(s)
        taus, diffs = [], []
        for k in range(len(s.compiled.points)):
            s.apply(k)
            ev, _ = s.twin.simulate_events(n)
            pw, rw = s.windows(k)
            g = g2_of(count_windows(ev, pw, rw, n, 250e-12))
            taus.append(s.twin.describe()["tau"])
            diffs.append((g[0, 1] + g[1, 0] - g[0, 0] - g[1, 1]) / 2)
        taus, diffs = np.array(taus), np.array(diffs)
        groups = [slice(0, 5), slice(5, 10), slice(10, 15), slice(15, 20)]

        # one phase for all delays (θ = Δφ − ΔΩ_m τ + const), an amplitude and offset per group:
        # cross − same = A_g cos(2π f τ + φ) + c_g, least squares over a grid of f and φ
        fs = np.linspace(30e6, 60e6, 1201)[:, None, None]
        ph = np.linspace(0, 2 * math.pi, 144, endpoint=False)[None, :, None]
        resid = 0.0
        for gsl in groups:
            x = np.cos(2 * math.pi * fs * taus[gsl][None, None, :] + ph)
            y = diffs[gsl][None, None, :]
            xc, yc = x - x.mean(-1, keepdims=True), y - y.mean(-1, keepdims=True)
            sxy = np.maximum((xc * yc).sum(-1), 0.0)               # amplitudes A_g ≥ 0
            resid = resid + (yc ** 2).sum(-1) - sxy ** 2 / (xc ** 2).sum(-1)
        best = float(fs[np.unravel_index(np.argmin(resid), resid.shape)[0], 0, 0])
        assert best == pytest.approx(45e6, abs=3e6)                   # a fringe every 22 ns

        amps = []
        for gsl in groups:                                            # amplitude at 45 MHz
            A = np.stack([np.cos(DOM * taus[gsl]), np.sin(DOM * taus[gsl]), np.ones(5)], 1)
            coef, *_ = np.linalg.lstsq(A, diffs[gsl], rcond=None)
            amps.append(math.hypot(coef[0], coef[1]))
        assert amps[0] > 2 * amps[3]                                  # early vs tau > 3 us
        assert amps[0] > amps[1] > amps[3]
        assert max(taus) > 3e-6
    finally:
        s.close()


def test_compiled_ramps_let_theta_follow_tau():
    """The compiled ramps are referenced to their pulses, so θ = Δφ − ΔΩ_m τ + const: from one
    delay to the next (5.5 ns) θ moves by 2π · 45 MHz · 5.5 ns = 1.555 rad."""
    s = witness_setup("sequences/delay_sweep.yaml", seed=45)
    try:
        thetas = []
        for k in range(5):
            s.apply(k)
            thetas.append(s.twin.describe()["theta"])
        steps = np.diff(np.unwrap(thetas))
        assert np.allclose(np.abs(steps), 2 * math.pi * 45e6 * 5.5e-9, atol=0.05)
        assert len(set(np.sign(steps))) == 1
    finally:
        s.close()


def test_pump_probe_figS3():
    """Probe click rate after a strong pump, arm B blocked: rises with the delayed heating
    (1/γ = 0.5 us) and decays with 1/Γ_A = 4.0 us; fitted with the supplement's
    d(t) = a e^{−Γt} − b e^{−γt} + n_final."""
    s = witness_setup("sequences/pump_probe.yaml", seed=55)
    try:
        s.station["voa"].set_attenuation(40.0)          # 'block_arm_b'
        n = _trials(s)
        taus, rates, errs = [], [], []
        for k in range(len(s.compiled.points)):
            s.apply(k)
            ev, _ = s.twin.simulate_events(n)
            pw, rw = s.windows(k)
            c = count_windows(ev, pw, rw, n, 250e-12)
            m = sum(c["read"])
            taus.append(s.twin.describe()["tau"] * 1e6)
            rates.append(m / n)
            errs.append(math.sqrt(m) / n)
        taus, rates, errs = np.array(taus), np.array(rates), np.array(errs)
        scale = rates.max()
        popt, pcov = curve_fit(lambda t, a, b, G, g, c: dv.probe_signal(t, a, b, G, g, c), taus, rates / scale,
                               p0=[1, 1, 0.3, 1.5, 0.3], sigma=errs / scale, absolute_sigma=True, maxfev=20000)
        assert 1 / popt[2] == pytest.approx(4.0, rel=0.3)
        assert 1 / popt[3] == pytest.approx(0.5, rel=0.4)
        assert rates[np.argmax(rates)] > rates[0] + 5 * errs[0]       # the delayed rise
        assert rates[-1] < rates.max() - 5 * errs[-1]                  # and the decay
    finally:
        s.close()
