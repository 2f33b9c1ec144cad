"""Tektronix AFG3152C driver: exact command strings (AFG3000 programmer manual syntax), limits
checked before any write, the error queue, the simulator (Python model and pyvisa-sim YAML)."""
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from drivers.tektronix_afg3152c import (AFG3152C, ARB_CODE_MAX, amplitude_limits, level_window,
                                        timing_ok)
from labctl.errors import InputError, InstrumentError, SettingError
from labctl.instrument.protocols import PulseGenerator, check_role
from labctl.instrument.transport import ModelTransport, VisaTransport
from labctl.testing import RecordingTransport, expected_protocol
from sim_instruments.models.afg3152c import AFG3152CModel

YAML = Path(__file__).resolve().parents[1] / "sim_instruments" / "visa" / "afg3152c.yaml"
RESOURCE = "TCPIP0::afg3152c.sim::inst0::INSTR"
NOERR = ("SYSTem:ERRor?", '0,"No error"')


def sim():
    model = AFG3152CModel("afg")
    afg = AFG3152C("afg", ModelTransport("sim://afg", model))
    afg.connect()
    return afg, model


def recording():
    t = RecordingTransport(lambda m: '0,"No error"' if m == "SYSTem:ERRor?" else None)
    return AFG3152C("afg", t), t


# -- exact syntax ---------------------------------------------------------------------------------

def test_channel_settings_use_the_manual_syntax():
    with expected_protocol(AFG3152C, [
        ("SOURce1:PULSe:WIDTh 2e-05", None), NOERR,
        ("SOURce2:PULSe:DELay 1.5e-06", None), NOERR,
        ("SOURce1:PULSe:TRANsition:LEADing 1e-08", None), NOERR,
        ("SOURce1:PULSe:TRANsition:TRAiling 2.5e-09", None), NOERR,
        ("SOURce1:FUNCtion:SHAPe PULSe", None), NOERR,
        ("SOURce2:VOLTage:LEVel:IMMediate:HIGH 0.8", None), NOERR,
        ("SOURce2:VOLTage:LEVel:IMMediate:LOW 0", None), NOERR,
        ("SOURce1:VOLTage:LEVel:IMMediate:AMPLitude 1", None), NOERR,
        ("SOURce1:BURSt:NCYCles 3", None), NOERR,
        ("OUTPut1:IMPedance INFinity", None), NOERR,
        ("OUTPut2:STATe ON", None), NOERR,
        ("SOURce1:PULSe:WIDTh?", "2.0000E-5"),
        ("OUTPut2:STATe?", "1"),
        ("SOURce1:FUNCtion:SHAPe?", "PULS"),
        ("OUTPut1:IMPedance?", "9.9E+37"),
    ]) as afg:
        afg.ch1.width = "20 us"
        afg.ch2.delay = 1.5e-6
        afg.ch1.lead = "10 ns"
        afg.ch1.trail = 2.5e-9
        afg.ch1.shape = "pulse"
        afg.ch2.high = 0.8
        afg.ch2.low = 0.0
        afg.ch1.amplitude = 1.0
        afg.ch1.burst_cycles = 3
        afg.ch1.load = "inf"
        afg.set_output(2, True)
        assert afg.ch1.width == pytest.approx(20e-6)
        assert afg.ch2.output is True
        assert afg.ch1.shape == "pulse"
        assert math.isinf(afg.ch1.load)


def test_configure_burst_for_the_20_khz_master_clock():
    with expected_protocol(AFG3152C, [
        ("SOURce1:BURSt:MODE TRIGgered", None), NOERR,
        ("SOURce1:BURSt:NCYCles 1", None), NOERR,
        ("SOURce1:BURSt:STATe ON", None), NOERR,
        ("TRIGger:SEQuence:SOURce TIMer", None), NOERR,
        ("TRIGger:SEQuence:TIMer 5e-05", None), NOERR,
        ("SOURce2:BURSt:MODE TRIGgered", None), NOERR,
        ("SOURce2:BURSt:NCYCles 1", None), NOERR,
        ("SOURce2:BURSt:TDELay 1e-06", None), NOERR,
        ("SOURce2:BURSt:STATe ON", None), NOERR,
        ("TRIGger:SEQuence:SOURce EXTernal", None), NOERR,
        ("TRIGger:SEQuence:SLOPe NEGative", None), NOERR,
    ]) as afg:
        afg.configure_burst(1, cycles=1, source="timer", timer_s=50e-6)
        afg.configure_burst(2, cycles=1, source="external", slope="negative", delay_s=1e-6)


def test_configure_pulse_reads_the_state_once_then_writes_in_a_safe_order():
    pairs = [
        ("SOURce1:PULSe:PERiod?", "1.0E-6"), ("SOURce1:PULSe:WIDTh?", "5.0E-7"),
        ("SOURce1:PULSe:TRANsition:LEADing?", "5.0E-9"),
        ("SOURce1:PULSe:TRANsition:TRAiling?", "5.0E-9"), ("SOURce1:PULSe:DELay?", "0"),
        ("SOURce1:BURSt:STATe?", "1"),
        ("SOURce1:FUNCtion:SHAPe PULSe", None), NOERR,
        # growing: the period first, then width, delay, edges
        ("SOURce1:PULSe:PERiod 5e-05", None), NOERR,
        ("SOURce1:PULSe:WIDTh 2e-05", None), NOERR,
        ("SOURce1:PULSe:DELay 2e-06", None), NOERR,
        ("SOURce1:PULSe:TRANsition:LEADing 1e-08", None), NOERR,
        ("SOURce1:PULSe:TRANsition:TRAiling 1e-08", None), NOERR,
        ("SOURce1:VOLTage:LEVel:IMMediate:HIGH?", "0.5"),
        ("SOURce1:VOLTage:LEVel:IMMediate:LOW?", "-0.5"),
        ("SOURce1:VOLTage:LEVel:IMMediate:HIGH 1", None), NOERR,
        ("SOURce1:VOLTage:LEVel:IMMediate:LOW 0", None), NOERR,
        # second call: nothing read again; shrinking: width before period; unchanged edges untouched
        ("SOURce1:PULSe:WIDTh 2e-07", None), NOERR,
        ("SOURce1:PULSe:DELay 1e-07", None), NOERR,
        ("SOURce1:PULSe:PERiod 1e-06", None), NOERR,
        ("SOURce1:VOLTage:LEVel:IMMediate:LOW -0.2", None), NOERR,
        ("SOURce1:VOLTage:LEVel:IMMediate:HIGH -0.1", None), NOERR,
    ]
    with expected_protocol(AFG3152C, pairs, name="afg") as afg:
        afg.configure_pulse(1, period_s=50e-6, width_s=20e-6, delay_s=2e-6, high_v=1.0, low_v=0.0,
                            edge_s=10e-9)
        afg.configure_pulse(1, period_s=1e-6, width_s=0.2e-6, delay_s=0.1e-6, high_v=-0.1, low_v=-0.2)


def test_coupled_settings_are_read_again_after_a_write():
    with expected_protocol(AFG3152C, [
        ("SOURce1:PULSe:PERiod 1e-06", None), NOERR,
        ("SOURce1:FREQuency:FIXed 20000", None), NOERR,      # the instrument changes the period
        ("SOURce1:PULSe:PERiod?", "5.0E-5"),
        ("SOURce1:VOLTage:LEVel:IMMediate:HIGH 1", None), NOERR,
        ("OUTPut1:IMPedance INFinity", None), NOERR,          # the displayed levels double
        ("SOURce1:VOLTage:LEVel:IMMediate:HIGH?", "2"),
    ]) as afg:
        afg.ch1.period = 1e-6
        assert afg.ch1.known("period") == 1e-6                # remembered: no query
        afg.ch1.frequency = 20e3
        assert afg.ch1.known("period") == pytest.approx(50e-6)
        afg.ch1.high = 1.0
        afg.ch1.load = "inf"
        assert afg.ch1.known("high") == 2.0


def test_binary_upload_block_is_big_endian_14_bit():
    codes = [0, 8191, 16382]
    block = b"DATA:DATA EMEMory,#16" + bytes([0x00, 0x00, 0x1F, 0xFF, 0x3F, 0xFE]) + b"\n"
    with expected_protocol(AFG3152C, [
        ("DATA:DEFine EMEMory,3", None), NOERR,
        (block, None), NOERR,
        ("DATA:COPY USER2,EMEMory", None), NOERR,
    ]) as afg:
        afg.upload_arbitrary(np.array([-1.0, 0.0, 1.0]), 2)
    assert list(AFG3152C.to_codes(np.array(codes))) == codes
    assert AFG3152C.data_block(np.array([1, 256])) == b"#14\x00\x01\x01\x00"


def test_safe_state_switches_both_outputs_off_even_if_one_fails():
    with expected_protocol(AFG3152C, [("OUTPut1:STATe OFF", None),
                                      ("SYSTem:ERRor?", '-300,"Device-specific error"'), NOERR,
                                      ("OUTPut2:STATe OFF", None), NOERR]) as afg:
        with pytest.raises(InstrumentError):
            afg.safe_state()


def test_connect_reads_the_load_and_the_level_limits_follow_it():
    with expected_protocol(AFG3152C, [("OUTPut1:IMPedance?", "9.9E+37"),
                                      ("OUTPut2:IMPedance?", "50")]) as afg:
        afg.connect()
        assert math.isinf(afg.ch1.load_ohms) and afg.ch2.load_ohms == 50
        assert afg.check("ch1.amplitude", 20.0) == 20.0       # 20 Vpp into high-Z
        with pytest.raises(SettingError):
            afg.check("ch2.amplitude", 10.5)                    # 10 Vpp into 50 Ω
        with pytest.raises(SettingError):
            afg.check("ch2.high", 5.5)


def test_fills_the_pulse_generator_role():
    afg, _ = recording()
    assert check_role(afg, "pulse_generator") == []
    assert isinstance(afg, PulseGenerator)


# -- limits before any write ------------------------------------------------------------------------

@pytest.mark.parametrize("setting, value", [
    ("ch1.width", 1e-9), ("ch1.width", 1000.0), ("ch1.lead", 1e-9), ("ch2.trail", 700.0),
    ("ch1.period", 5e-9), ("ch1.burst_cycles", 0), ("ch1.burst_cycles", 2_000_000),
    ("trigger_timer", 0.5e-6), ("ch1.high", 5.01), ("ch2.low", -6.0), ("ch1.amplitude", 0.01),
    ("ch1.load", 0.5), ("ch1.load", 20_000), ("ch1.shape", "triangle"), ("trigger_source", "bus"),
    ("ch1.duty_cycle_pct", 100.0), ("ch1.delay", -1e-9),
])
def test_out_of_range_settings_write_nothing(setting, value):
    afg, t = recording()
    with pytest.raises(SettingError) as e:
        afg.set(setting, value)
    assert t.written == []
    assert setting.split(".")[-1] in str(e.value)


@pytest.mark.parametrize("kw", [
    dict(period_s=1e-6, width_s=2e-6, delay_s=0, high_v=1, low_v=0),           # width > period
    dict(period_s=1e-6, width_s=0.5e-6, delay_s=2e-6, high_v=1, low_v=0),      # delay > period
    dict(period_s=1e-6, width_s=0.5e-6, delay_s=0, high_v=6, low_v=0),         # above 5 V (50 Ω)
    dict(period_s=1e-6, width_s=0.5e-6, delay_s=0, high_v=0.0, low_v=0.01),    # high below low
    dict(period_s=1e-6, width_s=0.5e-6, delay_s=0, high_v=1, low_v=0, edge_s=1e-9),
    dict(period_s=1e-6, width_s=0.5e-6, delay_s=0, high_v=1, low_v=0, edge_s=0.4e-6),
    dict(period_s=1e-9, width_s=0.5e-9, delay_s=0, high_v=1, low_v=0),
])
def test_configure_pulse_checks_everything_before_the_first_write(kw):
    afg, t = recording()
    with pytest.raises(SettingError):
        afg.configure_pulse(1, **kw)
    assert t.written == []


def test_station_limits_apply_to_configure_pulse():
    afg, t = recording()
    afg.restrict("ch1.high", 0.0, 1.0)        # AOM driver input takes 0..1 V (configs/lab.yaml)
    with pytest.raises(SettingError) as e:
        afg.configure_pulse(1, period_s=50e-6, width_s=1e-6, delay_s=0, high_v=1.5, low_v=0)
    assert "high" in str(e.value)
    assert t.written == []


@pytest.mark.parametrize("samples, slot", [
    (np.zeros(1), 1), (np.zeros(131_073), 1), (np.array([0.0, 1.2]), 1),
    (np.array([0, 16383]), 1), (np.array([-1, 5]), 1), (np.zeros(10), 5), (np.zeros(10), 0),
    (np.array([0.0, np.nan]), 1), (np.zeros((2, 5)), 1), (np.array(["a", "b"]), 1),
])
def test_arbitrary_upload_is_checked_before_writing(samples, slot):
    afg, t = recording()
    with pytest.raises(InputError):
        afg.upload_arbitrary(samples, slot)
    assert t.written == []


def test_unknown_output_is_an_input_error():
    afg, t = recording()
    with pytest.raises(InputError):
        afg.set_output(3, True)
    with pytest.raises(InputError):
        afg.configure_pulse(0, period_s=1e-6, width_s=1e-7, delay_s=0, high_v=1, low_v=0)
    assert t.written == []


# -- the error queue ------------------------------------------------------------------------------

def test_error_queue_becomes_instrument_error_naming_instrument_command_and_message():
    with expected_protocol(AFG3152C, [("SOURce1:PULSe:WIDTh 2e-05", None),
                                      ("SYSTem:ERRor?", '-221,"Settings conflict"'),
                                      ("SYSTem:ERRor?", '-222,"Data out of range"'), NOERR],
                           name="afg") as afg:
        with pytest.raises(InstrumentError) as e:
            afg.ch1.width = 20e-6
    msg = str(e.value)
    assert "afg" in msg and "SOURce1:PULSe:WIDTh 2e-05" in msg
    assert "Settings conflict" in msg and "Data out of range" in msg


# -- simulator: Python model ---------------------------------------------------------------------------

def test_model_round_trip_and_twin_state():
    afg, model = sim()
    assert afg.idn().startswith("TEKTRONIX,AFG3152C,")
    afg.configure_burst(1, cycles=1, source="timer", timer_s=50e-6)
    afg.configure_pulse(1, period_s=50e-6, width_s=20e-6, delay_s=3e-6, high_v=1.0, low_v=0.0,
                        edge_s=10e-9)
    afg.configure_pulse(2, period_s=50e-6, width_s=100e-9, delay_s=25e-6, high_v=0.7, low_v=0.0)
    afg.set_output(1, True)
    s = model.ch1
    assert (s.shape, s.output, s.burst, s.burst_cycles) == ("PULSE", True, True, 1)
    assert (s.period, s.width, s.delay, s.lead, s.high, s.low) == pytest.approx(
        (50e-6, 20e-6, 3e-6, 10e-9, 1.0, 0.0))
    assert model.pulse(2).width == pytest.approx(100e-9) and model.ch2.high == pytest.approx(0.7)
    assert model.trigger() == {"source": "TIMer", "timer": pytest.approx(50e-6), "slope": "POSitive"}
    # shrink everything (the driver must order the writes; the model refuses any conflict)
    afg.configure_pulse(1, period_s=200e-9, width_s=50e-9, delay_s=20e-9, high_v=-0.1, low_v=-0.3,
                        edge_s=2.5e-9)
    assert (model.ch1.period, model.ch1.width, model.ch1.high) == pytest.approx((200e-9, 50e-9, -0.1))
    snap = afg.snapshot()
    assert snap["settings"]["ch1"]["width"] == pytest.approx(50e-9)
    assert snap["settings"]["ch1"]["output"] is True and snap["settings"]["trigger_source"] == "timer"
    afg.safe_state()
    assert not model.ch1.output and not model.ch2.output


def test_model_refuses_a_width_longer_than_the_period():
    afg, model = sim()
    afg.ch1.period = 1e-6
    with pytest.raises(InstrumentError) as e:
        afg.ch1.width = 2e-6          # individually in range; the instrument says conflict
    assert "-221" in str(e.value) and "Settings conflict" in str(e.value)
    assert model.ch1.width == pytest.approx(5e-7)    # unchanged


def test_model_level_rules_follow_the_load():
    afg, model = sim()
    afg.ch1.load = "inf"
    assert model.ch1.load == math.inf and model.ch1.high == pytest.approx(1.0)   # EMF kept
    afg.ch1.high = 9.0                 # fine into high-Z
    afg.ch1.load = 50
    assert model.ch1.high == pytest.approx(4.5)
    with pytest.raises(InstrumentError):
        afg.write("SOURce1:VOLTage:LEVel:IMMediate:HIGH 6")
        afg.check_errors("SOURce1:VOLTage:LEVel:IMMediate:HIGH 6")


def test_model_arbitrary_upload_and_bad_blocks():
    afg, model = sim()
    x = np.sin(np.linspace(0, 2 * np.pi, 1000, endpoint=False))
    afg.upload_arbitrary(x, 3)
    assert model.user_waveforms[3].size == 1000
    assert np.abs(model.waveform(3) - x).max() < 1.5 / ARB_CODE_MAX
    afg.ch1.shape = "user3"
    assert model.ch1.shape == "USER3"
    # a block whose length does not match DATA:DEFine: -160
    afg.write("DATA:DEFine EMEMory,4")
    afg.transport.write_raw(b"DATA:DATA EMEMory,#16" + bytes(6) + b"\n")
    with pytest.raises(InstrumentError) as e:
        afg.check_errors("DATA:DATA")
    assert "-160" in str(e.value)
    # a malformed header: -160; out-of-range DEFine: -222; unknown slot: -222
    afg.transport.write_raw(b"DATA:DATA EMEMory,#x12\n")
    afg.write("DATA:DEFine EMEMory,1")
    afg.write("DATA:COPY USER9,EMEMory")
    with pytest.raises(InstrumentError) as e:
        afg.check_errors("several")
    assert str(e.value).count("-160") == 1 and str(e.value).count("-222") == 2
    assert afg.query("DATA:POINts? EMEMory") == "4"


def test_model_power_cycle_keeps_user_memories_only():
    afg, model = sim()
    afg.upload_arbitrary(np.array([0, 100, 200], dtype=np.int64), 1)
    afg.ch1.width = 100e-9
    model.power_cycle()
    assert model.ch1.width == pytest.approx(5e-7)
    assert list(model.user_waveforms[1]) == [0, 100, 200]


# -- simulator: pyvisa-sim YAML through real pyvisa ---------------------------------------------------

def test_yaml_through_pyvisa():
    t = VisaTransport(RESOURCE, backend=f"{YAML}@sim", name="afg")
    afg = AFG3152C("afg", t)
    try:
        assert afg.idn() == "TEKTRONIX,AFG3152C,C012345,SCPI:99.0 FV:3.1.2"
        afg.connect()
        afg.ch1.shape = "pulse"
        afg.ch1.width = 20e-6
        afg.ch2.delay = 1e-6
        afg.ch1.burst_cycles = 4
        afg.trigger_timer = 50e-6
        afg.ch1.load = "inf"
        afg.set_output(1, True)
        assert afg.ch1.shape == "pulse" and afg.ch1.width == pytest.approx(20e-6)
        assert afg.ch2.delay == pytest.approx(1e-6) and afg.ch1.burst_cycles == 4
        assert afg.ch1.output is True and math.isinf(afg.ch1.load)
        assert afg.opc()
        afg.write("SOURce1:PULSe:WIDTh 5000")          # beyond the YAML spec
        with pytest.raises(InstrumentError) as e:
            afg.check_errors("SOURce1:PULSe:WIDTh 5000")
        assert "Command error" in str(e.value) and "afg" in str(e.value)
        assert afg.snapshot()["settings"]["ch1"]["width"] == pytest.approx(20e-6)
    finally:
        afg.close()


# -- hypothesis -----------------------------------------------------------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


@settings(max_examples=150)
@given(v=finite)
def test_width_validation_matches_the_limits(v):
    afg, t = recording()
    if 5e-9 <= v <= 999.99:
        assert afg.check("ch1.width", v) == v
    else:
        with pytest.raises(SettingError):
            afg.ch1.width = v
    assert t.written == []


@settings(max_examples=150)
@given(v=finite, load=st.sampled_from([50.0, 1.0, 1000.0, math.inf]))
def test_level_validation_follows_the_load(v, load):
    afg, t = recording()
    afg.ch1._cache["load"] = load
    w = level_window(load)
    amin, amax = amplitude_limits(load)
    for name, ok in (("high", -w <= v <= w), ("amplitude", amin <= v <= amax)):
        if ok:
            afg.check(f"ch1.{name}", v)
        elif not math.isclose(abs(v), w) and not math.isclose(v, amin) and not math.isclose(v, amax):
            with pytest.raises(SettingError):
                afg.check(f"ch1.{name}", v)
    assert t.written == []


@settings(max_examples=100)
@given(st.lists(st.floats(-1.0, 1.0), min_size=2, max_size=300))
def test_sample_codes_round_trip(samples):
    codes = AFG3152C.to_codes(np.array(samples))
    assert codes.min() >= 0 and codes.max() <= ARB_CODE_MAX
    back = codes / (ARB_CODE_MAX / 2) - 1
    assert np.abs(back - np.array(samples)).max() <= 1.0 / ARB_CODE_MAX + 1e-12


@settings(max_examples=40)
@given(period=st.floats(10e-9, 1000), frac=st.floats(0.0, 1.2), edge=st.floats(2.5e-9, 1e-6))
def test_configure_pulse_either_writes_a_valid_state_or_nothing(period, frac, edge):
    afg, model = sim()
    width = max(frac * period, 5e-9)
    kw = dict(period_s=period, width_s=width, delay_s=0.0, high_v=1.0, low_v=0.0, edge_s=edge)
    allowed = width <= 999.99 and timing_ok(period, width, edge, edge, 0.0, False) is None
    if allowed:
        afg.configure_pulse(1, **kw)
        assert (model.ch1.period, model.ch1.width, model.ch1.lead) == pytest.approx((period, width, edge))
    else:
        n = len(model.log)
        with pytest.raises(SettingError):
            afg.configure_pulse(1, **kw)
        assert all(m.endswith("?") for m in model.log[n:])     # queries at most, no setting
