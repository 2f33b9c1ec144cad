"""Red Pitaya STEMlab 125-14 driver: SCPI strings and CR LF, SYST:ERR? after every set, limits,
the acquisition sequence, the simulator (YAML + Python handlers, twin hooks) through ModelTransport,
and the text commands through real pyvisa on the pyvisa-sim YAML."""
from __future__ import annotations

import math
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from drivers.redpitaya import DIGITAL_PINS, RedPitaya
from labctl.errors import InputError, InstrumentError, SettingError, UnitError
from labctl.instrument.protocols import AnalogIn, AnalogOut, check_role
from labctl.instrument.transport import ModelTransport, VisaTransport
from labctl.testing import RecordingTransport, expected_protocol
from sim_instruments.models import load_model_class
from sim_instruments.models.base import VISA_DIR
from sim_instruments.models.redpitaya import BUFFER_SIZE, RedPitayaModel, decode_float_block

OK = '0,"No error"'
YAML = VISA_DIR / "redpitaya.yaml"
RESOURCE = "TCPIP::rp-f0a1b2.local::5000::SOCKET"
FAST = {"poll_interval": "0 s"}


def sim(driver_options=None, **model_options):
    model = RedPitayaModel("rp", **model_options)
    t = ModelTransport("sim://rp", model, read_termination=RedPitaya.read_termination,
                       write_termination=RedPitaya.write_termination, timeout=0.5)
    return model, RedPitaya("rp", t, **{**FAST, **(driver_options or {})})


def acquisition(n=4, dec=1, trig="NOW", ch=1, gain="LV", delay=8192, stat=("TD",), data="{0.1,0.2,-0.3,0.4}"):
    pairs = [("ACQ:RST", None), ("ACQ:DATA:FORMAT ASCII", None), ("ACQ:DATA:UNITS VOLTS", None),
             (f"ACQ:DEC {dec}", None), (f"ACQ:SOUR{ch}:GAIN {gain}", None), (f"ACQ:TRIG:DLY {delay}", None),
             ("SYST:ERR?", OK), ("ACQ:START", None), (f"ACQ:TRIG {trig}", None)]
    pairs += [("ACQ:TRIG:STAT?", s) for s in stat]
    pairs += [("ACQ:TRIG:FILL?", "1"), (f"ACQ:SOUR{ch}:DATA:OLD:N? {n}", data), ("SYST:ERR?", OK)]
    return pairs


# -- class contract -----------------------------------------------------------------------------
def test_class_attributes_and_roles():
    assert RedPitaya.read_termination == "\r\n" and RedPitaya.write_termination == "\r\n"
    assert RedPitaya.error_query == "SYST:ERR?" and RedPitaya.roles == ("analog_in", "analog_out")
    assert load_model_class(RedPitaya.simulator) is RedPitayaModel
    rp = RedPitaya("rp", RecordingTransport())
    assert check_role(rp, "analog_in") == [] and check_role(rp, "analog_out") == []
    assert isinstance(rp, AnalogIn) and isinstance(rp, AnalogOut)
    assert {"aout0.voltage", "aout3.voltage", "ain0.voltage", "decimation"} <= set(RedPitaya.setting_paths())


def test_model_terminators_are_cr_lf():
    model = RedPitayaModel()
    model.feed(b"*IDN?\r\nANALOG:PIN AOUT2,1.34\r\nANALOG:PIN? AOUT2\r\n")
    assert model.take() == b"REDPITAYA,INSTR2020,0,01-02\r\n1.34\r\n"


# -- message-list protocol tests ----------------------------------------------------------------
def test_set_voltage_then_error_queue():
    pairs = [("ANALOG:PIN AOUT0,1.2", None), ("SYST:ERR?", OK), ("ANALOG:PIN AOUT3,0", None), ("SYST:ERR?", OK),
             ("ANALOG:PIN AOUT1,0.12346", None), ("SYST:ERR?", OK)]
    with expected_protocol(RedPitaya, pairs) as rp:
        rp.set_voltage("AOUT0", 1.2)
        rp.set_voltage("aout3", "0 V")
        rp.set_voltage("AOUT1", "123.456 mV")


def test_read_voltage_slow_pins():
    pairs = [("ANALOG:PIN? AIN2", "1.234"), ("ANALOG:PIN? AOUT1", "0.5")]
    with expected_protocol(RedPitaya, pairs) as rp:
        assert rp.read_voltage("AIN2") == pytest.approx(1.234)
        assert rp.read_voltage("AOUT1") == pytest.approx(0.5)


def test_acquire_now():
    with expected_protocol(RedPitaya, acquisition(), **FAST) as rp:
        data = rp.acquire(4)
    assert data.dtype == float and list(data) == [0.1, 0.2, -0.3, 0.4]


def test_acquire_external_trigger_waits_for_td_and_uses_options():
    pairs = acquisition(n=3, dec=64, trig="EXT_PE", ch=2, gain="HV", delay=100, stat=("WAIT", "WAIT", "TD"),
                        data="{ 1.5, -2.0 ,3e-3 }")
    with expected_protocol(RedPitaya, pairs, fast_input_gain={"IN2": "hv"}, **FAST) as rp:
        data = rp.acquire(3, decimation=64, trigger="ext_pe", channel=2, trigger_delay=100)
    assert data == pytest.approx([1.5, -2.0, 0.003])


def test_acquire_with_trigger_level_and_no_fill_wait():
    pairs = acquisition(trig="CH1_PE")
    pairs.insert(6, ("ACQ:TRIG:LEV 0.05", None))
    pairs.remove(("ACQ:TRIG:FILL?", "1"))
    with expected_protocol(RedPitaya, pairs, wait_fill=False, **FAST) as rp:
        rp.acquire(4, trigger="CH1_PE", trigger_level="50 mV")


def test_acquire_setup_error_is_raised_before_starting():
    pairs = acquisition()[:6] + [("SYST:ERR?", '-109,"Missing parameter"'), ("SYST:ERR?", OK)]
    with expected_protocol(RedPitaya, pairs, name="rp") as rp:
        with pytest.raises(InstrumentError) as e:
            rp.acquire(4)
    assert e.value.instrument == "rp" and "ACQ:DEC 1" in e.value.command and "-109" in str(e.value)


def test_short_trace_is_an_error():
    with expected_protocol(RedPitaya, acquisition(data="{0.1,0.2}"), **FAST) as rp:
        with pytest.raises(InstrumentError, match="returned 2 samples, 4 requested"):
            rp.acquire(4)


def test_error_queue_entries_become_instrument_errors():
    pairs = [("ANALOG:PIN AOUT0,1.2", None), ("SYST:ERR?", '9000,"Failed to set pin value: Value out of range"'),
             ("SYST:ERR?", '-113,"Undefined header"'), ("SYST:ERR?", OK)]
    with expected_protocol(RedPitaya, pairs, name="rp") as rp:
        with pytest.raises(InstrumentError) as e:
            rp.set_voltage("AOUT0", 1.2)
    err = e.value
    assert err.instrument == "rp" and err.command == "ANALOG:PIN AOUT0,1.2"
    assert "Failed to set pin value" in str(err) and "-113" in str(err)


def test_connect_discards_stale_errors():
    with expected_protocol(RedPitaya, [("SYST:ERR?", '-113,"Undefined header"'), ("SYST:ERR?", OK)]) as rp:
        rp.connect()


def test_digital_pins():
    pairs = [("DIG:PIN:DIR OUT,DIO0_P", None), ("SYST:ERR?", OK), ("DIG:PIN DIO0_P,1", None), ("SYST:ERR?", OK),
             ("DIG:PIN? LED3", "0")]
    with expected_protocol(RedPitaya, pairs) as rp:
        rp.set_digital_direction("dio0_p", "out")
        rp.set_digital("DIO0_P", True)
        assert rp.digital("LED3") is False


def test_safe_state_zeroes_all_analog_outputs():
    pairs = [x for i in range(4) for x in ((f"ANALOG:PIN AOUT{i},0", None), ("SYST:ERR?", OK))]
    with expected_protocol(RedPitaya, pairs) as rp:
        rp.safe_state()


# -- limits: rejected before anything is written ---------------------------------------------------
@pytest.mark.parametrize("call", [
    lambda r: r.set_voltage("AOUT0", 1.9), lambda r: r.set_voltage("AOUT0", -0.1),
    lambda r: r.set_voltage("AOUT4", 1.0), lambda r: r.set_voltage("AIN0", 1.0), lambda r: r.set_voltage(0, 1.0),
    lambda r: r.set_voltage("AOUT0", float("nan")), lambda r: r.read_voltage("IN3"),
    lambda r: r.acquire(0), lambda r: r.acquire(BUFFER_SIZE + 1), lambda r: r.acquire(10, decimation=3),
    lambda r: r.acquire(10, trigger="LATER"), lambda r: r.acquire(10, channel=3), lambda r: r.acquire(True),
    lambda r: r.acquire(10, trigger_level="25 V"), lambda r: r.acquire(10, timeout_s=-1),
    lambda r: r.acquire(10, trigger_delay=1.5), lambda r: r.set_digital("DIO8_P", True),
    lambda r: r.set_digital("LED0", 1), lambda r: r.set_digital_direction("LED0", "BOTH"),
])
def test_invalid_arguments_write_nothing(call):
    with expected_protocol(RedPitaya, []) as rp:
        with pytest.raises(SettingError):
            call(rp)


def test_unit_errors_and_option_errors():
    with expected_protocol(RedPitaya, []) as rp:
        with pytest.raises(UnitError):
            rp.set_voltage("AOUT0", "1 A")
    with pytest.raises(InputError):
        RedPitaya("rp", RecordingTransport(), fast_input_gain={3: "LV"})
    with pytest.raises(InputError):
        RedPitaya("rp", RecordingTransport(), fast_input_gain={1: "MV"})


def test_station_limit_narrows_one_output():
    with expected_protocol(RedPitaya, [("ANALOG:PIN AOUT1,1.5", None), ("SYST:ERR?", OK)]) as rp:
        rp.restrict("aout0.voltage", 0.0, 1.0)
        with pytest.raises(SettingError, match="range 0 V to 1 V"):
            rp.set_voltage("AOUT0", 1.5)
        rp.set_voltage("AOUT1", 1.5)


@settings(max_examples=80)
@given(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(["AOUT0", "AOUT1", "AOUT2", "AOUT3"]))
def test_analog_output_validation(v, pin):
    rp = RedPitaya("rp", RecordingTransport())
    if math.isfinite(v) and 0.0 <= v <= 1.8:
        assert rp.check(f"{pin.lower()}.voltage", v) == v
    elif not math.isfinite(v) or v < -1e-9 or v > 1.8 + 1e-9:
        with pytest.raises(SettingError):
            rp.check(f"{pin.lower()}.voltage", v)


@settings(max_examples=60)
@given(st.integers(-5, 70000))
def test_decimation_validation(d):
    with expected_protocol(RedPitaya, []) as rp:
        if d not in [2 ** k for k in range(17)]:
            with pytest.raises(SettingError):
                rp.acquire(10, decimation=d)
            with pytest.raises(SettingError):
                rp.check("decimation", d)
        else:
            assert rp.check("decimation", d) == d


# -- simulator round trips (ModelTransport) -------------------------------------------------------
def test_simulator_round_trip():
    model, rp = sim()
    assert rp.idn() == "REDPITAYA,INSTR2020,0,01-02"
    rp.set_voltage("AOUT1", 1.25)
    assert model.prop("aout1") == 1.25 and rp.read_voltage("AOUT1") == pytest.approx(1.25)
    assert rp.read_voltage("AIN0") == pytest.approx(0.5, abs=0.01)
    data = rp.acquire(1000, decimation=8, trigger="EXT_PE")
    assert data.shape == (1000,) and abs(data.mean() - 0.05) < 0.005 and 0 < data.std() < 0.01
    assert model.prop("decimation") == 8 and model.triggered
    assert rp.read_voltage("IN2") == pytest.approx(-0.03, abs=0.005)
    snap = rp.snapshot()
    assert snap["settings"]["aout1"] == {"voltage": 1.25} and snap["settings"]["data_units"] == "VOLTS"
    rp.safe_state()
    assert all(model.prop(f"aout{i}") == 0.0 for i in range(4))


def test_twin_hooks_feed_inputs_and_traces():
    model, rp = sim()
    seen = []
    model.input_source = lambda pin, t: (seen.append(pin), 2.5)[1]
    model.trace_source = lambda ch, n: np.linspace(-0.5, 0.5, n) * ch
    assert rp.read_voltage("AIN3") == 2.5 and seen == ["AIN3"]
    model.input_source = lambda pin, t: 5.0  # clipped like the real 0–3.3 V input
    assert rp.read_voltage("AIN0") == 3.3
    data = rp.acquire(BUFFER_SIZE, trigger="NOW", channel=1)
    assert data == pytest.approx(np.linspace(-0.5, 0.5, BUFFER_SIZE), abs=1e-6)


def test_simulated_errors_and_trigger_timeout():
    model, rp = sim({"trigger_timeout": "30 ms", "poll_interval": "1 ms"})
    rp.write("ANALOG:PIN AOUT0,2.5")  # bypassing the driver's own check: the server refuses it
    with pytest.raises(InstrumentError, match='9000,"Failed to set pin value'):
        rp.check_errors("ANALOG:PIN AOUT0,2.5")
    rp.write("ACQ:DEC 3")
    with pytest.raises(InstrumentError, match="-109"):
        rp.check_errors("ACQ:DEC 3")
    model.external_trigger = False
    with pytest.raises(InstrumentError, match="no EXT_PE trigger within 0.03 s"):
        rp.acquire(10, trigger="EXT_PE")
    assert model.log[-1] == "ACQ:STOP"


def test_simulated_raw_and_binary_formats_and_power_cycle():
    model = RedPitayaModel(seed=1)
    model.trace_source = lambda ch, n: np.full(n, 0.25)
    for cmd in ("ACQ:START", "ACQ:TRIG NOW", "ACQ:DATA:UNITS RAW"):
        model.handle(cmd)
    assert model.handle("ACQ:SOUR1:DATA:OLD:N? 3") == "{2048,2048,2048}"
    model.handle("ACQ:DATA:FORMAT BIN")
    model.handle("ACQ:DATA:UNITS VOLTS")
    model.feed(b"ACQ:SOUR1:DATA:LAT:N? 5\r\n")
    blk = model.take()
    assert blk.startswith(b"#220") and blk.endswith(b"\r\n") and len(blk) == 2 + 2 + 20 + 2
    assert list(decode_float_block(blk)) == [0.25] * 5
    model.handle("ACQ:RST")
    assert model.prop("data_format") == "ASCII" and model.prop("data_units") == "VOLTS"
    model.handle("ANALOG:PIN AOUT0,1")
    model.power_cycle()
    assert model.prop("aout0") == 0.0 and not model.triggered


def test_simulated_digital_pins():
    model, rp = sim()
    rp.set_digital_direction("DIO1_N", "OUT")
    rp.set_digital("DIO1_N", True)
    assert model.digital["DIO1_N"] == 1 and model.direction["DIO1_N"] == "OUT"
    assert rp.digital("DIO1_N") is True and set(model.digital) == set(DIGITAL_PINS)


def test_virtual_voa_drives_an_analog_output(tmp_path):
    from labctl.config import load_station
    from labctl.station import Station

    f = tmp_path / "station.yaml"
    f.write_text(textwrap.dedent(f"""\
        station: test
        instruments:
          redpitaya:
            driver: drivers.redpitaya.RedPitaya
            resource: {RESOURCE}
            role: [analog_in, analog_out]
            limits: {{aout1.voltage: [0 V, 1.5 V]}}
        """))
    with Station(load_station(f), sim=True).connect() as st_:
        rp = st_["redpitaya"]
        rp.set_voltage("AOUT1", "1.2 V")
        with pytest.raises(SettingError):
            rp.set_voltage("AOUT1", "1.6 V")
        assert st_.lab.models["redpitaya"].prop("aout1") == 1.2
        assert st_.safe_state() == []


# -- real pyvisa on the pyvisa-sim YAML (text commands) -----------------------------------------
@pytest.fixture
def visa_rp():
    t = VisaTransport(RESOURCE, backend=f"{YAML}@sim", name="rp", read_termination="\r\n",
                      write_termination="\r\n", timeout=1.0)
    rp = RedPitaya("rp", t)
    yield rp
    rp.close()


def test_pyvisa_text_commands(visa_rp):
    rp = visa_rp
    assert rp.idn() == "REDPITAYA,INSTR2020,0,01-02"
    rp.set_voltage("AOUT2", 0.9)
    assert rp.read_voltage("AOUT2") == pytest.approx(0.9)
    assert rp.read_voltage("AIN1") == pytest.approx(0.75)
    rp.decimation = 1024
    assert rp.decimation == 1024
    rp.data_units = "RAW"
    assert rp.data_units == "RAW"
    rp.safe_state()
    assert rp.read_voltage("AOUT2") == 0.0


def test_pyvisa_unknown_command_reaches_the_error_queue(visa_rp):
    visa_rp.write("ANALOG:PIN AOUT9,1")
    with pytest.raises(InstrumentError, match='-113,"Undefined header"'):
        visa_rp.check_errors("ANALOG:PIN AOUT9,1")
    visa_rp.check_errors()  # drained
