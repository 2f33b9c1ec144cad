"""Sercalo VP1 VOA: the serial driver (assumed command table) with its simulator, and the
analog-voltage variant driven through a partner instrument's analog output."""
from __future__ import annotations

import math

from limits import classify

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from drivers import sercalo_vp1
from drivers.sercalo_vp1 import COMMANDS, AnalogVOA, Calibration, SercaloVP1
from labctl.errors import InputError, InstrumentError, SettingError
from labctl.instrument.protocols import Attenuator, check_role
from labctl.instrument.transport import ModelTransport, NullTransport
from labctl.testing import RecordingTransport, expected_protocol
from sim_instruments.models import load_model_class, make_model
from sim_instruments.models.sercalo_vp1 import SercaloVP1Model


def sim(driver_options=None, **model_options):
    model = SercaloVP1Model("voa", **model_options)
    t = ModelTransport("sim://voa", model, read_termination=SercaloVP1.read_termination,
                       write_termination=SercaloVP1.write_termination)
    return model, SercaloVP1("voa", t, **(driver_options or {}))


# -- serial VP1: class contract and the command table ----------------------------------------------
def test_class_attributes_and_role():
    assert SercaloVP1.read_termination == "\r\n" and SercaloVP1.write_termination == "\r\n"
    assert SercaloVP1.baud_rate == 9600 and SercaloVP1.transport_kind == "serial"
    assert SercaloVP1.roles == ("attenuator",)
    assert load_model_class(SercaloVP1.simulator) is SercaloVP1Model
    voa = SercaloVP1("voa", RecordingTransport())
    assert check_role(voa, "attenuator") == [] and isinstance(voa, Attenuator)
    # every command word the driver sends comes from the one table
    assert SercaloVP1.attenuation_db.get_cmd == COMMANDS["attenuation"]
    assert SercaloVP1.attenuation_db.set_cmd.startswith(COMMANDS["attenuation"] + " ")
    assert SercaloVP1.idn_query == COMMANDS["identify"]


def test_set_attenuation_checks_the_repeated_value():
    with expected_protocol(SercaloVP1, [("ATT 12.500", "ATT 12.500")]) as voa:
        voa.set_attenuation(12.5)


def test_set_attenuation_with_units():
    with expected_protocol(SercaloVP1, [("ATT 3.000", "ATT 3.000")]) as voa:
        voa.set_attenuation("3 dB")


def test_attenuation_query():
    with expected_protocol(SercaloVP1, [("ATT", "ATT 7.250")]) as voa:
        assert voa.attenuation() == 7.25


def test_idn():
    with expected_protocol(SercaloVP1, [("ID", "ID VP1-15-9N|12345|2.1")]) as voa:
        assert voa.idn() == "Sercalo VP1-15-9N, s/n 12345, firmware 2.1"


def test_error_reply_becomes_instrument_error():
    with expected_protocol(SercaloVP1, [("ATT 12.000", "ERR 2")]) as voa:
        with pytest.raises(InstrumentError, match="invalid parameter") as exc:
            voa.set_attenuation(12)
        assert exc.value.command == "ATT 12.000"
    with expected_protocol(SercaloVP1, [("ATT", "ERR overtemperature")]) as voa:
        with pytest.raises(InstrumentError, match="overtemperature"):
            voa.attenuation()


def test_wrong_confirmation_is_an_error():
    with expected_protocol(SercaloVP1, [("ATT 12.000", "ATT 11.000")]) as voa:
        with pytest.raises(InstrumentError, match="confirmed '11.000'"):
            voa.set_attenuation(12)
    with expected_protocol(SercaloVP1, [("ATT", "WVL 1550.000")]) as voa:
        with pytest.raises(InstrumentError, match="unexpected reply"):
            voa.attenuation()


def test_safe_state_is_maximum_attenuation():
    with expected_protocol(SercaloVP1, [("ATT 40.000", "ATT 40.000")]) as voa:
        voa.safe_state()
    with expected_protocol(SercaloVP1, [("ATT 25.000", "ATT 25.000")], max_db=30) as voa:
        voa.restrict("attenuation_db", 0, 25)
        voa.safe_state()


def test_snapshot():
    with expected_protocol(SercaloVP1, [("ID", "ID VP1|1|1.0"), ("ATT", "ATT 5.000")]) as voa:
        snap = voa.snapshot()
    assert snap["settings"] == {"attenuation_db": 5.0}
    assert snap["idn"] == "Sercalo VP1, s/n 1, firmware 1.0"


@pytest.mark.parametrize("value", [40.001, -0.1, float("nan"), float("inf"), "3 V", "50 dB", None, True])
def test_out_of_range_is_rejected_before_any_write(value):
    t = RecordingTransport()
    voa = SercaloVP1("voa", t)
    with pytest.raises((SettingError, InputError)):
        voa.set_attenuation(value)
    assert t.written == []


@pytest.mark.parametrize("opts", [{"max_db": -1}, {"min_db": 10, "max_db": 5}, {"max_db": "x"}, {"foo": 1}])
def test_bad_options(opts):
    with pytest.raises(InputError):
        SercaloVP1("voa", RecordingTransport(), **opts)


@settings(max_examples=150)
@given(db=st.floats(allow_nan=True, allow_infinity=True), hi=st.floats(1.0, 60.0))
def test_value_validation_property(db, hi):
    t = RecordingTransport(responder=lambda m: m)    # a device that repeats every set
    voa = SercaloVP1("voa", t, max_db=hi)
    kind = classify(db, 0.0, hi)
    if kind == "edge":
        try:
            voa.set_attenuation(db)
        except SettingError:
            pass
        return
    if kind == "in":
        voa.set_attenuation(db)
        assert len(t.written) == 1 and t.written[0] == f"ATT {min(max(db, 0.0), hi) + 0.0:.3f}"
    else:
        with pytest.raises(SettingError):
            voa.set_attenuation(db)
        assert t.written == []


# -- serial VP1: simulator -----------------------------------------------------------------------------
def test_model_wire_format():
    m = SercaloVP1Model("voa")
    m.feed(b"ID\r\n")
    assert m.take() == b"ID VP1|SIM0001|1.0\r\n"
    m.feed(b"ATT 12.5\r\n")
    assert m.take() == b"ATT 12.500\r\n"
    m.feed(b"ATT\r\n")
    assert m.take() == b"ATT 12.500\r\n"
    for bad, reply in ((b"ATT 41\r\n", b"ERR 2\r\n"), (b"ATT x\r\n", b"ERR 2\r\n"), (b"WVL\r\n", b"ERR 1\r\n")):
        m.feed(bad)
        assert m.take() == reply
    assert m.attenuation_db == 12.5
    m.power_cycle()
    assert m.attenuation_db == 0.0


def test_sim_round_trip():
    model, voa = sim()
    assert voa.idn() == "Sercalo VP1, s/n SIM0001, firmware 1.0"
    voa.set_attenuation(17.25)
    assert model.attenuation_db == 17.25
    assert voa.attenuation() == 17.25
    voa.safe_state()
    assert model.attenuation_db == 40.0
    assert voa.snapshot()["settings"]["attenuation_db"] == 40.0


def test_sim_device_refusal_reaches_the_user():
    model, voa = sim({"max_db": 50}, max_db=30)     # driver allows more than the unit does
    with pytest.raises(InstrumentError, match="ERR 2"):
        voa.set_attenuation(45)
    assert model.attenuation_db == 0.0
    voa.set_attenuation(30)                          # link still in step afterwards
    assert voa.attenuation() == 30.0


def test_sim_make_model():
    m = make_model(SercaloVP1.simulator, "voa", max_db=35, power_up_db=35)
    assert isinstance(m, SercaloVP1Model) and m.attenuation_db == 35.0


# -- analog VP1 through a partner's analog output --------------------------------------------------------
CAL = [[0.0, 0.6], [1.0, 2.0], [2.0, 8.0], [3.0, 20.0], [4.0, 35.0]]


class StubAnalogOut:
    def __init__(self):
        self.calls = []

    def set_voltage(self, pin, volts):
        self.calls.append((pin, volts))


class FakeStation:
    def __init__(self, **instruments):
        self.instruments = dict(instruments)


def analog(calibration=CAL, resource="via:redpitaya/AOUT1", bind=True):
    voa = AnalogVOA("voa", NullTransport(resource), calibration=calibration)
    partner = StubAnalogOut()
    if bind:
        voa.bind(FakeStation(redpitaya=partner, voa=voa))
    return voa, partner


def test_analog_sets_partner_voltage_through_calibration():
    voa, rp = analog()
    assert check_role(voa, "attenuator") == []
    voa.set_attenuation(5.0)                       # halfway between 2 dB @ 1 V and 8 dB @ 2 V
    assert rp.calls == [("AOUT1", pytest.approx(1.5))]
    assert voa.attenuation() == 5.0
    voa.set_attenuation("20 dB")
    assert rp.calls[-1] == ("AOUT1", pytest.approx(3.0))
    voa.safe_state()
    assert rp.calls[-1] == ("AOUT1", pytest.approx(4.0)) and voa.attenuation() == 35.0
    snap = voa.snapshot()
    assert snap["idn"] == "Sercalo VP1 (analog) via redpitaya/AOUT1"
    assert snap["settings"]["control_voltage"] == pytest.approx(4.0)
    assert snap["resource"] == "via:redpitaya/AOUT1"


def test_analog_idn_does_not_query():
    voa, _ = analog(bind=False)
    assert voa.idn() == "Sercalo VP1 (analog) via redpitaya/AOUT1"


def test_analog_decreasing_curve_and_unsorted_points():
    voa, rp = analog(calibration=[[5.0, 1.0], [0.0, 30.0], [2.5, 10.0]])
    voa.set_attenuation(20.0)
    assert rp.calls[-1][1] == pytest.approx(1.25)
    assert voa.attenuation_range == (1.0, 30.0)
    voa.safe_state()
    assert rp.calls[-1][1] == pytest.approx(0.0)


def test_analog_limits_checked_before_partner_is_touched():
    voa, rp = analog()
    for bad in (0.5, 35.1, float("nan"), "3 V"):
        with pytest.raises((SettingError, InputError)):
            voa.set_attenuation(bad)
    voa.restrict("attenuation_db", 1, 25)
    with pytest.raises(SettingError):
        voa.set_attenuation(30)
    assert rp.calls == []
    voa.safe_state()
    assert voa.attenuation() == 25.0 and rp.calls[-1][1] == pytest.approx(3 + 5 / 15)


def test_analog_not_bound_and_not_set():
    voa, _ = analog(bind=False)
    with pytest.raises(InstrumentError, match="not bound"):
        voa.set_attenuation(10)
    with pytest.raises(InstrumentError, match="not set yet"):
        voa.attenuation()


def test_analog_bind_errors():
    voa = AnalogVOA("voa", NullTransport("via:redpitaya/AOUT1"), calibration=CAL)
    with pytest.raises(InputError, match="not in the station.*instruments: awg"):
        voa.bind(FakeStation(voa=voa, awg=object()))
    with pytest.raises(InputError, match="no set_voltage"):
        voa.bind(FakeStation(voa=voa, redpitaya=object()))


@pytest.mark.parametrize("resource", ["via:redpitaya", "via:/AOUT1", "TCPIP::1.2.3.4::INSTR", "via:a/b/c"])
def test_analog_bad_resource(resource):
    with pytest.raises(InputError, match="via:<instrument>/<pin>"):
        AnalogVOA("voa", NullTransport(resource), calibration=CAL)
    with pytest.raises(InputError):
        AnalogVOA.open_transport(resource, name="voa")


def test_analog_open_transport_gives_null_transport():
    t = AnalogVOA.open_transport("via:redpitaya/AOUT1", name="voa")
    assert isinstance(t, NullTransport) and t.resource == "via:redpitaya/AOUT1"


@pytest.mark.parametrize("cal, match", [
    (None, "need at least two"),
    ([[0, 1]], "need at least two"),
    ([[0, 1], [1, "x"]], "cannot read"),
    ([[0, 1], [1, float("nan")]], "finite"),
    ([[0, 1], [0, 2]], "appears twice"),
    ([[0, 1], [1, 5], [2, 3]], "not monotonic"),
    ([[0, 1], [1, 1]], "not monotonic"),
    ([[0, -1], [1, 5]], "negative"),
])
def test_analog_calibration_validation(cal, match):
    with pytest.raises(InputError, match=match):
        AnalogVOA("voa", NullTransport("via:rp/AOUT1"), calibration=cal)


def test_analog_needs_calibration_option():
    with pytest.raises(InputError, match="needs a calibration"):
        AnalogVOA("voa", NullTransport("via:rp/AOUT1"))
    with pytest.raises(InputError, match="unknown"):
        AnalogVOA("voa", NullTransport("via:rp/AOUT1"), calibration=CAL, gain=2)


@st.composite
def monotonic_curves(draw):
    n = draw(st.integers(2, 8))
    volts = draw(st.lists(st.floats(-10, 10, allow_nan=False), min_size=n, max_size=n, unique=True))
    dbs = draw(st.lists(st.floats(0, 60, allow_nan=False), min_size=n, max_size=n, unique=True))
    volts, dbs = sorted(volts), sorted(dbs)
    assume(min(np.diff(volts)) > 1e-3 and min(np.diff(dbs)) > 1e-3)
    if draw(st.booleans()):
        dbs = dbs[::-1]
    return [[v, d] for v, d in zip(volts, dbs)]


@settings(max_examples=150)
@given(curve=monotonic_curves(), frac=st.floats(0, 1))
def test_calibration_round_trip_db_to_volts_to_db(curve, frac):
    cal = Calibration(curve)
    lo, hi = cal.db_range
    db = lo + frac * (hi - lo)
    v = cal.volts_for(db)
    assert cal.volt_range[0] - 1e-9 <= v <= cal.volt_range[1] + 1e-9
    assert cal.db_at(v) == pytest.approx(db, abs=1e-6 * max(1.0, hi))
    # and through the driver, to the partner
    voa = AnalogVOA("voa", NullTransport("via:rp/AOUT1"), calibration=curve)
    rp = StubAnalogOut()
    voa.bind(FakeStation(rp=rp))
    voa.set_attenuation(min(max(db, lo), hi))
    assert cal.db_at(rp.calls[-1][1]) == pytest.approx(db, abs=1e-6 * max(1.0, hi))


@settings(max_examples=100)
@given(db=st.floats(allow_nan=True, allow_infinity=True))
def test_calibration_inverse_rejects_outside(db):
    cal = Calibration(CAL)
    if math.isfinite(db) and 0.6 <= db <= 35.0:
        assert 0.0 <= cal.volts_for(db) <= 4.0
    else:
        with pytest.raises(ValueError):
            cal.volts_for(db)


def test_module_documents_assumption():
    assert "not public" in sercalo_vp1.__doc__ and "COMMANDS" in sercalo_vp1.__doc__
