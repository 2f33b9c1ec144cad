"""Phase lock (labctl.phaselock): fringe fit, closed loop against a small interferometer plant
(phase = drift + 2π V / V_2π, fringe = offset + A cos(phase) + noise; drift = random walk +
thermal ramp), rail jumps, lock loss and re-acquisition, and the real drivers on the simulated Red
Pitaya and MDT694. The plant is this file's own: its true phase is the independent check of what
the lock claims."""
from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest

from drivers.redpitaya import RedPitaya
from drivers.thorlabs_mdt694 import MDT694
from labctl.errors import InputError, InstrumentError
from labctl.instrument.transport import ModelTransport
from labctl.phaselock import (LOCKED, NO_FRINGE, FringeCalibration, LockGains, LockTelemetry, PhaseLock, TraceReader,
                              fit_fringe, lock_options)
from sim_instruments.models.mdt694 import MDT694Model
from sim_instruments.models.redpitaya import RedPitayaModel

PERIOD = 50e-6


class Interferometer:
    """phase(t, V) = drift(t) + 2π V / V_2π; drift: thermal ramp + random walk, one step per
    50 µs cycle; ``signal`` = offset + A cos(phase) + white noise. Records the true phase of
    every cycle it was read in."""

    def __init__(self, *, v2pi=12.0, amplitude=0.5, offset=0.02, noise_v=0.005, walk=0.05, thermal=0.1,
                 phase0=0.3, seed=1):
        self.v2pi, self.amplitude, self.offset, self.noise_v = v2pi, amplitude, offset, noise_v
        self.walk, self.thermal = walk, thermal
        self.rng = np.random.default_rng(seed)
        self.drift = phase0
        self.true: list[float] = []

    def advance(self, n=1):
        steps = self.thermal * PERIOD + self.walk * math.sqrt(PERIOD) * self.rng.normal(size=n)
        path = self.drift + np.cumsum(steps)
        self.drift = float(path[-1])
        return path

    def phase(self, volts, drift=None):
        return (self.drift if drift is None else drift) + 2 * math.pi * volts / self.v2pi

    def sample(self, volts):
        self.advance(1)
        ph = self.phase(volts)
        self.true.append(ph)
        return self.offset + self.amplitude * math.cos(ph) + self.noise_v * self.rng.normal()


class FakeStretcher:
    """PiezoDriver stand-in: remembers the output, 0..150 V (or a narrower range)."""

    def __init__(self, lo=0.0, hi=150.0):
        self.voltage_range = (lo, hi)
        self.v = 0.0
        self.writes = 0

    def set_voltage(self, v, confirm=False):
        assert self.voltage_range[0] - 1e-9 <= v <= self.voltage_range[1] + 1e-9
        self.v = v
        self.writes += 1


class LaggingStretcher(FakeStretcher):
    """A serial piezo driver whose unconfirmed writes are still in flight: the output changes only
    at the ``lag``-th detector read after the write (the emulator's pty thread, or 0.6 ms of RS-232
    at 115200 baud).
    A confirmed write (read back) is applied before it returns."""

    def __init__(self, lag=3, **kw):
        super().__init__(**kw)
        self.lag, self.pending = lag, []

    def set_voltage(self, v, confirm=False):
        assert self.voltage_range[0] - 1e-9 <= v <= self.voltage_range[1] + 1e-9
        self.writes += 1
        if confirm:
            self.pending.clear()
            self.v = v
        else:
            self.pending.append([self.lag, v])

    def tick(self):
        for p in self.pending:
            p[0] -= 1
        while self.pending and self.pending[0][0] <= 0:
            self.v = self.pending.pop(0)[1]


class FakeDetector:
    def __init__(self, plant, stretcher):
        self.plant, self.stretcher = plant, stretcher

    def read_voltage(self, pin):
        assert pin == "AIN0"
        if hasattr(self.stretcher, "tick"):
            self.stretcher.tick()
        return self.plant.sample(self.stretcher.v)


def make(plant=None, lo=0.0, hi=150.0, **kw):
    plant = plant or Interferometer()
    st = FakeStretcher(lo, hi)
    det = FakeDetector(plant, st)
    return plant, st, PhaseLock(det, "AIN0", st, **kw)


def true_error(plant, setpoint, last_n):
    ph = np.asarray(plant.true[-last_n:])
    return np.angle(np.exp(1j * (ph - setpoint)))


# -- fringe fit (independent synthetic data) ------------------------------------------------------
def test_fit_fringe_recovers_period_amplitude_offset_phase():
    rng = np.random.default_rng(3)
    v = np.linspace(0, 60, 150)
    s = 0.1 + 0.8 * np.cos(1.1 + 2 * np.pi * v / 17.3) + 0.01 * rng.normal(size=v.size)
    cal = fit_fringe(v, s)
    assert cal.volts_per_2pi == pytest.approx(17.3, rel=2e-3)
    assert cal.amplitude_v == pytest.approx(0.8, rel=1e-2)
    assert cal.offset_v == pytest.approx(0.1, abs=3e-3)
    assert math.cos(cal.phase_at_zero_rad - 1.1) > 0.999
    assert cal.residual_rms_v == pytest.approx(0.01, rel=0.2)
    # with a known period only A, offset and phase are fitted
    cal2 = fit_fringe(v, s, volts_per_2pi=17.3)
    assert cal2.amplitude_v == pytest.approx(0.8, rel=1e-2) and cal2.volts_per_2pi == 17.3


def test_calibration_sweep_waits_for_a_lagging_actuator():
    """Each fringe reading must belong to its set point even when plain writes arrive late."""
    def wrapped(x):
        return (x + math.pi) % (2 * math.pi) - math.pi

    plant = Interferometer(walk=0.0, thermal=0.0, noise_v=0.002, phase0=0.3)
    st = LaggingStretcher(lag=3)
    cal = PhaseLock(FakeDetector(plant, st), "AIN0", st).calibrate_fringe(points=200)
    assert cal.volts_per_2pi == pytest.approx(plant.v2pi, rel=0.01)
    assert cal.amplitude_v == pytest.approx(plant.amplitude, rel=0.02)
    assert wrapped(cal.phase_at_zero_rad - 0.3) == pytest.approx(0.0, abs=0.03)
    # control: with unconfirmed writes each reading belongs to the set point two steps back
    st = LaggingStretcher(lag=3)
    lagging = PhaseLock(FakeDetector(plant, st), "AIN0", st)
    lagging._write_confirmed = lagging._write
    shifted = lagging.calibrate_fringe(points=200)
    step = 150.0 / 199
    assert wrapped(shifted.phase_at_zero_rad - 0.3) == pytest.approx(-2 * math.pi * 2 * step / plant.v2pi, abs=0.05)


def test_fit_fringe_refuses_flat_signal_and_short_sweep():
    rng = np.random.default_rng(0)
    v = np.linspace(0, 10, 100)
    with pytest.raises(InstrumentError, match="no fringe"):
        fit_fringe(v, 0.05 + 0.002 * rng.normal(size=v.size))
    with pytest.raises(InstrumentError, match="fringes"):   # 0.6 fringes: the period is not measurable
        fit_fringe(v, np.cos(2 * np.pi * v / 16.0))


# -- closed loop against the plant --------------------------------------------------------------------
def test_lock_holds_against_realistic_drift_visibility_loss_below_one_percent():
    plant = Interferometer(walk=0.05, thermal=0.1, noise_v=0.01)   # 0.05 rad/√s walk, 0.1 rad/s thermal, 2 % noise
    _, st, lock = make(plant)
    cal = lock.calibrate_fringe()
    assert cal.volts_per_2pi == pytest.approx(12.0, rel=5e-3)
    lock.engage()
    lock.run_cycles(1000)
    n = 100_000                                     # 5 s of 50 µs cycles
    tel = lock.run_cycles(n)
    err = true_error(plant, lock.setpoint_rad, n)
    loss = float(np.mean(1 - np.cos(err)))
    assert loss < 0.01
    assert loss < 2e-3                               # in fact: dither (4.5e-4) + noise
    assert tel.locked_fraction > 0.999 and tel.lock_losses == 0 and tel.state == LOCKED
    assert tel.error_rms_rad < 0.05                  # measured error: detector noise / A ≈ 0.02 rad
    assert abs(tel.error_mean_rad) < 5e-3
    # the measured error bounds the true residual (the detector noise only adds)
    assert float(np.sqrt(np.mean(err ** 2))) < max(tel.error_rms_rad, lock.dither_rad) * 2
    assert tel.visibility_loss == pytest.approx(1 - np.mean(np.cos(err)), abs=2e-3)


def test_side_of_fringe_setpoint_off_zero_crossing():
    plant = Interferometer(offset=0.3, amplitude=0.4)
    _, st, lock = make(plant, setpoint_rad=-1.0)
    lock.calibrate_fringe()
    lock.engage()
    lock.run_cycles(20_000)
    err = true_error(plant, -1.0, 10_000)
    assert np.sqrt(np.mean(err ** 2)) < 0.06
    assert lock.locked


def test_rail_triggers_2pi_jump_without_losing_lock():
    plant = Interferometer(thermal=-20.0)        # fast drift: the output walks into the upper rail
    _, st, lock = make(plant, lo=0.0, hi=30.0)
    lock.calibrate_fringe()
    lock.engage()
    lock.run_cycles(500)
    n = 40_000
    tel = lock.run_cycles(n)
    assert tel.jumps >= 3
    assert tel.lock_losses == 0 and tel.relocks == 0
    assert tel.locked_fraction > 0.999
    assert tel.output_max_v < 30.0 - 0.9 * lock.rail_margin_v   # the jump comes before the rail (± dither)
    err = true_error(plant, lock.setpoint_rad, n)
    assert np.max(np.abs(err)) < lock.tolerance_rad
    assert [e["kind"] for e in tel.events].count("jump") == tel.jumps


def test_jumps_refine_a_wrong_volts_per_2pi():
    plant = Interferometer(thermal=-20.0, noise_v=0.002)
    _, st, lock = make(plant, lo=0.0, hi=30.0)
    cal = lock.calibrate_fringe()          # the sweep sees the drift too: V_2π ~1 % long here
    true_v2pi = plant.v2pi                 # a jump is instantaneous: it measures the plant's own V_2π
    wrong = FringeCalibration(cal.amplitude_v, cal.offset_v, true_v2pi * 1.04, cal.phase_at_zero_rad)
    lock2 = PhaseLock(lock.detector, "AIN0", st, calibration=wrong)
    lock2.engage()
    first = lock2.run_cycles(8000)
    assert first.jumps >= 1
    tel = lock2.run_cycles(40_000)
    assert tel.lock_losses == 0
    assert lock2.volts_per_2pi == pytest.approx(true_v2pi, rel=0.005)
    assert tel.error_max_rad < 0.15        # later jumps no longer kick the phase


def test_phase_kick_triggers_lock_loss_then_reacquisition():
    plant = Interferometer()
    _, st, lock = make(plant)
    lock.calibrate_fringe()
    lock.engage()
    lock.run_cycles(2000)
    assert lock.locked
    plant.drift += 3.0                        # a bump: the phase jumps by ~π
    tel = lock.run_cycles(4000)
    kinds = [e["kind"] for e in tel.events]
    assert tel.lock_losses == 1 and tel.relocks == 1
    assert kinds.index("lock_lost") < kinds.index("reacquired") < kinds.index("relocked")
    assert lock.state == LOCKED and lock.locked
    assert 0.9 < tel.locked_fraction < 1.0
    err = true_error(plant, lock.setpoint_rad, 1000)
    assert np.sqrt(np.mean(err ** 2)) < 0.05


def test_small_kick_is_absorbed_without_lock_loss():
    plant = Interferometer()
    _, st, lock = make(plant)
    lock.engage()                               # calibrates first
    lock.run_cycles(1000)
    plant.drift += 1.0
    tel = lock.run_cycles(2000)
    assert tel.lock_losses == 0 and lock.locked


def test_fringe_amplitude_collapse_is_lock_loss_and_no_fringe_until_it_returns():
    plant = Interferometer()
    _, st, lock = make(plant)                   # set point π/2: the zero crossing, blind without the dither
    lock.engage()
    lock.run_cycles(2000)
    amp = plant.amplitude
    plant.amplitude = 0.0                       # light gone: the signal sits at the set point
    tel = lock.run_cycles(3000)
    assert tel.lock_losses == 1
    assert lock.state == NO_FRINGE and not lock.locked
    assert any("amplitude" in e["detail"] for e in tel.events if e["kind"] == "lock_lost")
    plant.amplitude = amp
    tel = lock.run_cycles(3000)
    assert tel.relocks == 1 and lock.locked


def test_locked_flag_follows_the_error():
    plant = Interferometer()
    _, st, lock = make(plant)
    s = lock.step()                             # engages: settling, not locked yet
    assert s.state == "locking" and not s.locked
    assert lock.wait_locked(1000)
    s = lock.step()
    assert s.locked and abs(s.error_rad) < lock.tolerance_rad and s.state == LOCKED


def test_background_thread_and_telemetry_reset():
    plant = Interferometer()
    _, st, lock = make(plant)
    lock.engage()
    lock.start()
    time.sleep(0.3)
    with pytest.raises(InputError):
        lock.step()                             # not while the thread runs
    tel = lock.telemetry()                      # resets
    lock.stop()
    assert tel.cycles > 1000 and tel.locked_fraction > 0.99
    rest = lock.telemetry()                     # only what ran after the reset
    assert rest.cycles + tel.cycles <= lock.cycle and rest.cycles < lock.cycle
    d = tel.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["rms_error"] == pytest.approx(tel.error_rms_rad) and "locked_fraction" in d


def test_telemetry_to_dict_is_json_safe_before_lock():
    plant = Interferometer()
    _, st, lock = make(plant)
    lock.calibrate_fringe()
    tel = LockTelemetry.from_acc(lock._acc, lock)
    d = tel.to_dict()
    assert d["rms_error"] is None and d["cycles"] == 0
    json.dumps(d, allow_nan=False)


# -- argument checks ------------------------------------------------------------------------------------
def test_setpoint_at_a_fringe_extremum_is_refused():
    plant, st = Interferometer(), FakeStretcher()
    for sp in (0.0, math.pi, 0.1, -3.0):
        with pytest.raises(InputError, match="extremum"):
            PhaseLock(FakeDetector(plant, st), "AIN0", st, setpoint_rad=sp)


def test_unstable_gains_and_bad_options_are_refused():
    plant, st = Interferometer(), FakeStretcher()
    det = FakeDetector(plant, st)
    with pytest.raises(InputError, match="unstable"):
        PhaseLock(det, "AIN0", st, gains=LockGains(kp=0.5, ki=30000))
    with pytest.raises(InputError):
        PhaseLock(det, "AIN0", st, gains=(0.0, 0.0, 0.0))
    with pytest.raises(InputError, match="fast input"):
        PhaseLock(det, "AIN0", st, batch=10)
    with pytest.raises(InputError, match="dither"):
        PhaseLock(det, "AIN0", st, dither_rad=0.2)
    with pytest.raises(InputError):
        PhaseLock(det, "AIN0", object())


def test_stretcher_range_smaller_than_a_fringe_is_an_instrument_error():
    plant = Interferometer(v2pi=12.0)
    _, st, lock = make(plant, lo=0.0, hi=13.0, volts_per_2pi=12.0)
    with pytest.raises(InstrumentError, match="less than one fringe"):
        lock.calibrate_fringe()


# -- through the real drivers on the simulated instruments ----------------------------------------------
def sim_pair():
    rm = RedPitayaModel("redpitaya")
    rp = RedPitaya("redpitaya", ModelTransport("sim://redpitaya", rm, read_termination=RedPitaya.read_termination,
                                                write_termination=RedPitaya.write_termination))
    rp.connect()
    mm = MDT694Model("stretcher", voltage_limit=150)
    st = MDT694("stretcher", ModelTransport("sim://stretcher", mm, read_termination=MDT694.read_termination,
                                            write_termination=MDT694.write_termination), voltage_limit=150)
    st.connect()
    return rm, rp, mm, st


def test_lock_through_redpitaya_and_mdt694_drivers_on_simulators():
    rm, rp, mm, st = sim_pair()
    plant = Interferometer(offset=1.2, noise_v=0.003)   # slow input AIN0: 0..3.3 V, so an offset
    rm.input_source = lambda pin, t: plant.sample(mm.voltage)
    lock = PhaseLock(rp, "AIN0", st)
    cal = lock.calibrate_fringe()
    assert cal.volts_per_2pi == pytest.approx(12.0, rel=5e-3)
    assert cal.offset_v == pytest.approx(1.2, abs=0.01)
    lock.engage()
    lock.run_cycles(1000)
    n0 = mm.set_count
    n = 20_000
    t = time.perf_counter()
    tel = lock.run_cycles(n)
    rate = n / (time.perf_counter() - t)
    print(f"\nlock through drivers (AIN0 + MDT694, per cycle): {rate:,.0f} cycles/s; "
          f"rms error {tel.error_rms_rad:.4f} rad; visibility loss {tel.visibility_loss:.2e}")
    assert mm.set_count - n0 == n                   # one XV write per cycle, nothing read back
    assert tel.locked_fraction > 0.999 and tel.lock_losses == 0
    err = true_error(plant, lock.setpoint_rad, n)
    assert np.mean(1 - np.cos(err)) < 0.01
    assert rate > 5_000                             # measured ~25–35 kHz; the floor keeps CI calm


def test_batched_trace_reader_through_acquire():
    rm, rp, mm, st = sim_pair()
    plant = Interferometer(noise_v=0.003)
    K = 200

    def trace(ch, n):
        # sample i of the buffer is cycle i (samples_per_cycle = 1); the model fills both channels
        # for every acquisition, so the plant advances by one block on channel 1 only
        path = plant.drift + np.cumsum(plant.thermal * PERIOD + plant.walk * math.sqrt(PERIOD)
                                       * plant.rng.normal(size=n))
        ph = path + 2 * math.pi * mm.voltage / plant.v2pi
        if ch == 1:
            plant.drift = float(path[K - 1])
            plant.true.extend(ph[:K])
        return plant.offset + plant.amplitude * np.cos(ph) + plant.noise_v * plant.rng.normal(size=n)

    rm.trace_source = trace
    lock = PhaseLock(rp, "IN1", st, batch=K, gains=LockGains(kp=0.3, ki=30.0))
    assert isinstance(lock.reader, TraceReader) and lock.reader.n_samples == K
    lock.calibrate_fringe()
    lock.engage()
    lock.run_cycles(20 * K)
    n = 200 * K
    t = time.perf_counter()
    tel = lock.run_cycles(n)
    rate = n / (time.perf_counter() - t)
    print(f"\nlock through drivers (IN1 acquire, {K} cycles per read): {rate:,.0f} cycles/s; "
          f"rms error {tel.error_rms_rad:.4f} rad")
    assert tel.locked_fraction > 0.99 and tel.lock_losses == 0
    err = true_error(plant, lock.setpoint_rad, n)
    assert np.mean(1 - np.cos(err)) < 0.01
    assert rate > 20_000


def test_trace_reader_windows_average_the_aux_pulse():
    class Det:
        def acquire(self, n, decimation=1, trigger="NOW", channel=1, trigger_delay=None):
            self.n = n
            return np.arange(n, dtype=float)

    r = TraceReader(Det(), 1, cycles=3, samples_per_cycle=97.65625, window=(12, 2))
    vals = r.read()
    starts = np.round(np.arange(3) * 97.65625 + 12)
    assert np.allclose(vals, starts + 0.5)
    with pytest.raises(InputError, match="buffer"):
        TraceReader(Det(), 1, cycles=200, samples_per_cycle=97.65625)


# -- station configuration ---------------------------------------------------------------------------------
LOCK_STATION = """\
station: lock-test
instruments:
  redpitaya:
    driver: drivers.redpitaya.RedPitaya
    resource: TCPIP::192.168.10.30::5000::SOCKET
    role: [analog_in, analog_out]
  stretcher:
    driver: drivers.thorlabs_mdt694.MDT694
    resource: serial:///dev/ttyUSB1
    role: piezo_driver
    options: {voltage_limit: 150}
    limits: {output_voltage: [0 V, 120 V]}
channels:
  lock_detector: {instrument: redpitaya, output: IN1}
  phase_actuator: {instrument: stretcher}
lock:
  setpoint: 0.5 pi
  gains: {kp: 0.2, ki: 2 kHz}
  tolerance: 0.25 rad
  loss_cycles: 30
  pin: AIN0
  dither: 20 mrad
"""


def test_from_station_reads_lock_section(tmp_path):
    from labctl.config import load_station
    from labctl.station import Station

    f = tmp_path / "station.yaml"
    f.write_text(LOCK_STATION)
    cfg = load_station(f)
    opts = lock_options(cfg)
    assert opts["setpoint_rad"] == pytest.approx(math.pi / 2)
    assert opts["gains"] == LockGains(kp=0.2, ki=2000.0)
    with Station(cfg, sim=True).connect() as station:
        rm, mm = station.lab.models["redpitaya"], station.lab.models["stretcher"]
        plant = Interferometer(offset=1.2)
        rm.input_source = lambda pin, t: plant.sample(mm.voltage)
        lock = PhaseLock.from_station(station)
        assert lock.detector_pin == "AIN0" and lock.tolerance_rad == 0.25 and lock.loss_cycles == 30
        assert lock.output_range == (0.0, 120.0)       # the station's safety limit on the MDT694
        tel = lock.run_cycles(5000)                   # calibrates and engages on first use
        assert lock.locked and tel.lock_losses == 0
        assert PhaseLock.from_station(station, pin="AIN1", dither_rad=0.0).detector_pin == "AIN1"


def test_lock_section_errors_name_file_and_line(tmp_path):
    from labctl.config import load_station

    f = tmp_path / "station.yaml"
    f.write_text(LOCK_STATION.replace("  loss_cycles: 30", "  loss_cylces: 30"))
    with pytest.raises(InputError) as ei:
        lock_options(load_station(f))
    assert ei.value.file == str(f) and ei.value.line == LOCK_STATION.splitlines().index("  loss_cycles: 30") + 1
    f.write_text(LOCK_STATION.replace("0.25 rad", "0.25 V"))
    with pytest.raises(InputError, match="tolerance"):
        lock_options(load_station(f))
