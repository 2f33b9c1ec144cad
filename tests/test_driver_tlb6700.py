"""New Focus TLB-6700 driver: wire protocol (exact strings and CR LF terminators), limits, the OK
check of every set, ERRSTR? in errors, the simulator round trip, and the Newport USB (ctypes)
transport — with the library absent, and with a fake library in front of the simulator."""
from __future__ import annotations

import ctypes
import math

from limits import classify
import textwrap

import pytest
from hypothesis import given, settings, strategies as st

from drivers.newfocus_tlb6700 import (LIBRARY_ENV, NewportUsbTransport, TLB6700, _USB_USERS)
from labctl.errors import ConnectionLost, InputError, InstrumentError, InstrumentTimeout, SettingError, UnitError
from labctl.instrument.protocols import Laser, check_role
from labctl.instrument.transport import ModelTransport, TransportBase
from labctl.testing import RecordingTransport, expected_protocol
from sim_instruments.models import load_model_class
from sim_instruments.models.tlb6700 import TLB6700Model

FAST = {"poll_interval": "0 s"}


def sim(driver_options=None, **model_options):
    model = TLB6700Model("pump", **model_options)
    t = ModelTransport("sim://pump", model, read_termination=TLB6700.read_termination,
                       write_termination=TLB6700.write_termination, timeout=0.5)
    return model, TLB6700("pump", t, **{**FAST, **(driver_options or {})})


class Wire(TransportBase):
    """Captures the exact bytes written; answers from a byte string (to pin terminators)."""

    def __init__(self, replies: bytes) -> None:
        super().__init__("wire://", read_termination=TLB6700.read_termination,
                         write_termination=TLB6700.write_termination)
        self.sent = bytearray()
        self.rx = bytearray(replies)

    def _send(self, data: bytes) -> None:
        self.sent += data

    def _receive_until(self, terminator: bytes) -> bytes:
        i = self.rx.find(terminator)
        if i < 0:
            raise self._timeout_error()
        out = bytes(self.rx[:i])
        del self.rx[:i + len(terminator)]
        return out


# -- class contract -----------------------------------------------------------------------------
def test_class_attributes_and_role():
    assert TLB6700.read_termination == "\r\n" and TLB6700.write_termination == "\r\n"
    assert TLB6700.error_query == "ERRSTR?" and TLB6700.roles == ("laser",)
    assert load_model_class(TLB6700.simulator) is TLB6700Model
    drv = TLB6700("pump", RecordingTransport())
    assert check_role(drv, "laser") == [] and isinstance(drv, Laser)
    assert {"wavelength", "output", "track", "piezo", "current"} <= set(TLB6700.setting_paths())


def test_bytes_on_the_wire_end_in_cr_lf():
    wire = Wire(b"OK\r\nOK\r\n1\r\n1553.8012\r\n")
    drv = TLB6700("pump", wire, **FAST)
    drv.set_wavelength("1553.8 nm")
    assert drv.measured_wavelength() == pytest.approx(1553.8012e-9, rel=1e-12)
    assert bytes(wire.sent) == (b"OUTPut:TRACk 1\r\nSOURce:WAVElength 1553.800\r\n*OPC?\r\n"
                                b"SENSe:WAVElength\r\n")


# -- message-list protocol tests ----------------------------------------------------------------
def test_set_wavelength_turns_track_on_and_waits_for_opc():
    pairs = [("OUTPut:TRACk 1", "OK"), ("SOURce:WAVElength 1553.800", "OK"),
             ("*OPC?", "0"), ("*OPC?", "0"), ("*OPC?", "1")]
    with expected_protocol(TLB6700, pairs, **FAST) as laser:
        laser.set_wavelength(1553.8e-9)


def test_set_wavelength_without_wait_and_without_auto_track():
    with expected_protocol(TLB6700, [("SOURce:WAVElength 1553.812", "OK")], auto_track=False) as laser:
        laser.set_wavelength("1553.8123 nm", wait=False)


def test_sense_queries_have_no_question_mark_and_are_converted_to_si():
    pairs = [("SENSe:WAVElength", "1553.8004"), ("SENSe:CURRent:DIODe", "120.5"),
             ("SENSe:POWer:DIODe", "20.25"), ("SOURce:WAVElength?", "1553.800"),
             ("SOURce:POWer:DIODe?", "10.00")]
    with expected_protocol(TLB6700, pairs) as laser:
        assert laser.measured_wavelength() == pytest.approx(1553.8004e-9)
        assert laser.measured_current == pytest.approx(0.1205)
        assert laser.measured_power == pytest.approx(0.02025)
        assert laser.wavelength == pytest.approx(1553.8e-9)
        assert laser.power_setpoint == pytest.approx(0.010)


def test_output_track_piezo_current_slew_commands():
    pairs = [("OUTPut:STATe 1", "OK"), ("OUTPut:TRACk 0", "OK"), ("SOURce:VOLTage:PIEZo 45.00", "OK"),
             ("SOURce:VOLTage:PIEZo 12.50", "OK"), ("SOURce:CURRent:DIODe 120.00", "OK"),
             ("SOURce:WAVElength:SLEWrate:FORWard 1.500", "OK"), ("OUTPut:STATe?", "1"),
             ("SOURce:VOLTage:PIEZo?", "45.00")]
    with expected_protocol(TLB6700, pairs) as laser:
        laser.set_output(True)
        laser.set_track(False)
        laser.set_piezo("45 %")
        laser.set_piezo(0.125)
        laser.set_current("120 mA")
        laser.slew_rate_nm_s = 1.5
        assert laser.output is True
        assert laser.piezo == pytest.approx(0.45)


def test_safe_state_switches_the_diode_off():
    with expected_protocol(TLB6700, [("OUTPut:STATe 0", "OK")]) as laser:
        laser.safe_state()


def test_refused_set_raises_with_errstr_entries():
    pairs = [("SOURce:CURRent:DIODe 120.00", "VALUE OUT OF RANGE"), ("ERRSTR?", "201,VALUE OUT OF RANGE"),
             ("ERRSTR?", "0,NO ERROR")]
    with expected_protocol(TLB6700, pairs, name="pump") as laser:
        with pytest.raises(InstrumentError) as e:
            laser.set_current(0.12)
    err = e.value
    assert err.instrument == "pump" and err.command == "SOURce:CURRent:DIODe 120.00"
    assert "201,VALUE OUT OF RANGE" in str(err) and "'VALUE OUT OF RANGE'" in str(err)


def test_unanswered_set_reads_errstr_and_names_the_error():
    pairs = [("OUTPut:STATe 1", None), ("ERRSTR?", "501, LDD INTERLOCK FLT"), ("ERRSTR?", "0, NO ERROR")]
    with expected_protocol(TLB6700, pairs, name="read") as laser:
        with pytest.raises(InstrumentError) as e:
            laser.set_output(True)
    assert "501, LDD INTERLOCK FLT" in str(e.value) and e.value.command == "OUTPut:STATe 1"


def test_unanswered_set_without_error_is_a_timeout():
    with expected_protocol(TLB6700, [("OUTPut:STATe 0", None), ("ERRSTR?", "0,NO ERROR")]) as laser:
        with pytest.raises(InstrumentTimeout):
            laser.safe_state()


def test_stale_ok_in_front_of_a_query_answer_is_skipped():
    with expected_protocol(TLB6700, [("SOURce:WAVElength?", "OK"), (None, "1553.800")]) as laser:
        assert laser.wavelength == pytest.approx(1553.8e-9)


def test_connect_drains_stale_errors_without_failing():
    pairs = [("ERRSTR?", "116,SYNTAX ERROR"), ("ERRSTR?", "0,NO ERROR")]
    with expected_protocol(TLB6700, pairs) as laser:
        laser.connect()


def test_opc_garbage_is_an_error():
    pairs = [("OUTPut:TRACk 1", "OK"), ("SOURce:WAVElength 1550.000", "OK"), ("*OPC?", "BUSY")]
    with expected_protocol(TLB6700, pairs, **FAST) as laser:
        with pytest.raises(InstrumentError, match="unexpected reply 'BUSY'"):
            laser.set_wavelength(1550e-9)


# -- limits: rejected before anything is written ---------------------------------------------------
@pytest.mark.parametrize("call", [
    lambda l: l.set_wavelength(1600e-9), lambda l: l.set_wavelength(1519.99e-9),
    lambda l: l.set_wavelength(float("nan")), lambda l: l.set_wavelength(True),
    lambda l: l.set_piezo(45), lambda l: l.set_piezo("-1 %"), lambda l: l.set_current("200 mA"),
    lambda l: l.set_current(-0.001), lambda l: l.set_output(1), lambda l: l.set_track("on"),
    lambda l: l.set_wavelength(1553.8e-9, timeout_s=0), lambda l: setattr(l, "slew_rate_nm_s", 50),
])
def test_values_outside_the_limits_write_nothing(call):
    with expected_protocol(TLB6700, []) as laser:
        with pytest.raises(SettingError):
            call(laser)


def test_wrong_units_are_input_errors():
    with expected_protocol(TLB6700, []) as laser:
        with pytest.raises(UnitError):
            laser.set_wavelength("1553.8 MHz")
        with pytest.raises(UnitError):
            laser.set_current("120")


def test_station_restriction_and_options_narrow_the_range():
    with expected_protocol(TLB6700, [], max_current="100 mA") as laser:
        laser.restrict("wavelength", 1550e-9, 1556e-9)
        with pytest.raises(SettingError, match="range"):
            laser.set_wavelength("1557 nm")
        with pytest.raises(SettingError):
            laser.set_current("120 mA")
    with pytest.raises(InputError):
        TLB6700("x", RecordingTransport(), wavelength_range=["1570 nm", "1520 nm"])


@settings(max_examples=60)
@given(st.floats(min_value=1400.0, max_value=1700.0, allow_nan=False))
def test_wavelength_validation_matches_the_6728_range(nm):
    laser = TLB6700("pump", RecordingTransport())
    if 1520.0 <= nm <= 1570.0:
        assert laser.check("wavelength", f"{nm!r} nm") == pytest.approx(nm * 1e-9)
        assert TLB6700.wavelength.format_value(nm * 1e-9) == f"{nm:.3f}"
    else:
        with pytest.raises(SettingError):
            laser.check("wavelength", nm * 1e-9)


@settings(max_examples=60)
@given(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**6, 10**6)))
def test_piezo_and_current_accept_only_their_ranges(v):
    laser = TLB6700("pump", RecordingTransport())
    for name, (lo, hi) in (("piezo", (0.0, 1.0)), ("current", (0.0, 0.165))):
        kind = classify(v, lo, hi)
        if kind == "out":
            with pytest.raises(SettingError):
                laser.check(name, v)
        elif kind == "in":
            assert laser.check(name, v) == v
        else:  # within round-off of a limit: refused, or the limit itself is sent
            try:
                assert laser.check(name, v) in (lo, hi)
            except SettingError:
                pass


# -- simulator round trips ------------------------------------------------------------------------
def test_simulator_round_trip():
    model, laser = sim()
    laser.connect()
    assert laser.idn().startswith("New_Focus 6700 v2.4")
    laser.set_wavelength("1553.8 nm")
    assert model.setpoint_nm == 1553.8 and model.track and not model.moving
    assert abs(laser.measured_wavelength() - 1553.8e-9) < 5e-12
    laser.set_output(True)
    laser.set_current("120 mA")
    laser.set_piezo("30 %")
    assert (model.output, model.current_mA, model.piezo_percent) == (True, 120.0, 30.0)
    assert laser.measured_power > 0
    snap = laser.snapshot()
    assert snap["settings"]["wavelength"] == pytest.approx(1553.8e-9)
    assert snap["settings"]["output"] is True and snap["settings"]["piezo"] == pytest.approx(0.3)
    laser.safe_state()
    assert model.output is False and model.setpoint_nm == 1553.8
    assert "SENSe:WAVElength" in model.log and "SENSe:WAVElength?" not in model.log


def test_simulated_mode_hop_shows_in_the_measured_wavelength():
    model, laser = sim(jitter_nm=0.0)
    laser.set_wavelength("1553.8 nm")
    model.mode_hop(0.05)
    assert laser.measured_wavelength() == pytest.approx(1553.85e-9)
    laser.set_wavelength("1553.8 nm")  # a new set point re-tunes
    assert laser.measured_wavelength() == pytest.approx(1553.8e-9)


def test_simulator_refusals_become_instrument_errors():
    model, laser = sim({"wavelength_range": ["1500 nm", "1600 nm"]})
    with pytest.raises(InstrumentError) as e:
        laser.set_wavelength("1590 nm")
    assert "201,VALUE OUT OF RANGE" in str(e.value) and e.value.command == "SOURce:WAVElength 1590.000"
    model.interlock_open = True
    with pytest.raises(InstrumentError, match="501,LDD INTERLOCK FLT"):
        laser.set_output(True)
    assert laser.error_string() == "0,NO ERROR"


def test_move_that_never_finishes_times_out():
    model, laser = sim({"move_timeout": "30 ms", "poll_interval": "2 ms"}, opc_polls=10**9)
    with pytest.raises(InstrumentError, match="did not finish within 0.03 s"):
        laser.set_wavelength("1551 nm")


def test_simulated_move_time():
    model, laser = sim({"poll_interval": "1 ms"}, opc_polls=0, move_time_s=0.02)
    laser.set_wavelength("1552 nm")
    assert model.log.count("*OPC?") >= 2 and not model.moving


def test_power_cycle_loses_settings():
    model, laser = sim()
    laser.set_wavelength("1553.8 nm")
    model.power_cycle()
    assert laser.wavelength == pytest.approx(1550e-9)


def test_simulated_station(tmp_path):
    from labctl.config import load_station
    from labctl.station import Station

    f = tmp_path / "station.yaml"
    f.write_text(textwrap.dedent("""\
        station: test
        instruments:
          pump:
            driver: drivers.newfocus_tlb6700.TLB6700
            resource: NEWPORT-USB::4106::SN12345
            role: laser
            limits: {wavelength: [1553 nm, 1555 nm]}
            options: {poll_interval: 0 s}
        """))
    with Station(load_station(f), sim=True).connect() as st_:
        pump = st_["pump"]
        pump.set_wavelength("1553.8 nm")
        with pytest.raises(SettingError):
            pump.set_wavelength("1556 nm")
        assert st_.safe_state() == []


# -- the Newport USB library (ctypes) ------------------------------------------------------------
def test_missing_library_names_library_and_resource(monkeypatch):
    monkeypatch.setenv(LIBRARY_ENV, "/nonexistent/libusbdll.so")
    with pytest.raises(ConnectionLost) as e:
        TLB6700.open_transport("NEWPORT-USB::4106::SN12345", name="pump", read_termination="\r\n",
                               write_termination="\r\n", timeout=1.0)
    msg = str(e.value)
    assert "/nonexistent/libusbdll.so" in msg and "NEWPORT-USB::4106::SN12345" in msg and msg.startswith("pump:")


def test_missing_default_library_is_named(monkeypatch):
    monkeypatch.delenv(LIBRARY_ENV, raising=False)
    monkeypatch.setattr("drivers.newfocus_tlb6700.DEFAULT_LIBRARIES", ("libusbdll-absent.so",))
    with pytest.raises(ConnectionLost, match="libusbdll-absent.so"):
        TLB6700.open_transport("NEWPORT-USB::4106::SN12345", name="read")


def test_a_library_without_the_newport_functions_is_refused(monkeypatch):
    import ctypes.util

    libc = ctypes.util.find_library("c") or "libc.so.6"
    monkeypatch.setenv(LIBRARY_ENV, libc)
    with pytest.raises(ConnectionLost, match="is not the Newport USB library"):
        TLB6700.open_transport("NEWPORT-USB::4106::SN12345", name="pump")


def test_other_resources_use_the_usual_transports():
    assert TLB6700.open_transport("TCPIP::10.0.0.5::4000::SOCKET") is None
    assert TLB6700.open_transport("serial:///dev/ttyUSB0") is None
    with pytest.raises(InputError):
        NewportUsbTransport("USB0::1::2::INSTR", library=object())


class FakeUsbDll:
    """Stands in for usbdll.dll: the ctypes calling convention, a TLB6700Model behind it."""

    def __init__(self, models: dict[int, tuple[str, TLB6700Model]]) -> None:
        self.models = models
        self.calls: list[str] = []

    def newp_usb_init_system(self):
        self.calls.append("init")
        return 0

    def newp_usb_uninit_system(self):
        self.calls.append("uninit")

    def newp_usb_get_device_info(self, buf):
        info = "".join(f"{i},{desc};" for i, (desc, _) in self.models.items()).encode()
        ctypes.memmove(buf, info, len(info))
        return 0

    def newp_usb_send_ascii(self, device_id, data, length):
        self.models[device_id.value][1].feed(bytes(data[:length.value]))
        return 0

    def newp_usb_get_ascii(self, device_id, buf, length, nread):
        out = self.models[device_id.value][1].take(length.value)
        ctypes.memmove(buf, out, len(out))
        nread.contents.value = len(out)
        return 0


def usb_transport(lib, key="SN12345", name="pump"):
    return NewportUsbTransport(f"NEWPORT-USB::4106::{key}", library=lib, name=name,
                               read_termination="\r\n", write_termination="\r\n", timeout=0.3)


def test_usb_transport_round_trip_through_a_fake_library():
    pump = TLB6700Model("pump", serial="SN12345")
    read = TLB6700Model("read", serial="SN67890")
    lib = FakeUsbDll({1: ("TLB-6700 SN12345", pump), 2: ("TLB-6700 SN67890", read)})
    t_pump, t_read = usb_transport(lib), usb_transport(lib, "SN67890", "read")
    assert (t_pump.device_id, t_read.device_id) == (1, 2)
    assert lib.calls == ["init"]                       # one library init for both controllers
    laser = TLB6700("pump", t_pump, **FAST)
    assert laser.idn() == "New_Focus 6700 v2.4 08/01/15 SN12345"
    laser.set_wavelength("1553.8 nm")
    assert pump.setpoint_nm == 1553.8 and read.setpoint_nm == 1550.0
    t_pump.close()
    assert lib.calls == ["init"]                       # the other controller is still open
    t_read.close()
    t_read.close()                                      # closing twice is harmless
    assert lib.calls == ["init", "uninit"] and id(lib) not in _USB_USERS


def test_usb_transport_unknown_device_lists_what_it_found():
    lib = FakeUsbDll({1: ("TLB-6700 SN12345", TLB6700Model())})
    with pytest.raises(ConnectionLost, match="SN99999.*1: 'TLB-6700 SN12345'"):
        usb_transport(lib, "SN99999")
    assert lib.calls == ["init", "uninit"]
    assert usb_transport(lib, "1").device_id == 1       # a numeric key is the device id


def test_usb_transport_timeout_and_library_errors():
    model = TLB6700Model()
    lib = FakeUsbDll({1: ("TLB-6700 SN12345", model)})
    t = usb_transport(lib)
    t.timeout = 0.02
    with pytest.raises(InstrumentTimeout):
        t.read()
    lib.newp_usb_send_ascii = lambda *a: -2
    with pytest.raises(ConnectionLost, match="newp_usb_send_ascii failed with status -2"):
        t.write("*IDN?")
    t.close()


def test_usb_read_errors_become_connection_lost_at_the_deadline():
    lib = FakeUsbDll({1: ("TLB-6700 SN12345", TLB6700Model())})
    t = usb_transport(lib)
    t.timeout = 0.02
    lib.newp_usb_get_ascii = lambda *a: -1
    t.write("*IDN?")
    with pytest.raises(ConnectionLost, match="newp_usb_get_ascii failed with status -1"):
        t.read()
    t.close()


def test_connect_over_usb_discards_stale_replies():
    model = TLB6700Model()
    lib = FakeUsbDll({1: ("TLB-6700 SN12345", model)})
    t = usb_transport(lib)
    model.feed(b"SOURce:WAVElength?\r\n")            # an answer nobody read, from an earlier session
    laser = TLB6700("pump", t)
    laser.connect()
    assert laser.idn().startswith("New_Focus")
    t.close()


def test_fake_library_sees_ctypes_arguments():
    seen = {}
    lib = FakeUsbDll({7: ("TLB-6700 SN12345", TLB6700Model())})
    orig = lib.newp_usb_send_ascii

    def spy(device_id, data, length):
        seen.update(id=device_id, data=data, length=length)
        return orig(device_id, data, length)

    lib.newp_usb_send_ascii = spy
    t = usb_transport(lib)
    t.write("*IDN?")
    assert isinstance(seen["id"], ctypes.c_long) and seen["id"].value == 7
    assert seen["data"] == b"*IDN?\r\n" and seen["length"].value == 7
    assert t.read() == "New_Focus 6700 v2.4 08/01/15 SN12345"
    t.close()
