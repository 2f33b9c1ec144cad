"""Thorlabs MDT694 driver: wire protocol, limits, simulator round trips, and the real serial path
(pyserial on a pseudo-terminal with the simulator behind the master end)."""
from __future__ import annotations

import math

from limits import classify
import os
import select
import threading

import pytest
from hypothesis import given, settings, strategies as st

from drivers.thorlabs_mdt694 import MDT694
from labctl.errors import InputError, InstrumentError, SettingError
from labctl.instrument.protocols import PiezoDriver, check_role
from labctl.instrument.transport import ModelTransport, SerialTransport
from labctl.testing import RecordingTransport, expected_protocol
from sim_instruments.models import load_model_class
from sim_instruments.models.mdt694 import MDT694Model


def sim(**model_options):
    model = MDT694Model("piezo", **model_options)
    t = ModelTransport("sim://piezo", model, read_termination=MDT694.read_termination,
                       write_termination=MDT694.write_termination)
    return model, t


def connected(driver_options=None, **model_options):
    model, t = sim(**model_options)
    drv = MDT694("piezo", t, **(driver_options or {}))
    drv.connect()
    return model, drv


# -- class contract ---------------------------------------------------------------------------------
def test_class_attributes_and_role():
    assert MDT694.read_termination == "\r" and MDT694.write_termination == "\r"
    assert MDT694.baud_rate == 115200 and MDT694.transport_kind == "serial"
    assert MDT694.roles == ("piezo_driver",)
    assert load_model_class(MDT694.simulator) is MDT694Model
    drv = MDT694("piezo", RecordingTransport(), voltage_limit=150)
    assert check_role(drv, "piezo_driver") == []
    assert isinstance(drv, PiezoDriver)
    assert "output_voltage" in MDT694.setting_paths()


# -- message-list protocol tests ----------------------------------------------------------------------
def test_set_voltage_is_one_write_and_nothing_read():
    with expected_protocol(MDT694, [("XV24.68", None)], voltage_limit=150) as pz:
        pz.set_voltage(24.68)


def test_set_voltage_accepts_units_and_rounds_to_10_mV():
    with expected_protocol(MDT694, [("XV12.35", None), ("XV0.20", None)], voltage_limit=75) as pz:
        pz.set_voltage("12.346 V")   # sent with 10 mV resolution
        pz.set_voltage("200 mV")


def test_voltage_reads_bracketed_value_after_stale_prompts():
    # the '*' prompts of earlier (unread) commands arrive as a prefix of the reply line
    with expected_protocol(MDT694, [("XR?", "***[  24.8]")], voltage_limit=150) as pz:
        assert pz.voltage() == pytest.approx(24.8)


def test_voltage_skips_echo_line():
    with expected_protocol(MDT694, [("XR?", "XR?"), (None, "[  24.8]")], voltage_limit=150) as pz:
        assert pz.voltage() == pytest.approx(24.8)


def test_confirmed_set_reads_back():
    with expected_protocol(MDT694, [("XV10.00", None), ("XR?", "*[  10.0]")], voltage_limit=150) as pz:
        pz.set_voltage(10, confirm=True)


def test_confirmed_set_detects_clipping():
    with expected_protocol(MDT694, [("XV100.00", None), ("XR?", "*[  75.0]")], voltage_limit=150) as pz:
        with pytest.raises(InstrumentError, match="reads 75 V after setting 100 V"):
            pz.set_voltage(100, confirm=True)


def test_rejected_unconfirmed_set_is_reported_at_the_next_query():
    with expected_protocol(MDT694, [("XV5.00", None), ("XR?", "![   0.0]")], voltage_limit=150) as pz:
        pz.set_voltage(5)
        with pytest.raises(InstrumentError, match="XV5.00") as exc:
            pz.voltage()
        assert "'!'" in str(exc.value)


def test_connect_with_echo_on_turns_it_off_and_reads_limits():
    pairs = [("E", "E"), (None, "[Echo Off]"),            # echo was on: E echoed, now off
             ("%", "*[ 150]"), ("XL?", "*[   0.0]"), ("XH?", "*[ 150.0]")]
    with expected_protocol(MDT694, pairs) as pz:
        pz.connect()
        assert pz.voltage_limit == 150.0
        assert pz.voltage_range == (0.0, 150.0)


def test_connect_with_echo_off_toggles_twice():
    pairs = [("E", "[Echo On]"), ("E", "*E"), (None, "[Echo Off]"),
             ("%", "*[  75]"), ("XL?", "*[  10.0]"), ("XH?", "*[  70.0]")]
    with expected_protocol(MDT694, pairs) as pz:
        pz.connect()
        assert pz.voltage_range == (10.0, 70.0)


def test_connect_rejects_switch_below_configured_limit():
    pairs = [("E", "[Echo Off]"), ("%", "*[  75]")]
    with expected_protocol(MDT694, pairs, voltage_limit=150) as pz:
        with pytest.raises(InstrumentError, match="limit switch is at 75 V"):
            pz.connect()


def test_connect_keeps_lower_configured_limit():
    pairs = [("E", "[Echo Off]"), ("%", "*[ 150]"), ("XL?", "*[   0.0]"), ("XH?", "*[ 150.0]")]
    with expected_protocol(MDT694, pairs, voltage_limit=100) as pz:
        pz.connect()
        assert pz.voltage_range == (0.0, 100.0)


def test_idn_from_product_information():
    pairs = [("I", "Model MDT694A Piezo Control Module"), (None, "Firmware Version: 1.09")]
    with expected_protocol(MDT694, pairs, voltage_limit=150) as pz:
        assert pz.idn() == "Thorlabs Model MDT694A Piezo Control Module, Firmware Version: 1.09"
        assert pz.idn() == pz.idn()  # cached: no second exchange


def test_safe_state_goes_to_zero_confirmed():
    with expected_protocol(MDT694, [("XV0.00", None), ("XR?", "*[   0.0]")], voltage_limit=150) as pz:
        pz.safe_state()


def test_safe_state_respects_station_limit_and_option():
    with expected_protocol(MDT694, [("XV20.00", None), ("XR?", "*[  20.0]")], voltage_limit=150,
                           safe_voltage=5) as pz:
        pz.restrict("output_voltage", 20, 120)
        pz.safe_state()


def test_snapshot_reads_every_setting():
    pairs = [("I", "Model MDT694A Piezo Control Module"), (None, "Firmware Version: 1.09"),
             ("XR?", "*[  24.8]"), ("XL?", "*[   0.0]"), ("XH?", "*[ 150.0]"), ("%", "*[ 150]")]
    with expected_protocol(MDT694, pairs, voltage_limit=150) as pz:
        snap = pz.snapshot()
    assert snap["settings"] == {"output_voltage": 24.8, "min_output": 0.0, "max_output": 150.0,
                                "limit_switch": 150.0}
    assert snap["driver"] == "drivers.thorlabs_mdt694.MDT694"


# -- limits: nothing is written ---------------------------------------------------------------------
@pytest.mark.parametrize("value", [150.02, -0.5, float("nan"), float("inf"), "200 V", "3 s", True, None])
def test_out_of_range_is_rejected_before_any_write(value):
    t = RecordingTransport()
    pz = MDT694("piezo", t, voltage_limit=150)
    with pytest.raises((SettingError, InputError)):
        pz.set_voltage(value)
    assert t.written == []


def test_station_restriction_narrows_range_before_write():
    t = RecordingTransport()
    pz = MDT694("piezo", t, voltage_limit=150)
    pz.restrict("output_voltage", 0, 120)
    assert pz.voltage_range == (0.0, 120.0)
    with pytest.raises(SettingError, match="0 V to 120 V"):
        pz.set_voltage(121)
    assert t.written == []


def test_default_limit_before_connect_is_conservative():
    t = RecordingTransport()
    pz = MDT694("piezo", t)
    assert pz.voltage_range == (0.0, 75.0)
    with pytest.raises(SettingError):
        pz.set_voltage(80)
    assert t.written == []


@pytest.mark.parametrize("opts", [{"voltage_limit": 120}, {"voltage_limit": "abc"}, {"safe_voltage": -1},
                                  {"readback_tolerance": 0}, {"bogus": 1}])
def test_bad_options(opts):
    with pytest.raises(InputError):
        MDT694("piezo", RecordingTransport(), **opts)


@settings(max_examples=200)
@given(v=st.floats(allow_nan=True, allow_infinity=True, width=64),
       limit=st.sampled_from([75.0, 100.0, 150.0]))
def test_value_validation_property(v, limit):
    t = RecordingTransport()
    pz = MDT694("piezo", t, voltage_limit=limit)
    kind = classify(v, 0.0, limit)
    if kind == "edge":
        try:
            pz.set_voltage(v)
        except SettingError:
            pass
        return
    if kind == "in":
        pz.set_voltage(v)
        assert len(t.written) == 1
        cmd = t.written[0]
        assert cmd.startswith("XV")
        sent = float(cmd[2:])
        assert 0.0 <= sent <= limit and abs(sent - v) <= 0.005 + 1e-9
    else:
        with pytest.raises(SettingError):
            pz.set_voltage(v)
        assert t.written == []


# -- simulator wire format ----------------------------------------------------------------------------
def test_model_wire_format():
    m = MDT694Model("pz")                      # echo on at power-up
    m.feed(b"XR?\r")
    assert m.take() == b"XR?\r[   0.0]\r*"
    m.feed(b"E\r")
    assert m.take() == b"E\r[Echo Off]\r*"
    m.feed(b"XV24.68\r")
    assert m.take() == b"*"
    m.feed(b"XR?\r")
    assert m.take() == b"[  24.7]\r*"
    m.feed(b"%\r")
    assert m.take() == b"[ 150]\r*"
    for bad in (b"XQ\r", b"XVabc\r", b"\n\r", b"YV1\r"):
        m.feed(bad)
        assert m.take() == b"!"
    assert m.voltage == pytest.approx(24.68)


def test_model_clips_to_switch_and_xl_xh():
    m = MDT694Model("pz", voltage_limit=75, echo=False)
    m.feed(b"XV100\r")
    assert m.voltage == 75.0
    m.feed(b"XH50\rXL10\r")
    assert m.voltage == 50.0
    m.feed(b"XV1\r")
    assert m.voltage == 10.0
    m.power_cycle()
    assert (m.voltage, m.xl, m.xh, m.echo) == (0.0, 0.0, 75.0, False)


def test_model_output_is_bounded():
    m = MDT694Model("pz", echo=False)
    for _ in range(10_000):
        m.feed(b"XV1.00\r")
    assert m.pending() <= m.max_pending_output


# -- simulator round trips (unchanged driver on ModelTransport) ---------------------------------------
def test_sim_round_trip():
    model, pz = connected({"voltage_limit": 150})
    assert model.echo is False
    assert pz.idn() == "Thorlabs Model MDT694A Piezo Control Module, Firmware Version: 1.09"
    pz.set_voltage(33.33)
    assert model.voltage == pytest.approx(33.33)
    assert pz.voltage() == pytest.approx(33.3)
    pz.set_voltage(120.0, confirm=True)
    assert model.voltage == 120.0
    snap = pz.snapshot()
    assert snap["settings"]["limit_switch"] == 150.0
    pz.safe_state()
    assert model.voltage == 0.0


def test_sim_many_fast_sets_then_query():
    model, pz = connected()
    for i in range(5000):
        pz.set_voltage(10 + (i % 50) * 0.1)
    assert model.set_count == 5000
    assert pz.voltage() == pytest.approx(model.voltage, abs=0.05)


def test_sim_xh_clipping_seen_by_confirmed_set():
    model, pz = connected()
    model.xh = 60.0                   # front-panel/other client changed XH after connect
    with pytest.raises(InstrumentError, match="clipped"):
        pz.set_voltage(100, confirm=True)
    assert model.voltage == 60.0


def test_sim_limits_from_device_after_connect():
    model, pz = connected(voltage_limit=100)
    assert pz.voltage_range == (0.0, 100.0)
    pz.max_output = 80
    assert model.xh == 80.0 and pz.voltage_range == (0.0, 80.0)
    with pytest.raises(SettingError):
        pz.set_voltage(90)


def test_sim_switch_mismatch_is_an_error():
    model, t = sim(voltage_limit=75)
    pz = MDT694("piezo", t, voltage_limit=150)
    with pytest.raises(InstrumentError, match="turn the switch"):
        pz.connect()


def test_sim_recovers_from_power_cycle_echo():
    model, pz = connected()
    model.power_cycle()               # echo back on, settings lost
    pz.set_voltage(5)                  # its echo line stays unread
    assert pz.voltage() == pytest.approx(5.0)   # echo lines skipped
    pz.echo_off()
    assert model.echo is False


def test_sim_unknown_command_is_reported():
    model, pz = connected()
    pz.write("XQ1")                   # not understood -> '!'
    with pytest.raises(InstrumentError, match="'!'"):
        pz.voltage()
    assert pz.voltage() == pytest.approx(0.0)  # and the link is usable afterwards


def test_sim_through_make_model_options():
    from sim_instruments.models import make_model

    m = make_model(MDT694.simulator, "pz", voltage_limit=100, echo=False)
    assert isinstance(m, MDT694Model) and m.voltage_limit == 100.0 and m.echo is False
    with pytest.raises(ValueError):
        MDT694Model("pz", voltage_limit=120)


# -- the real serial path: pyserial on a pseudo-terminal ----------------------------------------------
class PtyEmulator:
    """The device model behind the master end of a pty; the driver opens the slave with pyserial."""

    def __init__(self, model):
        self.model = model
        self.master, self.slave = os.openpty()
        self.port = os.ttyname(self.slave)
        self.raw_in = bytearray()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            r, _, _ = select.select([self.master], [], [], 0.02)
            if not r:
                continue
            try:
                data = os.read(self.master, 4096)
            except OSError:
                return
            self.raw_in.extend(data)
            self.model.feed(data)
            out = self.model.take()
            if out:
                os.write(self.master, out)

    def close(self):
        self._stop.set()
        self._thread.join(2)
        os.close(self.master)
        os.close(self.slave)


@pytest.mark.hil
def test_serial_path_on_pty():
    model = MDT694Model("piezo")                   # echo on, as after power-up
    emu = PtyEmulator(model)
    t = SerialTransport(emu.port, baud_rate=MDT694.baud_rate, name="piezo",
                        read_termination=MDT694.read_termination,
                        write_termination=MDT694.write_termination, timeout=2.0)
    try:
        pz = MDT694("piezo", t, voltage_limit=150)
        pz.connect()
        assert model.echo is False
        assert pz.idn().startswith("Thorlabs Model MDT694A")
        pz.set_voltage(42.5)
        pz.set_voltage(43.25, confirm=True)
        assert model.voltage == pytest.approx(43.25)
        assert pz.voltage() == pytest.approx(43.2, abs=0.051)
        pz.safe_state()
        assert model.voltage == 0.0
        # the exact bytes on the wire: carriage-return terminated commands
        assert bytes(emu.raw_in).startswith(b"E\r%\rXL?\rXH?\rI\r")
        assert b"XV42.50\rXV43.25\rXR?\r" in bytes(emu.raw_in)
    finally:
        t.close()
        emu.close()
