"""SRS SIM900 + SIM928 driver: the SNDT/GETN? pass-through (exact strings, #3nnn blocks, the
terminators inside and after a block), the LEXE?/LCME? check after every module command, limits,
reset_latch, safe_state, and simulator round trips (latched detectors, CONN, missing modules)."""
from __future__ import annotations

import math
import textwrap

import pytest
from hypothesis import given, settings, strategies as st

from drivers.srs_sim900 import SIM900, SIM928Port
from labctl.errors import InputError, InstrumentError, InstrumentTimeout, SettingError
from labctl.instrument.protocols import DetectorBias, check_role
from labctl.instrument.transport import ModelTransport
from labctl.testing import RecordingTransport, expected_protocol
from sim_instruments.models import load_model_class
from sim_instruments.models.sim900 import SIM900Model

FAST = {"poll_interval": "0 s"}


def block(data: str) -> str:
    return f"#3{len(data):03d}{data}"


def checked(port: int, command: str) -> list:
    """A module command followed by the driver's LEXE?/LCME? check, both answering 0."""
    return [(f'SNDT {port},"{command}"', None),
            (f'SNDT {port},"LEXE?"', None), (f"GETN? {port},128", block("0\r\n")),
            (f'SNDT {port},"LCME?"', None), (f"GETN? {port},128", block("0\r\n"))]


def query(port: int, command: str, reply: str) -> list:
    return [(f'SNDT {port},"{command}"', None), (f"GETN? {port},128", block(reply + "\r\n"))]


def sim(driver_options=None, model_cls=SIM900Model, **model_options):
    model = model_cls("bias", **model_options)
    t = ModelTransport("sim://bias", model, read_termination=SIM900.read_termination,
                       write_termination=SIM900.write_termination, timeout=0.5)
    opts = {"ports": [1, 2], "module_timeout": "50 ms", "poll_interval": "1 ms", **(driver_options or {})}
    return model, SIM900("bias", t, **opts)


# -- class contract -----------------------------------------------------------------------------
def test_class_attributes_roles_and_ports():
    assert SIM900.write_termination == "\n" and SIM900.read_termination == "\n"
    assert SIM900.baud_rate == 9600 and SIM900.roles == ("detector_bias",)
    assert load_model_class(SIM900.simulator) is SIM900Model
    drv = SIM900("bias", RecordingTransport(), ports=[1, 3])
    assert check_role(drv, "detector_bias") == [] and isinstance(drv, DetectorBias)
    assert isinstance(drv.port1, SIM928Port) and isinstance(drv.port3, DetectorBias)
    assert not hasattr(drv, "port2") and drv.default_port == 1
    assert "port1.voltage" in SIM900.setting_paths() and "port8.output" in SIM900.setting_paths()


@pytest.mark.parametrize("opts", [{"ports": []}, {"ports": [0]}, {"ports": [9]}, {"ports": [1, 1]},
                                  {"ports": "1"}, {"ports": [True]}, {"ports": [1], "default_port": 2}])
def test_bad_port_options_are_input_errors(opts):
    with pytest.raises(InputError):
        SIM900("bias", RecordingTransport(), **opts)


# -- message-list protocol tests ----------------------------------------------------------------
def test_set_bias_is_sndt_then_error_check():
    with expected_protocol(SIM900, checked(1, "VOLT 0.750"), ports=[1]) as b:
        b.port1.set_bias(0.75)


def test_bias_reads_the_module_reply_from_the_getn_block():
    with expected_protocol(SIM900, query(2, "VOLT?", "+0.750"), ports=[1, 2]) as b:
        assert b.port2.bias() == pytest.approx(0.75)


def test_set_bias_rounds_to_1_mV_and_accepts_units():
    pairs = checked(1, "VOLT -1.235") + checked(1, "VOLT 0.012")
    with expected_protocol(SIM900, pairs, ports=[1]) as b:
        b.set_bias(-1.2346)
        b.set_bias("12 mV")


def test_output_on_off_and_state():
    pairs = checked(1, "OPON") + checked(1, "OPOF") + query(1, "EXON?", "1")
    with expected_protocol(SIM900, pairs, ports=[1]) as b:
        b.set_output(True)
        b.port1.set_output(False)
        assert b.port1.output is True


def test_reply_arriving_in_pieces_is_reassembled():
    pairs = [('SNDT 1,"VOLT?"', None), ("GETN? 1,128", block("")), ("GETN? 1,128", block("+1.2")),
             ("GETN? 1,128", block("50\r\n"))]
    with expected_protocol(SIM900, pairs, ports=[1], **FAST) as b:
        assert b.bias() == pytest.approx(1.25)


def test_module_error_names_port_command_and_code():
    pairs = [('SNDT 1,"VOLT 0.750"', None),
             ('SNDT 1,"LEXE?"', None), ("GETN? 1,128", block("1\r\n")),
             ('SNDT 1,"LCME?"', None), ("GETN? 1,128", block("0\r\n"))]
    with expected_protocol(SIM900, pairs, name="snspd", ports=[1]) as b:
        with pytest.raises(InstrumentError) as e:
            b.set_bias(0.75)
    assert e.value.instrument == "snspd.port1" and e.value.command == 'SNDT 1,"VOLT 0.750"'
    assert "execution error 1 (Illegal value)" in str(e.value)


def test_reset_latch_goes_to_zero_and_back():
    pairs = query(1, "VOLT?", "+0.820") + checked(1, "VOLT 0.000") + checked(1, "VOLT 0.820")
    with expected_protocol(SIM900, pairs, ports=[1]) as b:
        b.reset_latch(settle_s=0)


def test_safe_state_zeroes_every_port_then_switches_it_off():
    pairs = checked(1, "VOLT 0.000") + checked(1, "OPOF") + checked(2, "VOLT 0.000") + checked(2, "OPOF")
    with expected_protocol(SIM900, pairs, ports=[1, 2]) as b:
        b.safe_state()


def test_connect_flushes_identifies_and_clears_errors():
    pairs = [("FLSH 1", None), ('SNDT 1,"TERM CRLF"', None)] + \
        query(1, "*IDN?", "Stanford_Research_Systems,SIM928,s/n012345,ver2.2") + \
        query(1, "LEXE?", "0") + query(1, "LCME?", "2")
    with expected_protocol(SIM900, pairs, ports=[1]) as b:
        b.connect()  # a stale command error is cleared with a warning, not raised


def test_connect_rejects_another_module_type():
    pairs = [("FLSH 1", None), ('SNDT 1,"TERM CRLF"', None)] + \
        query(1, "*IDN?", "Stanford_Research_Systems,SIM910,s/n1,ver1")
    with expected_protocol(SIM900, pairs, ports=[1]) as b:
        with pytest.raises(InstrumentError, match="not a SIM928"):
            b.connect()


def test_malformed_getn_reply_is_an_error():
    with expected_protocol(SIM900, [('SNDT 1,"VOLT?"', None), ("GETN? 1,128", "+0.75")], ports=[1]) as b:
        with pytest.raises(InstrumentError, match="expected a block"):
            b.bias()


# -- limits: rejected before anything is written ---------------------------------------------------
@pytest.mark.parametrize("call", [
    lambda b: b.set_bias(20.5), lambda b: b.set_bias(-21), lambda b: b.set_bias(float("inf")),
    lambda b: b.set_bias("1 A"), lambda b: b.set_output("on"), lambda b: b.reset_latch(-1),
    lambda b: b.reset_latch(float("nan")), lambda b: b.reset_latch(61), lambda b: b.set_bias(1, port=3),
    lambda b: b.module_write(1, 'VOLT "1"'),
])
def test_invalid_values_write_nothing(call):
    with expected_protocol(SIM900, [], ports=[1, 2]) as b:
        with pytest.raises(InputError):  # SettingError and UnitError are InputErrors
            call(b)


def test_station_limit_narrows_one_port():
    with expected_protocol(SIM900, checked(2, "VOLT 1.500"), ports=[1, 2]) as b:
        b.restrict("port1.voltage", 0.0, 1.0)
        with pytest.raises(SettingError, match="range 0 V to 1 V"):
            b.port1.set_bias(1.5)
        b.port2.set_bias(1.5)


@settings(max_examples=80)
@given(st.floats(allow_nan=True, allow_infinity=True))
def test_bias_validation_matches_the_sim928_range(v):
    b = SIM900("bias", RecordingTransport(), ports=[1])
    if math.isfinite(v) and -20.0 <= v <= 20.0:
        sent = b.check("port1.voltage", v)
        assert abs(sent - v) <= 0.0005 + 1e-12 and -20.0 <= sent <= 20.0
        assert SIM928Port.voltage.format_value(sent) == f"{sent:.3f}"
    elif not math.isfinite(v) or abs(v) > 20.0 + 1e-9:
        with pytest.raises(SettingError):
            b.check("port1.voltage", v)


# -- simulator round trips ------------------------------------------------------------------------
def test_simulator_round_trip_and_latch_reset():
    model, b = sim()
    b.connect()
    assert b.idn().startswith("Stanford_Research_Systems,SIM900")
    assert "SIM928" in b.port2.idn()
    b.port1.set_bias("0.75 V")
    b.port1.set_output(True)
    assert (model.modules[1].voltage, model.modules[1].output) == (0.75, True)
    assert model.modules[1].bias_on_device == 0.75 and model.modules[2].bias_on_device == 0.0
    model.set_latched(1)
    b.reset_latch(settle_s=0)
    assert not model.latched(1) and model.modules[1].voltage == 0.75
    snap = b.snapshot()
    assert snap["settings"] == {"port1": {"voltage": 0.75, "output": True},
                                "port2": {"voltage": 0.0, "output": False}}
    b.safe_state()
    assert all(m.voltage == 0.0 and not m.output for m in model.modules.values())


def test_simulated_module_errors_come_back_through_the_pass_through():
    model, b = sim()
    with pytest.raises(InstrumentError, match="execution error 1 \\(Illegal value\\)"):
        b.module_write(1, "VOLT 25")
    with pytest.raises(InstrumentError, match="command error 2 \\(Undefined command\\)"):
        b.module_write(2, "FOO")
    with pytest.raises(InstrumentError, match="command error 9 \\(Bad floating-point\\)"):
        b.module_write(2, "VOLT abc")
    b.check_errors()  # reading cleared them
    assert model.modules[1].voltage == 0.0


def test_lf_only_mainframe_and_lf_module_terminator():
    class LFMainframe(SIM900Model):
        out_terminator = b"\n"

    model, b = sim(model_cls=LFMainframe)
    model.modules[1].term = "\n"
    b.port1.set_bias(1.5)
    assert b.port1.bias() == pytest.approx(1.5)
    assert b.port2.bias() == 0.0  # CR LF inside the block, LF after it


def test_connect_restores_the_module_terminator():
    model, b = sim()
    model.modules[1].term = ""   # TERM NONE left by someone else: replies would never complete
    b.connect()
    assert model.modules[1].term == "\r\n" and b.port1.bias() == 0.0


def test_missing_module_is_reported_at_connect():
    model, b = sim(ports=[1])
    with pytest.raises(InstrumentError, match="port2.*no module answers in this port"):
        b.connect()


def test_silent_module_times_out_and_the_port_is_flushed():
    model, b = sim()
    model.interceptors.append(lambda m, msg: ("drop", None) if msg.startswith('SNDT 1,"VOLT?') else None)
    with pytest.raises(InstrumentTimeout):
        b.port1.bias()
    assert model.log[-1] == "FLSH 1"


def test_safe_state_tries_every_port_before_raising():
    model, b = sim()
    b.port2.set_bias(1.0)
    model.interceptors.append(lambda m, msg: ("drop", None) if msg.startswith("SNDT 1,") else None)
    with pytest.raises(InstrumentError, match="port1"):
        b.safe_state()
    assert model.modules[2].voltage == 0.0 and not model.modules[2].output


def test_model_getn_block_and_conn_mode():
    model = SIM900Model()
    model.feed(b'SNDT 3,"VOLT 1.25;VOLT?"\n')
    assert model.take() == b""                        # nothing until GETN?
    model.feed(b"GETN? 3,4\n")
    assert model.take() == b"#3004+1.2\r\n"
    model.feed(b"GETN? 3,80\n")
    assert model.take() == b"#300450\r\n\r\n"
    model.feed(b'CONN 3,"xyz"\nEXON?\nxyz\n*IDN?\n')
    assert model.take() == b"0\r\nStanford_Research_Systems,SIM900,s/n152741,ver3.6\r\n"
    model.feed(b"CTCR?\nBOGUS\nLCME?\n")
    assert model.take() == f"{sum(1 << p for p in range(1, 9))}\r\n2\r\n".encode()


def test_station_passes_ports_to_driver_and_simulator(tmp_path):
    from labctl.config import load_station
    from labctl.station import Station

    f = tmp_path / "station.yaml"
    f.write_text(textwrap.dedent("""\
        station: test
        instruments:
          snspd_bias:
            driver: drivers.srs_sim900.SIM900
            resource: ASRL/dev/ttyUSB0::INSTR
            role: detector_bias
            options: {ports: [1, 2], poll_interval: 1 ms}
            limits: {port1.voltage: [0 V, 1.2 V], port2.voltage: [0 V, 1.0 V]}
        """))
    with Station(load_station(f), sim=True).connect() as st_:
        b = st_["snspd_bias"]
        assert sorted(st_.lab.models["snspd_bias"].modules) == [1, 2]
        b.port1.set_bias("1.1 V")
        with pytest.raises(SettingError):
            b.port2.set_bias("1.1 V")
        assert st_.safe_state() == []
