"""Calibrations (labctl.calibrations) on the real drivers with simulated instruments and small
physical models written here (VOA rate law, Lorentzian filter, latching detector), the device-pair
search against brute force, the birthday-paradox numbers against the supplement, and the
``labctl calibrate`` command."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import integrate, stats

from drivers.newfocus_tlb6700 import TLB6700
from drivers.redpitaya import RedPitaya
from drivers.sercalo_vp1 import SercaloVP1
from drivers.srs_sim900 import SIM900
from labctl.calibrations import (C_LIGHT, DetectorSpec, align_filter, balance_arms, check_detectors, find_pairs,
                                 fit_peak, load_resonances, pair_probability, set_laser_wavelength)
from labctl.cli import main
from labctl.errors import InputError
from labctl.instrument.transport import ModelTransport
from sim_instruments.models.redpitaya import RedPitayaModel
from sim_instruments.models.sercalo_vp1 import SercaloVP1Model
from sim_instruments.models.sim900 import SIM900Model
from sim_instruments.models.tlb6700 import TLB6700Model


def on_model(driver_cls, model, name, **options):
    t = ModelTransport(f"sim://{name}", model, read_termination=driver_cls.read_termination,
                       write_termination=driver_cls.write_termination, timeout=0.5)
    drv = driver_cls(name, t, **options)
    drv.connect()
    return drv


# -- arm balancing ----------------------------------------------------------------------------------
class Arms:
    """Herald rates: arm A behind the VOA falls by ``slope`` dB per dB; counts are Poisson over
    ``t_s`` seconds (rate, uncertainty)."""

    def __init__(self, model, *, rate_a0=1300.0, rate_b=1000.0, slope=1.0, t_s=200.0, seed=0):
        self.model, self.rate_a0, self.rate_b, self.slope, self.t_s = model, rate_a0, rate_b, slope, t_s
        self.rng = np.random.default_rng(seed)
        self.calls = 0

    def true(self, arm):
        if arm == "A":
            return self.rate_a0 * 10 ** (-self.slope * self.model.attenuation_db / 10)
        return self.rate_b

    def __call__(self, arm):
        self.calls += 1
        n = self.rng.poisson(self.true(arm) * self.t_s)
        return n / self.t_s, math.sqrt(max(n, 1)) / self.t_s


def voa_sim():
    model = SercaloVP1Model("voa")
    return model, on_model(SercaloVP1, model, "voa")


def test_balance_arms_converges_within_two_percent():
    model, voa = voa_sim()
    arms = Arms(model)
    res = balance_arms(None, arms, attenuator=voa)
    assert res.passed, res.reason
    assert abs(res.measured["relative_difference"]) <= 0.02
    true_d = (arms.true("A") - arms.true("B")) / (0.5 * (arms.true("A") + arms.true("B")))
    assert abs(true_d) < 0.03                          # the real imbalance, not just the measured one
    assert res.settings["attenuation_db"] == pytest.approx(10 * math.log10(1.3), abs=0.15)
    assert model.attenuation_db == pytest.approx(res.settings["attenuation_db"], abs=1e-3)
    assert len(res.steps) <= 4
    json.dumps(res.to_dict(), allow_nan=False)


def test_balance_arms_with_a_miscalibrated_voa_uses_the_secant():
    model, voa = voa_sim()
    arms = Arms(model, rate_a0=3000.0, slope=0.6, t_s=2000.0)   # the VOA does only 0.6 dB per dB
    res = balance_arms(None, arms, attenuator=voa, tolerance=0.01)
    assert res.passed, res.reason
    assert model.attenuation_db == pytest.approx(10 * math.log10(3.0) / 0.6, abs=0.2)


def test_balance_arms_voa_on_arm_b():
    model, voa = voa_sim()
    arms = Arms(model, rate_a0=1000.0, rate_b=1500.0)

    def rates(arm):      # the VOA sits in arm B here: swap the roles of the model's arms
        return arms({"A": "B", "B": "A"}[arm])

    arms.rate_a0, arms.rate_b = 1500.0, 1000.0
    res = balance_arms(None, rates, attenuator=voa, voa_arm="B", other_arm="A")
    assert res.passed and abs(res.measured["relative_difference"]) <= 0.02


def test_balance_arms_fails_when_the_voa_arm_is_too_weak():
    model, voa = voa_sim()
    arms = Arms(model, rate_a0=800.0)                 # weaker at 0 dB: the VOA cannot help
    res = balance_arms(None, arms, attenuator=voa)
    assert not res.passed
    assert "minimum attenuation" in res.reason and "VRC" in res.reason
    assert model.attenuation_db == pytest.approx(0.0)


def test_balance_arms_fails_on_a_dark_arm_and_on_too_few_iterations():
    model, voa = voa_sim()
    res = balance_arms(None, lambda arm: (0.0, 0.0) if arm == "A" else (1000.0, 10.0), attenuator=voa)
    assert not res.passed and "no heralds in arm A" in res.reason
    arms = Arms(model, rate_a0=5000.0, t_s=0.01, seed=4)     # 10-count measurements: noise ±30 %
    res = balance_arms(None, arms, attenuator=voa, max_iterations=2, tolerance=0.005)
    assert not res.passed and "not balanced after 2" in res.reason
    best = min(res.steps, key=lambda s: abs(s["relative_difference"]))
    assert model.attenuation_db == pytest.approx(best["attenuation_db"], abs=1e-3)   # best kept
    with pytest.raises(InputError):
        balance_arms(None, arms, attenuator=voa, tolerance=2)


# -- filter alignment -----------------------------------------------------------------------------------
class Filter:
    """FFP-TF2 transmission vs piezo control voltage: Lorentzian(s) plus background, Poisson counts."""

    def __init__(self, model, peaks=((0.93, 0.04, 5e4),), background=50.0, t_s=0.1, seed=1, pin="aout0"):
        self.model, self.peaks, self.background, self.t_s, self.pin = model, peaks, background, t_s, pin
        self.rng = np.random.default_rng(seed)

    def rate(self, v):
        return self.background + sum(a / (1 + ((v - c) / w) ** 2) for c, w, a in self.peaks)

    def __call__(self):
        return self.rng.poisson(self.rate(float(self.model.prop(self.pin))) * self.t_s) / self.t_s


def rp_sim():
    model = RedPitayaModel("redpitaya")
    return model, on_model(RedPitaya, model, "redpitaya")


def test_align_filter_finds_and_holds_the_transmission_peak():
    model, rp = rp_sim()
    flt = Filter(model)
    res = align_filter(None, flt, filter=rp, pin="AOUT0")
    assert res.passed, res.reason
    assert res.settings["voltage"] == pytest.approx(0.93, abs=0.1 * 0.04)
    assert res.measured["hwhm"] == pytest.approx(0.04, rel=0.15)
    assert float(model.prop("aout0")) == pytest.approx(res.settings["voltage"], abs=1e-4)
    assert res.measured["rate_at_hold"] > 0.9 * 5e4
    assert [s["scan"] for s in res.steps] == ["coarse", "fine"]


def test_align_filter_picks_the_highest_of_two_orders():
    model, rp = rp_sim()
    flt = Filter(model, peaks=((0.35, 0.03, 2e4), (1.25, 0.05, 6e4)))
    res = align_filter(None, flt, filter=rp, pin="AOUT0", points=61)
    assert res.passed and res.settings["voltage"] == pytest.approx(1.25, abs=0.005)


def test_align_filter_failures_restore_the_piezo():
    model, rp = rp_sim()
    rp.set_voltage("AOUT0", 0.5)
    res = align_filter(None, Filter(model, peaks=((1.79, 0.03, 5e4),)), filter=rp, pin="AOUT0")
    assert not res.passed and "edge" in res.reason
    assert float(model.prop("aout0")) == pytest.approx(0.5)
    res = align_filter(None, Filter(model, peaks=()), filter=rp, pin="AOUT0")
    assert not res.passed and "no transmission peak" in res.reason
    assert float(model.prop("aout0")) == pytest.approx(0.5)
    with pytest.raises(InputError, match="exceeds"):
        align_filter(None, Filter(model), filter=rp, pin="AOUT0", v_range=(0.0, 2.5))


def test_fit_peak_against_known_lorentzian():
    v = np.linspace(0, 1, 101)
    r = 10 + 1000 / (1 + ((v - 0.4123) / 0.021) ** 2)
    fit = fit_peak(v, r)
    assert fit["ok"] and fit["center"] == pytest.approx(0.4123, abs=1e-6)
    assert fit["hwhm"] == pytest.approx(0.021, rel=1e-4) and fit["background"] == pytest.approx(10, rel=1e-3)


# -- SNSPD bias and latch ---------------------------------------------------------------------------------
def bias_sim():
    model = SIM900Model("snspd_bias", ports=[1, 2])
    drv = on_model(SIM900, model, "snspd_bias", ports=[1, 2], module_timeout="50 ms", poll_interval="0 s")
    for p in (1, 2):
        drv.port(p).set_bias(1.2)
        drv.port(p).set_output(True)
    return model, drv


def counter(model, dark=300.0, relatch=()):
    def rate(name):
        p = int(name.rsplit("_", 1)[1])
        m = model.modules[p]
        if p in relatch and m.bias_on_device > 0:
            m.latched = True              # this one latches again as soon as it is biased
        return 0.0 if (m.latched or m.bias_on_device <= 0) else dark
    return rate


def specs(drv, **kw):
    return [DetectorSpec(f"detector_{p}", drv, p, **kw) for p in (1, 2)]


def test_latched_detector_is_reset_and_verified():
    model, drv = bias_sim()
    model.set_latched(2)
    res = check_detectors(None, counter(model), detectors=specs(drv), settle_s=0.0)
    assert res.passed, res.reason
    d2 = res.measured["detector_2"]
    assert d2["latched"] and d2["resets"] == 1 and d2["initial_rate_hz"] == 0.0 and d2["rate_hz"] == 300.0
    assert not res.measured["detector_1"]["latched"]
    assert model.modules[2].voltage == pytest.approx(1.2) and not model.modules[2].latched   # bias restored


def test_detector_that_keeps_latching_fails_after_max_resets():
    model, drv = bias_sim()
    res = check_detectors(None, counter(model, relatch=(1,)), detectors=specs(drv), settle_s=0.0, max_resets=2)
    assert not res.passed
    assert res.measured["detector_1"]["resets"] == 2 and "latched" in res.measured["detector_1"]["reason"]
    assert res.measured["detector_2"]["passed"]


def test_unbiased_detector_fails_unless_its_bias_is_applied():
    model, drv = bias_sim()
    drv.port(1).set_output(False)
    res = check_detectors(None, counter(model), detectors=specs(drv), settle_s=0.0)
    assert not res.passed and "not biased" in res.measured["detector_1"]["reason"]
    res = check_detectors(None, counter(model), detectors=specs(drv, bias_v=1.1), settle_s=0.0, apply_bias=True)
    assert res.passed and model.modules[1].voltage == pytest.approx(1.1) and model.modules[1].output


def test_rate_window_and_expected_bias():
    model, drv = bias_sim()
    res = check_detectors(None, counter(model), detectors=specs(drv, max_rate_hz=200.0), settle_s=0.0)
    assert not res.passed and "above" in res.measured["detector_1"]["reason"]
    res = check_detectors(None, counter(model), detectors=specs(drv, bias_v=1.0), settle_s=0.0)
    assert not res.passed and "differs from the expected" in res.measured["detector_2"]["reason"]


# -- laser wavelength --------------------------------------------------------------------------------------
class FakeTime:
    def __init__(self):
        self.t = 0.0

    def clock(self):
        return self.t

    def sleep(self, s):
        self.t += max(s, 1e-3)


def laser_sim(**model_opts):
    model = TLB6700Model("read_laser", **model_opts)
    return model, on_model(TLB6700, model, "read_laser", poll_interval="0 s")


def test_wavelength_set_and_settle():
    model, laser = laser_sim(jitter_nm=0.0005, seed=2)
    ft = FakeTime()
    res = set_laser_wavelength(None, "1553.8 nm", laser=laser, sleep=ft.sleep, clock=ft.clock)
    assert res.passed, res.reason
    assert model.setpoint_nm == pytest.approx(1553.8)
    assert abs(res.measured["error_m"]) < 5e-12 and res.measured["attempts"] == 1


def test_wavelength_mode_hop_is_cleared_by_a_re_set():
    model, laser = laser_sim(jitter_nm=0.0)
    hopped = {"done": False}
    orig = model.measured_nm

    def measured():                      # hop once, after the first set point
        if not hopped["done"]:
            hopped["done"] = True
            model.mode_hop(0.03)
        return orig()

    model.measured_nm = measured
    ft = FakeTime()
    res = set_laser_wavelength(None, 1553.8e-9, laser=laser, settle_timeout_s=0.5, sleep=ft.sleep, clock=ft.clock)
    assert res.passed and res.measured["attempts"] == 2


def test_wavelength_that_never_settles_fails_within_the_limit():
    model, laser = laser_sim(jitter_nm=0.0)
    model.measured_nm = lambda: model.setpoint_nm + 0.02
    ft = FakeTime()
    res = set_laser_wavelength(None, "1553.8 nm", laser=laser, settle_timeout_s=0.5, retries=1,
                               sleep=ft.sleep, clock=ft.clock)
    assert not res.passed and "mode hop" in res.reason
    assert res.measured["error_m"] == pytest.approx(20e-12, abs=1e-13)
    assert ft.t < 1.5
    with pytest.raises(InputError):
        set_laser_wavelength(None, "1553.8 MHz", laser=laser)


# -- device pairs --------------------------------------------------------------------------------------------
def brute_pairs(a, b, crit):
    return sorted((i, j) for i in range(len(a)) for j in range(len(b))
                  if abs(C_LIGHT / (a[i] * 1e-9) - C_LIGHT / (b[j] * 1e-9)) <= crit)


def test_find_pairs_matches_brute_force():
    rng = np.random.default_rng(7)
    a = rng.normal(1552.4, 2.3, 234)
    b = rng.normal(1550.0, 2.0, 234)
    for crit in (100e6, 1e9, 5e9):
        got = find_pairs(a, b, crit)
        assert sorted((p.index_a, p.index_b) for p in got) == brute_pairs(a, b, crit)
        assert all(abs(p.detuning_hz) <= crit for p in got)
        assert [abs(p.detuning_hz) for p in got] == sorted(abs(p.detuning_hz) for p in got)


def test_find_pairs_criterion_and_sign():
    lam = 1550.0
    df = 99e6
    lam_b = C_LIGHT / (C_LIGHT / (lam * 1e-9) - df) * 1e9     # 99 MHz lower in frequency
    lam_c = C_LIGHT / (C_LIGHT / (lam * 1e-9) - 101e6) * 1e9
    pairs = find_pairs([lam], [lam_b, lam_c], labels_a=["A7"], labels_b=["B1", "B2"])
    assert [(p.label_a, p.label_b) for p in pairs] == [("A7", "B1")]
    assert pairs[0].detuning_hz == pytest.approx(df, rel=1e-6)
    with pytest.raises(InputError):
        find_pairs([1550.0, -1.0], [1550.0])


def test_load_resonances_csv_and_yaml(tmp_path):
    f = tmp_path / "a.csv"
    f.write_text("device,wavelength (nm)\nA1,1550.1\nA2,1551.25\n")
    wl, labels = load_resonances(f)
    assert wl.tolist() == [1550.1, 1551.25] and labels == ["A1", "A2"]
    g = tmp_path / "b.csv"
    g.write_text("# chip B\n1550.1\n1549.0\n")
    assert load_resonances(g)[0].tolist() == [1550.1, 1549.0]
    y = tmp_path / "c.yaml"
    y.write_text("resonances:\n  B1: 1550.1 nm\n  B2: 1.5491 um\n")
    wl, labels = load_resonances(y)
    assert wl == pytest.approx([1550.1, 1549.1]) and labels == ["B1", "B2"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("- 1550.1\n- 1550.2 MHz\n")
    with pytest.raises(InputError) as ei:
        load_resonances(bad)
    assert ei.value.line == 2
    bad2 = tmp_path / "bad.csv"
    bad2.write_text("device,wavelength_nm\nA1,1550.1\nA2,abc\n")
    with pytest.raises(InputError) as ei:
        load_resonances(bad2)
    assert ei.value.line == 3


# -- birthday paradox ----------------------------------------------------------------------------------------
def independent_pair_probability(n, sigma_nm, offset_nm, crit_hz, lam_nm=1550.0):
    """P(|λa − λb| ≤ δ) by numerical integration of the two Gaussians (not the closed form), then
    1 − (1 − p)^(N²)."""
    delta = (lam_nm * 1e-9) ** 2 * crit_hz / C_LIGHT * 1e9
    p, _ = integrate.quad(lambda x: stats.norm.pdf(x, 0, sigma_nm)
                          * (stats.norm.cdf(x + delta, offset_nm, sigma_nm) - stats.norm.cdf(x - delta, offset_nm, sigma_nm)),
                          -15 * sigma_nm, 15 * sigma_nm + offset_nm, points=[0, offset_nm], limit=400)
    return 1 - (1 - p) ** (n * n)


@pytest.mark.parametrize("offset_nm, published", [(0.0, 99.9996), (2.5, 99.98), (5.0, 92.7)])
def test_pair_probability_reproduces_the_supplement(offset_nm, published):
    res = pair_probability(234, "2 nm", "100 MHz", f"{offset_nm} nm")
    pct = res.probability * 100
    assert pct == pytest.approx(independent_pair_probability(234, 2.0, offset_nm, 100e6) * 100, abs=1e-6)
    assert abs(pct - published) < 0.2
    if offset_nm < 5:
        digits = len(str(published).split(".")[1])
        assert round(pct, digits) == published              # to the printed precision


def test_quartet_probability_reproduces_the_supplement():
    res = pair_probability(500, 2e-9, 100e6, 0.0, chips=4)
    assert abs(res.probability * 100 - 51.6) < 0.2
    assert res.expected_matches == pytest.approx(-math.log(1 - res.probability), rel=1e-6)
    assert res.criterion_m == pytest.approx(0.8014e-12, rel=1e-4)     # 100 MHz at 1550 nm


def test_montecarlo_agrees_with_analytic_where_overlaps_are_rare_and_shows_the_exact_criterion():
    # few devices: matches are rare and independent, so the estimate is the exact probability
    mc = pair_probability(40, 2e-9, 1e9, 0.0, method="montecarlo", samples=20000, seed=3)
    an = pair_probability(40, 2e-9, 1e9, 0.0)
    assert abs(mc.probability - an.probability) < 4 * mc.stderr + 0.01
    # the supplement's 5 nm case: the exact probability is a little lower than the estimate
    mc5 = pair_probability(234, 2e-9, 100e6, 5e-9, method="montecarlo", samples=20000, seed=1)
    assert 0.905 < mc5.probability < 0.93
    # four chips: the estimate lies between the exact 'all pairwise' and 'all to one reference'
    allq = pair_probability(500, 2e-9, 100e6, 0.0, chips=4, method="montecarlo", samples=2000, seed=5)
    ref = pair_probability(500, 2e-9, 100e6, 0.0, chips=4, method="montecarlo", samples=2000, seed=5, group="reference")
    assert 0.30 < allq.probability < 0.40 and 0.50 < ref.probability < 0.62
    assert allq.probability < 0.516 < ref.probability


def test_pair_probability_input_errors():
    with pytest.raises(InputError):
        pair_probability(234, "2 MHz")
    with pytest.raises(InputError):
        pair_probability(0)
    with pytest.raises(InputError):
        pair_probability(234, method="guess")
    with pytest.raises(InputError):
        pair_probability([10, 20], chips=3)


# -- CLI -----------------------------------------------------------------------------------------------------
def test_cli_pair_probability_json(capsys):
    assert main(["calibrate", "pair-probability", "--devices", "234", "--spread", "2nm", "--offset", "0nm",
                 "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert round(d["probability"] * 100, 4) == 99.9996 and d["method"] == "analytic"
    assert main(["calibrate", "pair-probability", "--devices", "500", "--chips", "4"]) == 0
    assert "51.4" in capsys.readouterr().out
    assert main(["calibrate", "pair-probability", "--spread", "2"]) == 2
    assert "unit" in capsys.readouterr().err


def test_cli_pairs(tmp_path, capsys):
    a = tmp_path / "a.csv"
    a.write_text("device,wavelength_nm\nA1,1550.0000\nA2,1552.0\n")
    b = tmp_path / "b.yaml"
    lam_b = C_LIGHT / (C_LIGHT / 1550e-9 + 50e6) * 1e9
    b.write_text(f"B1: {lam_b:.7f}\nB2: 1549.0\n")
    assert main(["calibrate", "pairs", str(a), str(b), "--criterion", "100MHz", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["count"] == 1 and d["pairs"][0]["label_a"] == "A1" and d["pairs"][0]["label_b"] == "B1"
    assert d["pairs"][0]["detuning_hz"] == pytest.approx(-50e6, abs=2e5)
    assert main(["calibrate", "pairs", str(a), str(b), "--criterion", "10MHz"]) == 0
    assert "0 pair(s)" in capsys.readouterr().out
    assert main(["calibrate", "pairs", str(a), str(tmp_path / "missing.csv")]) == 2
    err = capsys.readouterr().err
    assert "missing.csv" in err and "Traceback" not in err


def test_cli_station_procedures_on_the_simulated_lab(capsys):
    cfg = "configs/lab.yaml"
    assert main(["calibrate", "wavelength", "--config", cfg, "--sim", "--wavelength", "1553.8nm", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["passed"] and d["settings"]["instrument"] == "read_laser"
    # the simulated detectors start unbiased (safe state): the check fails with exit 3, no traceback
    assert main(["calibrate", "bias", "--config", cfg, "--sim", "--json"]) == 3
    out = capsys.readouterr()
    assert json.loads(out.out)["passed"] is False and "not biased" in out.err
    assert main(["calibrate", "wavelength", "--config", cfg, "--sim", "--wavelength", "2000nm"]) == 2
    assert main(["calibrate", "wavelength", "--config", cfg, "--sim", "--wavelength", "1553.8nm",
                 "--laser", "nolaser"]) == 2
    assert main(["calibrate"]) == 2
