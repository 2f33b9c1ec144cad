"""Fault plans (schema, file:line errors) and every fault kind injected in-process on the simulated
station, observed through the unchanged drivers."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from labctl.config import load_station
from labctl.errors import ConnectionLost, InputError, InstrumentError, InstrumentTimeout
from labctl.faults import (KINDS, FaultInjector, LinkDropped, injector_for, load_fault_plan,
                           loads_fault_plan)
from labctl.station import Station

REPO = Path(__file__).resolve().parent.parent
LAB = REPO / "configs" / "lab.yaml"
PLANS = sorted((REPO / "configs" / "faults").glob("*.yaml"))


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def cfg():
    return load_station(LAB)


@pytest.fixture
def station(cfg):
    names = ["afg", "awg", "voa", "stretcher", "snspd_bias", "pump_laser", "redpitaya"]
    st = Station(cfg, sim=True, seed=1).connect(names)
    yield st
    st.close()


def inject(station, text, autopoll=None, **kw):
    return FaultInjector(loads_fault_plan(text, "plan.yaml"), station.lab, **kw).install(autopoll=autopoll)


# ---- the shipped plans ---------------------------------------------------------------------------
def test_one_shipped_plan_per_kind():
    kinds = set()
    for p in PLANS:
        plan = load_fault_plan(p)
        kinds |= {f.kind for f in plan.faults}
        assert all(f.note for f in plan.faults), p
        assert p.read_text().lstrip().startswith("#"), f"{p.name}: say what the run should do"
    assert kinds == set(KINDS)


@pytest.mark.parametrize("path", PLANS, ids=[p.stem for p in PLANS])
def test_shipped_plans_fit_the_lab_station(path, cfg, station):
    plan = load_fault_plan(path)
    plan.check(cfg)
    FaultInjector(plan, station.lab).check()


# ---- validation ----------------------------------------------------------------------------------
@pytest.mark.parametrize("text, line, words", [
    ("- {instrument: afg, kind: timout, after_commands: 3}", 1, ["unknown fault kind", "timeout"]),
    ("- instrument: afg\n  kind: timeout\n", 1, ["exactly one trigger"]),
    ("- instrument: afg\n  kind: timeout\n  after_commands: 2\n  every: 3\n", 4, ["exactly one trigger"]),
    ("- instrument: afg\n  kind: latency\n  after_commands: 2\n", 1, ["needs 'delay'"]),
    ("- instrument: afg\n  kind: latency\n  after_commands: 2\n  delay: 200\n", 4, ["no unit"]),
    ("- instrument: afg\n  kind: latency\n  after_commands: 2\n  delay: 2 V\n", 4, ["time"]),
    ("- instrument: afg\n  kind: timeout\n  after_commands: -1\n", 3, ["whole number"]),
    ("- instrument: afg\n  kind: timeout\n  after_commands: 1\n  cout: 2\n", 4, ["unknown key", "count"]),
    ("- instrument: afg\n  kind: timeout\n  after_commands: 1\n  kick: 1 rad\n", 4, ["phase_disturbance"]),
    ("- kind: timeout\n  after_commands: 1\n", 1, ["'instrument' is missing"]),
    ("- {instrument: afg, kind: timeout, at_s: -2}", 1, ["≥ 0"]),
    ("- {instrument: afg, kind: timeout, every: 0}", 1, ["≥ 1"]),
    ("- {instrument: afg, kind: timeout, after_commands: 1, count: 0}", 1, ["count"]),
    ("- {instrument: afg, kind: timeout, after_commands: 1, duration: -1 s}", 1, ["negative"]),
    ("- {instrument: afg, kind: mode_hop, after_commands: 1, offset: 3 V}", 1, ["length"]),
    ("- {instrument: afg, kind: latched_detector, after_commands: 1, port: one}", 1, ["whole number"]),
    ("instrument: afg\nkind: timeout\n", 1, ["unknown key 'instrument'"]),
    ("faults: 3\n", 1, ["list of faults"]),
    ("faults: []\n", 1, ["no faults"]),
    ("", 1, ["empty"]),
    ("- 3\n", 1, ["must be a mapping"]),
    ("- {instrument: afg, kind: timeout, after_commands: 1}\n- {instrument: afg, kind: timeout, after_commands: 1, after_commands: 2}\n",
     2, ["duplicate key"]),
])
def test_plan_errors_name_file_and_line(text, line, words):
    with pytest.raises(InputError) as ei:
        loads_fault_plan(text, "plan.yaml")
    e = ei.value
    msg = e.render()
    assert "plan.yaml" in msg
    assert e.line == line, msg
    for w in words:
        assert w in msg, msg


def test_all_errors_of_a_plan_are_reported():
    with pytest.raises(InputError) as ei:
        loads_fault_plan("- {instrument: afg, kind: nope, after_commands: 1}\n"
                         "- {instrument: afg, kind: timeout}\n", "p.yaml")
    msg = ei.value.render()
    assert "p.yaml:1" in msg and "p.yaml:2" in msg


def test_mapping_form_and_quantities():
    plan = loads_fault_plan("description: two faults\nfaults:\n"
                            "  - {instrument: afg, kind: latency, every: 5, times: 2, delay: 20 ms}\n"
                            "  - {instrument: pump_laser, kind: mode_hop, at_s: 1.5 s, offset: 0.1 nm}\n"
                            "  - {instrument: stretcher, kind: phase_disturbance, at_s: 2, kick: 0.5 pi}\n")
    assert plan.description == "two faults"
    a, b, c = plan.faults
    assert a.params["delay"] == pytest.approx(0.02) and a.trigger == "every" and a.times == 2
    assert b.at == 1.5 and b.params["offset"] == pytest.approx(1e-10)
    assert c.params["kick"] == pytest.approx(math.pi / 2) and c.line == 5


def test_plan_against_the_station(cfg, station):
    plan = loads_fault_plan("- {instrument: afgg, kind: timeout, after_commands: 1}", "p.yaml")
    with pytest.raises(InputError, match="did you mean 'afg'"):
        plan.check(cfg)
    for text, why in [("- {instrument: afg, kind: mode_hop, after_commands: 1}", "not a laser"),
                      ("- {instrument: afg, kind: latched_detector, after_commands: 1}", "detector bias"),
                      ("- {instrument: snspd_bias, kind: latched_detector, after_commands: 1, port: 5}", "no SIM928 in port 5"),
                      ("- {instrument: voa, kind: error_queue, after_commands: 1}", "no error queue")]:
        with pytest.raises(InputError, match=why) as ei:
            inject(station, text)
        assert ei.value.file == "plan.yaml" and ei.value.line == 1


def test_injection_needs_a_simulated_station(cfg):
    plan = loads_fault_plan("- {instrument: afg, kind: timeout, after_commands: 1}", "p.yaml")
    with pytest.raises(InputError, match="--sim"):
        FaultInjector(plan, object())
    real = Station(cfg, sim=False)  # not connected: no lab, no emulator side-car
    with pytest.raises(InputError, match="simulated or emulated"):
        injector_for(plan, real)


# ---- every kind through the drivers ---------------------------------------------------------------
def test_timeout(station):
    afg = station["afg"]
    inj = inject(station, "- {instrument: afg, kind: timeout, after_commands: 0, count: 2}")
    for _ in range(2):
        with pytest.raises(InstrumentTimeout):
            afg.ch1.period  # noqa: B018
    assert afg.ch1.period > 0        # the third query is answered
    assert [e["kind"] for e in inj.events] == ["timeout"]
    assert inj.events[0]["instrument"] == "afg" and inj.events[0]["details"]["messages"] == 2


def test_timeout_counts_queries_only(station):
    voa = station["voa"]
    inj = inject(station, "- {instrument: afg, kind: timeout, after_commands: 0}")
    station["afg"].write("SOURce1:PULSe:HOLD WIDTh")          # a command without a reply
    with pytest.raises(InstrumentTimeout):
        station["afg"].query("*OPC?")
    assert voa.attenuation() >= 0  # other instruments untouched
    inj.remove()


def test_garbled_reply(station):
    stretcher = station["stretcher"]
    stretcher.set_voltage(12.0)
    inject(station, "- {instrument: stretcher, kind: garbled_reply, after_commands: 0}")
    with pytest.raises(InstrumentError):
        stretcher.voltage()
    assert stretcher.voltage() == pytest.approx(12.0, abs=0.1)


def test_garbled_reply_scpi(station):
    afg = station["afg"]
    inject(station, "- {instrument: afg, kind: garbled_reply, after_commands: 0}")
    with pytest.raises(InstrumentError, match="unexpected reply"):
        afg.ch1.period  # noqa: B018


def test_cut_reply(station):
    afg = station["afg"]
    inject(station, "- {instrument: afg, kind: cut_reply, after_commands: 0}")
    with pytest.raises(InstrumentTimeout):
        afg.ch1.period  # noqa: B018
    with pytest.raises(InstrumentError):   # half a reply in front of the next answer
        afg.ch1.period  # noqa: B018
    afg.transport.discard_input()
    assert afg.ch1.period > 0


def test_error_queue(station):
    afg = station["afg"]
    inj = inject(station, "- {instrument: afg, kind: error_queue, after_commands: 0, entry: '-222,\"Data out of range\"'}")
    with pytest.raises(InstrumentError, match="-222"):
        afg.ch1.period = 20e-6
    afg.ch1.period = 20e-6                # the queue is empty again
    assert inj.events[0]["details"]["entry"] == '-222,"Data out of range"'


def test_error_queue_on_the_laser(station):
    laser = station["pump_laser"]
    inject(station, "- {instrument: pump_laser, kind: error_queue, after_commands: 0, entry: '201,VALUE OUT OF RANGE'}")
    with pytest.raises(InstrumentError, match="201"):
        laser.check_errors("test")


def test_reboot_loses_settings(station):
    stretcher, voa, afg = station["stretcher"], station["voa"], station["afg"]
    default_period = afg.ch1.period
    stretcher.set_voltage(30.0)
    voa.set_attenuation(12.5)
    afg.ch1.period = 2 * default_period
    inj = inject(station, "- {instrument: stretcher, kind: reboot, after_commands: 0}\n"
                          "- {instrument: voa, kind: reboot, after_commands: 0}\n"
                          "- {instrument: afg, kind: reboot, after_commands: 0}")
    assert stretcher.voltage() == 0.0
    assert voa.attenuation() == 0.0
    assert afg.ch1.period == pytest.approx(default_period)
    assert sorted(e["instrument"] for e in inj.events) == ["afg", "stretcher", "voa"]


def test_dropped_connection(station):
    afg = station["afg"]
    clock = FakeClock()
    inj = inject(station, "- {instrument: afg, kind: dropped_connection, after_commands: 1, duration: 2 s}", clock=clock)
    afg.ch1.period  # noqa: B018  (one command passes)
    with pytest.raises(ConnectionLost) as ei:
        afg.ch1.period  # noqa: B018
    assert isinstance(ei.value, LinkDropped)
    with pytest.raises(ConnectionLost, match="not connected"):
        afg.ch1.period  # noqa: B018
    clock.t += 2.5
    afg.transport.discard_input()
    assert afg.ch1.period > 0
    assert inj.events[0]["details"]["down_s"] == 2.0
    inj.remove()
    assert not station.lab.models["afg"].disconnected


def test_latency(station):
    waits = []
    inj = inject(station, "- {instrument: voa, kind: latency, after_commands: 0, count: 2, delay: 150 ms}",
                 sleep=waits.append)
    for _ in range(3):
        station["voa"].attenuation()
    assert waits == [0.15, 0.15]
    assert inj.events[0]["details"]["delay_s"] == 0.15


def test_latency_really_waits(station):
    import time
    inject(station, "- {instrument: voa, kind: latency, after_commands: 0, delay: 100 ms}")
    t = time.monotonic()
    station["voa"].attenuation()
    assert time.monotonic() - t >= 0.09


def test_latched_detector(station):
    model = station.lab.models["snspd_bias"]
    inj = inject(station, "- {instrument: snspd_bias, kind: latched_detector, after_commands: 0, port: 2}")
    assert not model.latched(2)
    station["snspd_bias"].set_bias(0.5, port=2)
    assert model.latched(2) and not model.latched(1)
    station["snspd_bias"].port(2).reset_latch(0.0)      # the recovery the run uses
    assert not model.latched(2)
    assert inj.events[0]["details"]["port"] == 2


def test_phase_disturbance_with_and_without_twin(station):
    class Twin:
        kicks: list = []

        def kick_phase(self, rad):
            self.kicks.append(rad)

    inj = inject(station, "- {instrument: stretcher, kind: phase_disturbance, after_commands: 0, kick: 0.5 pi}",
                 twin=Twin())
    station["stretcher"].voltage()
    assert Twin.kicks == [pytest.approx(math.pi / 2)]
    assert inj.events[0]["details"]["effect"] == "interferometer phase kicked"
    inj.remove()
    station.lab.twin = None
    inj = inject(station, "- {instrument: stretcher, kind: phase_disturbance, after_commands: 0, kick: 1 rad}")
    station["stretcher"].voltage()
    assert inj.events[0]["details"]["effect"].startswith("none")


def test_mode_hop(station):
    laser = station["pump_laser"]
    laser.set_wavelength(1550e-9, wait=True)
    inject(station, "- {instrument: pump_laser, kind: mode_hop, after_commands: 0, offset: 50 pm}")
    assert laser.measured_wavelength() == pytest.approx(1550.05e-9, abs=3e-12)
    laser.set_wavelength(1550e-9, wait=True)           # a new set point clears the hop
    assert laser.measured_wavelength() == pytest.approx(1550e-9, abs=3e-12)


# ---- triggers -------------------------------------------------------------------------------------
def test_every_and_times(station):
    voa = station["voa"]
    model = station.lab.models["voa"]
    inj = inject(station, "- {instrument: voa, kind: timeout, every: 3, times: 2}")
    outcomes = []
    for _ in range(9):
        try:
            voa.attenuation()
            outcomes.append("ok")
        except InstrumentTimeout:
            outcomes.append("timeout")
            model.take(None)
    assert outcomes == ["ok", "ok", "timeout", "ok", "ok", "timeout", "ok", "ok", "ok"]
    assert [e["command_number"] for e in inj.events] == [3, 6]


def test_at_s_by_message_and_by_poll(station):
    clock = FakeClock()
    inj = inject(station, "- {instrument: voa, kind: timeout, at_s: 5}\n"
                          "- {instrument: pump_laser, kind: mode_hop, at_s: 5, offset: 1 nm}", clock=clock,
                 autopoll=False)
    station["voa"].attenuation()
    inj.poll()
    assert inj.events == []
    clock.t += 5
    inj.poll()                                   # the laser is silent: poll applies the hop
    assert [e["kind"] for e in inj.events] == ["mode_hop"]
    assert station.lab.models["pump_laser"].mode_hop_nm == 1.0
    with pytest.raises(InstrumentTimeout):       # reply faults wait for the next message
        station["voa"].attenuation()
    assert inj.events[1]["time"] == pytest.approx(5.0)


def test_autopoll_thread(station):
    import time
    inj = inject(station, "- {instrument: snspd_bias, kind: latched_detector, at_s: 0.05, port: 1}")
    deadline = time.monotonic() + 5
    while not inj.events and time.monotonic() < deadline:
        time.sleep(0.01)
    inj.remove()
    assert station.lab.models["snspd_bias"].latched(1)


def test_duration_window(station):
    clock = FakeClock()
    inject(station, "- {instrument: voa, kind: garbled_reply, after_commands: 0, duration: 1 s}", clock=clock)
    for _ in range(3):
        with pytest.raises(InstrumentError):
            station["voa"].attenuation()
    clock.t += 1.5
    assert station["voa"].attenuation() >= 0


def test_remove_unhooks(station):
    inj = inject(station, "- {instrument: voa, kind: timeout, after_commands: 0, count: 5}")
    inj.remove()
    assert station["voa"].attenuation() >= 0
    assert station.lab.models["voa"].interceptors == []


def test_injector_for_sim_station(station, cfg):
    plan = loads_fault_plan("- {instrument: afg, kind: timeout, after_commands: 0}", "p.yaml")
    inj = injector_for(plan, station)
    assert isinstance(inj, FaultInjector)


def test_full_reboot_drops_the_link_for_its_duration(station):
    clock = FakeClock()
    stretcher = station["stretcher"]
    stretcher.set_voltage(20.0)
    inj = inject(station, "- {instrument: stretcher, kind: reboot, after_commands: 0, duration: 1 s}", clock=clock)
    with pytest.raises(ConnectionLost):
        stretcher.voltage()
    with pytest.raises(ConnectionLost, match="not connected"):
        stretcher.voltage()
    clock.t += 1.5
    stretcher.transport.discard_input()
    assert stretcher.voltage() == 0.0
    assert inj.events[0]["details"]["down_s"] == 1.0
