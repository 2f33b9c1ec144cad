"""Agilent/Keysight 81180A driver: exact command strings and the binary TRACe block (81180A
User's Guide 4.12), the segment-length rule and every limit checked before any write, the error
queue, the simulator (Python model with per-channel banks; pyvisa-sim YAML)."""
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from drivers.keysight_81180a import (DAC_MAX, Keysight81180A, check_segment_length, marker_bits,
                                     trace_block, volts_to_codes)
from labctl.errors import InputError, InstrumentError, SettingError
from labctl.instrument.protocols import WaveformGenerator, check_role
from labctl.instrument.transport import ModelTransport, VisaTransport
from labctl.testing import RecordingTransport, expected_protocol
from sim_instruments.models.ks81180a import Keysight81180AModel

YAML = Path(__file__).resolve().parents[1] / "sim_instruments" / "visa" / "ks81180a.yaml"
RESOURCE = "TCPIP0::ks81180a.sim::5025::SOCKET"
NOERR = ("SYSTem:ERRor?", '0,"No error"')


def sim(**options):
    model = Keysight81180AModel("awg", **{k: v for k, v in options.items() if k == "memory_points"})
    awg = Keysight81180A("awg", ModelTransport("sim://awg", model), **options)
    return awg, model


def recording(**options):
    t = RecordingTransport(lambda m: '0,"No error"' if m == "SYSTem:ERRor?" else None)
    return Keysight81180A("awg", t, **options), t


# -- exact syntax ---------------------------------------------------------------------------------

def test_settings_select_the_channel_in_the_same_message():
    with expected_protocol(Keysight81180A, [
        ("INSTrument:SELect 1;:FREQuency:RASTer 4200000000", None), NOERR,
        ("INSTrument:SELect 1;:VOLTage 0.5", None), NOERR,
        ("INSTrument:SELect 1;:VOLTage:OFFSet -0.25", None), NOERR,
        ("INSTrument:SELect 1;:OUTPut:COUPling DC", None), NOERR,
        ("INSTrument:SELect 1;:FUNCtion:MODE USER", None), NOERR,
        ("INSTrument:SELect 2;:INITiate:CONTinuous OFF", None), NOERR,
        ("INSTrument:SELect 2;:TRIGger:SOURce:ADVance EXTernal", None), NOERR,
        ("INSTrument:SELect 2;:TRIGger:LEVel 0.8", None), NOERR,
        ("INSTrument:SELect 1;:OUTPut ON", None), NOERR,
        ("INSTrument:SELect 1;:VOLTage?", "0.5"),
        ("INSTrument:SELect 1;:FUNCtion:MODE?", "USER"),
        ("INSTrument:SELect 2;:OUTPut?", "0"),
    ]) as awg:
        awg.set_sample_rate("4.2 GSa/s")
        awg.amplitude = "500 mV"
        awg.offset = -0.25
        awg.coupling = "dc"
        awg.mode = "user"
        awg.ch2.continuous = False
        awg.ch2.trigger_source = "external"
        awg.ch2.trigger_level = 0.8
        awg.set_output(1, True)
        assert awg.amplitude == 0.5 and awg.mode == "user" and awg.ch2.output is False


def test_upload_segment_block_bytes_little_endian_with_marker_bits():
    n = 320
    samples = np.full(n, 0.1)                       # = offset → code 2048 = 0x0800
    samples[-1] = 0.35                              # offset + Vpp/2 → 4095 = 0x0FFF
    m1 = np.zeros(n, bool)
    m1[:4] = True                                   # first 4-sample slot of group 0
    payload = bytearray(b"\x00\x08" * n)
    payload[-2:] = b"\xff\x0f"
    for i in (0, 8, 16, 24):                        # slot 0 is repeated in words k, 8+k, 16+k, 24+k
        payload[2 * i:2 * i + 2] = b"\x00\x18"      # 0x1800 = marker 1 (D12) | 2048
    block = b"TRACe:DATA #3640" + bytes(payload) + b"\n"
    with expected_protocol(Keysight81180A, [
        ("INSTrument:SELect 1;:VOLTage 0.5", None), NOERR,
        ("INSTrument:SELect 1;:VOLTage:OFFSet 0.1", None), NOERR,
        ("INSTrument:SELect 1;:TRACe:DEFine 3,320", None), NOERR,
        ("INSTrument:SELect 1;:TRACe:SELect 3", None), NOERR,
        (block, None), NOERR,
    ]) as awg:
        awg.upload_segment(3, samples, amplitude_vpp=0.5, offset_v=0.1, markers=m1)
    assert trace_block(np.array([1, 0x1234])) == b"#14\x01\x00\x34\x12"


def test_define_sequence_protocol():
    with expected_protocol(Keysight81180A, [
        ("INSTrument:SELect 2;:SEQuence:SELect 4", None), NOERR,
        ("INSTrument:SELect 2;:SEQuence:DELete 4", None), NOERR,
        ("INSTrument:SELect 2;:SEQuence:DEFine 1,1,1000,0", None), NOERR,
        ("INSTrument:SELect 2;:SEQuence:DEFine 2,2,1,1", None), NOERR,
        ("INSTrument:SELect 2;:SEQuence:DEFine 3,1,5,0", None), NOERR,
        ("INSTrument:SELect 2;:SEQuence:ADVance ONCE", None), NOERR,
        ("INSTrument:SELect 2;:FUNCtion:MODE SEQuence", None), NOERR,
    ]) as awg:
        awg.define_sequence([(1, 1000), (2, 1, True), {"segment": 1, "loops": 5}],
                            sequence=4, advance="once", output=2)


def test_safe_state_turns_outputs_off_then_offsets_to_zero():
    with expected_protocol(Keysight81180A, [
        ("INSTrument:SELect 1;:OUTPut OFF", None), ("SYSTem:ERRor?", '-300,"Device-specific error"'), NOERR,
        ("INSTrument:SELect 1;:VOLTage:OFFSet 0", None), NOERR,
        ("INSTrument:SELect 2;:OUTPut OFF", None), NOERR,
        ("INSTrument:SELect 2;:VOLTage:OFFSet 0", None), NOERR,
    ]) as awg:
        with pytest.raises(InstrumentError):          # reported, after every step was tried
            awg.safe_state()


def test_safe_state_offset_respects_station_limits():
    with expected_protocol(Keysight81180A, [
        ("INSTrument:SELect 1;:OUTPut OFF", None), NOERR,
        ("INSTrument:SELect 1;:VOLTage:OFFSet 0.2", None), NOERR,
    ], channels=1) as awg:
        awg.restrict("offset", 0.2, 1.0)
        awg.safe_state()


def test_single_channel_option_and_role():
    awg, t = recording(channels=1)
    assert not hasattr(awg, "ch2") and "ch2" not in dict(awg.walk())
    with pytest.raises(InputError):
        awg.set_output(2, True)
    with pytest.raises(InputError):
        Keysight81180A("x", RecordingTransport(), channels=3)
    assert t.written == []
    assert check_role(awg, "waveform_generator") == [] and isinstance(awg, WaveformGenerator)


# -- limits before any write ------------------------------------------------------------------------

@pytest.mark.parametrize("setting, value", [
    ("sample_rate", 9e6), ("sample_rate", 4.3e9), ("amplitude", 0.04), ("amplitude", 2.1),
    ("offset", 1.6), ("ch2.offset", -1.51), ("trigger_level", 5.5), ("trigger_count", 0),
    ("segment", 0), ("segment", 16_385), ("sequence", 1001), ("coupling", "rf"),
    ("trigger_timer", 50e-9), ("mode", "arb"),
])
def test_out_of_range_settings_write_nothing(setting, value):
    awg, t = recording()
    with pytest.raises(SettingError):
        awg.set(setting, value)
    assert t.written == []


@pytest.mark.parametrize("kw", [
    dict(segment=1, samples_v=np.zeros(319)),                      # shorter than 320
    dict(segment=1, samples_v=np.zeros(330)),                      # not a multiple of 32
    dict(segment=0, samples_v=np.zeros(320)),                      # no segment 0
    dict(segment=16_385, samples_v=np.zeros(320)),
    dict(segment=1, samples_v=np.full(320, 0.3)),                  # outside 0 ± 0.25 V
    dict(segment=1, samples_v=np.zeros(320), amplitude_vpp=3.0),
    dict(segment=1, samples_v=np.zeros(320), offset_v=2.0),
    dict(segment=1, samples_v=np.full(320, 4096, dtype=np.int64)),  # code beyond 12 bit
    dict(segment=1, samples_v=np.zeros((2, 320))),
    dict(segment=1, samples_v=np.zeros(320), markers=np.zeros(100)),
    dict(segment=1, samples_v=np.zeros(320), markers=[np.zeros(320)] * 3),
    dict(segment=1, samples_v=np.zeros(320), output=3),
    dict(segment=1, samples_v=np.array([0.0] * 319 + [np.nan])),
])
def test_upload_segment_checks_everything_before_the_first_write(kw):
    awg, t = recording()
    kw.setdefault("amplitude_vpp", 0.5)
    kw.setdefault("offset_v", 0.0)
    with pytest.raises(InputError):
        awg.upload_segment(**kw)
    assert t.written == []


def test_station_limits_apply_to_upload_segment():
    awg, t = recording()
    awg.restrict("offset", -0.5, 0.5)
    with pytest.raises(SettingError) as e:
        awg.upload_segment(1, np.zeros(320) + 1.0, amplitude_vpp=0.5, offset_v=1.0)
    assert "offset" in str(e.value) and t.written == []


@pytest.mark.parametrize("steps", [[], [(0, 1)], [(1, 0)], [(1, 1_048_576)], [(1, 1, 2)],
                                   [(1,)], ["x"], [(1.5, 1)]])
def test_sequence_steps_are_checked_before_writing(steps):
    awg, t = recording()
    with pytest.raises(InputError):
        awg.define_sequence(steps)
    assert t.written == []
    with pytest.raises(SettingError):
        awg.define_sequence([(1, 1)], sequence=0)
    assert t.written == []


def test_memory_size_bounds_the_segment():
    assert check_segment_length(16_000_000) == 16_000_000
    with pytest.raises(InputError):
        check_segment_length(16_000_032)
    assert check_segment_length(64_000_000, 64_000_000) == 64_000_000
    with pytest.raises(InputError):
        Keysight81180A("x", RecordingTransport(), memory_points=1000)


# -- the error queue ------------------------------------------------------------------------------

def test_error_queue_becomes_instrument_error():
    with expected_protocol(Keysight81180A, [("INSTrument:SELect 1;:VOLTage 1.5", None),
                                            ("SYSTem:ERRor?", '-221,"Settings conflict"'), NOERR],
                           name="awg") as awg:
        with pytest.raises(InstrumentError) as e:
            awg.amplitude = 1.5
    assert "awg" in str(e.value) and "INSTrument:SELect 1;:VOLTage 1.5" in str(e.value)
    assert "Settings conflict" in str(e.value)


# -- simulator: Python model ---------------------------------------------------------------------------

def _saw(n=640, periods=4, amp=0.5, off=0.0):
    k = np.arange(n)
    return off + amp * ((k * periods % n) / n - 0.5)


def test_model_round_trip_segments_markers_channels():
    awg, model = sim()
    assert awg.idn().startswith("Agilent Technologies,81180A,")
    awg.set_sample_rate(4.2e9)
    v = _saw(amp=0.5, off=0.2)
    m1 = np.zeros(640, bool)
    m1[64:128] = True
    awg.upload_segment(1, v, amplitude_vpp=0.5, offset_v=0.2, markers=(m1, None))
    awg.mode = "user"
    awg.upload_segment(1, np.zeros(320), amplitude_vpp=1.0, offset_v=0.0, output=2)
    awg.set_output(1, True)
    c1 = model.channel(1)
    assert (c1["mode"], c1["output"], c1["sample_rate"], c1["amplitude"], c1["offset"]) == \
        ("USER", True, pytest.approx(4.2e9), 0.5, 0.2)
    assert model.channel(2)["amplitude"] == 1.0 and model.channel(2)["output"] is False
    assert np.abs(model.segment_volts(1, 1) - v).max() <= 0.5 / 4094 / 2 + 1e-12
    assert np.array_equal(model.markers[1][1][0], m1) and not model.markers[1][1][1].any()
    assert len(model.segments[2][1]) == 320 and model.playing(1) == [(1, 1)]
    assert awg.query("INSTrument:SELect 1;:TRACe:POINts?") == "640"
    snap = awg.snapshot()["settings"]
    assert snap["amplitude"] == 0.5 and snap["ch2"]["amplitude"] == 1.0 and snap["output"] is True
    awg.safe_state()
    assert not model.channel(1)["output"] and model.channel(1)["offset"] == 0.0


def test_model_sequence_table():
    awg, model = sim()
    awg.upload_segment(1, _saw(), amplitude_vpp=0.5, offset_v=0.0)
    awg.upload_segment(2, np.zeros(320), amplitude_vpp=0.5, offset_v=0.0)
    awg.define_sequence([(1, 100), (2, 1, True)], sequence=3, advance="stepped")
    assert model.sequences[1][3] == [(1, 100, False), (2, 1, True)]
    assert model.channel(1)["mode"] == "SEQuence" and model.playing(1) == [(1, 100), (2, 1)]
    awg.define_sequence([(2, 7)], sequence=3)            # shorter table replaces the old one
    assert model.sequences[1][3] == [(2, 7, False)]
    with pytest.raises(InstrumentError) as e:             # segment 9 does not exist: conflict
        awg.define_sequence([(9, 1)], sequence=5)
    assert "-221" in str(e.value)


def test_model_rejects_bad_blocks_and_lengths():
    awg, model = sim(memory_points=16_000_000)
    awg.write("INSTrument:SELect 1;:TRACe:DEFine 1,320;:TRACe:SELect 1")
    awg.transport.write_raw(b"TRACe:DATA " + trace_block(np.zeros(318, np.uint16)) + b"\n")
    with pytest.raises(InstrumentError) as e:
        awg.check_errors("TRACe:DATA")
    assert "-161" in str(e.value) and "Invalid block data" in str(e.value)
    awg.transport.write_raw(b"TRACe:DATA " + trace_block(np.full(320, 0x8000, np.uint16)) + b"\n")
    awg.transport.write_raw(b"TRACe:DATA #x0\n")
    awg.write("INSTrument:SELect 1;:TRACe:DEFine 2,330")
    awg.write("INSTrument:SELect 1;:TRACe:DEFine 2,64")
    awg.write("INSTrument:SELect 3")
    with pytest.raises(InstrumentError) as e:
        awg.check_errors("several")
    msg = str(e.value)
    assert msg.count("-161") == 1 and msg.count("-160") == 1 and msg.count("-222") == 3
    assert np.all(model.segments[1][1] == 2048)           # untouched by the bad blocks


def test_model_memory_is_finite_and_volatile():
    model = Keysight81180AModel("awg", memory_points=640)
    awg = Keysight81180A("awg", ModelTransport("sim://awg", model))
    awg.upload_segment(1, np.zeros(640), amplitude_vpp=0.5, offset_v=0.0)
    with pytest.raises(InstrumentError) as e:
        awg.upload_segment(2, np.zeros(320), amplitude_vpp=0.5, offset_v=0.0)
    assert "-225" in str(e.value)
    awg.write("INSTrument:SELect 1;:TRACe:DELete:ALL")
    awg.upload_segment(2, np.zeros(320), amplitude_vpp=0.5, offset_v=0.0)
    model.power_cycle()
    assert model.segments[1] == {} and model.channel(1)["amplitude"] == 0.5


# -- simulator: pyvisa-sim YAML through real pyvisa ---------------------------------------------------

def test_yaml_through_pyvisa():
    t = VisaTransport(RESOURCE, backend=f"{YAML}@sim", name="awg")
    awg = Keysight81180A("awg", t)
    try:
        assert awg.idn() == "Agilent Technologies,81180A,MY48000123,1.24"
        awg.set_sample_rate(2.1e9)
        awg.amplitude = 0.4
        awg.offset = 0.3
        awg.mode = "user"
        awg.trigger_source = "timer"
        awg.set_output(1, True)
        assert awg.sample_rate == pytest.approx(2.1e9) and awg.amplitude == pytest.approx(0.4)
        assert awg.offset == pytest.approx(0.3) and awg.mode == "user" and awg.output is True
        assert awg.trigger_source == "timer" and awg.opc()
        awg.write("INSTrument:SELect 1;:VOLTage 7")       # beyond the YAML spec
        with pytest.raises(InstrumentError) as e:
            awg.check_errors("INSTrument:SELect 1;:VOLTage 7")
        assert "Command error" in str(e.value)
        assert awg.snapshot()["settings"]["offset"] == pytest.approx(0.3)
        awg.safe_state()
        assert awg.output is False and awg.offset == 0.0
    finally:
        awg.close()


# -- hypothesis -----------------------------------------------------------------------------------------

@settings(max_examples=200)
@given(n=st.integers(-10, 70_000_000))
def test_segment_length_rule(n):
    ok = n >= 320 and n % 32 == 0 and n <= 16_000_000
    if ok:
        assert check_segment_length(n) == n
    else:
        with pytest.raises(InputError):
            check_segment_length(n)


@settings(max_examples=60)
@given(n=st.integers(0, 3000))
def test_upload_writes_only_valid_lengths(n):
    awg, t = recording()
    codes = np.full(n, 2048, dtype=np.int64)
    if n >= 320 and n % 32 == 0:
        awg.upload_segment(1, codes, amplitude_vpp=0.5, offset_v=0.0)
        (raw,) = [w for w in t.written if isinstance(w, bytes)]
        head = f"TRACe:DATA #{len(str(2 * n))}{2 * n}".encode()
        assert raw.startswith(head) and len(raw) == len(head) + 2 * n + 1
    else:
        with pytest.raises(InputError):
            awg.upload_segment(1, codes, amplitude_vpp=0.5, offset_v=0.0)
        assert t.written == []


finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


@settings(max_examples=150)
@given(amp=finite, off=finite)
def test_level_validation(amp, off):
    awg, t = recording()
    for name, v, (lo, hi) in (("amplitude", amp, (0.05, 2.0)), ("offset", off, (-1.5, 1.5))):
        if lo <= v <= hi:
            assert awg.check(name, v) == v
        else:
            with pytest.raises(SettingError):
                awg.check(name, v)
    assert t.written == []


@settings(max_examples=100)
@given(amp=st.floats(0.05, 2.0), off=st.floats(-1.5, 1.5),
       x=st.lists(st.floats(-1.0, 1.0), min_size=1, max_size=200))
def test_volts_to_codes_round_trip(amp, off, x):
    v = off + np.array(x) * amp / 2
    codes = volts_to_codes(v, amp, off)
    assert codes.min() >= 1 and codes.max() <= DAC_MAX
    back = off + (codes.astype(float) - 2048) * amp / (2 * 2047)
    assert np.abs(back - v).max() <= amp / (2 * 2047) / 2 + 1e-12
    with pytest.raises(InputError):
        volts_to_codes(np.append(v, off + amp), amp, off)


@settings(max_examples=50)
@given(st.lists(st.booleans(), min_size=10, max_size=10), st.lists(st.booleans(), min_size=10, max_size=10))
def test_marker_bits_decode_like_the_model(a, b):
    n = 320
    m1 = np.repeat(np.array(a * 8), 4)[:n]
    m2 = np.repeat(np.array(b * 8), 4)[:n]
    words = marker_bits((m1, m2), n)
    groups = words.reshape(-1, 32)
    assert np.array_equal(np.repeat((groups[:, 24:] >> 12) & 1, 4, axis=1).reshape(-1), m1)
    assert np.array_equal(np.repeat((groups[:, 24:] >> 13) & 1, 4, axis=1).reshape(-1), m2)
    assert not np.any(words & 0xC000)
