"""SRS SR865A lock-in driver: the manual's command strings (message-list protocol tests), *ESR?
after every set, table settings and limits before any write, the capture sequence and its binary
blocks (little endian, no terminator), safe_state, and the simulator — Python model through
ModelTransport (capture buffer, status bits, trigger, real-time progress) and the YAML through
real pyvisa (pyvisa-sim)."""
from __future__ import annotations


import numpy as np
import pytest
from hypothesis import given, strategies as st

from drivers.srs_sr865a import (SENSITIVITIES, SR865A, TIME_CONSTANTS, Capture)
from labctl.errors import InstrumentError, SettingError
from labctl.instrument.transport import ModelTransport, VisaTransport
from labctl.testing import RecordingTransport, expected_protocol
from sim_instruments.models import load_model_class
from sim_instruments.models.base import VISA_DIR
from sim_instruments.models.sr865a import SR865AModel, max_capture_rate

OK = "0"
YAML = VISA_DIR / "sr865a.yaml"
RESOURCE = "TCPIP0::sr865a.sim::inst0::INSTR"


def sim(**model_options):
    model = SR865AModel("li", **model_options)
    t = ModelTransport("sim://li", model, read_termination="\n", write_termination="\n", timeout=0.5)
    return model, SR865A("li", t, poll_interval="0 s", capture_timeout="1 s")


def block(values: np.ndarray) -> bytes:
    payload = np.asarray(values, "<f4").tobytes()
    n = str(len(payload))
    return b"#" + str(len(n)).encode() + n.encode() + payload


# -- class contract ---------------------------------------------------------------------------------
def test_class_attributes_and_tables():
    assert SR865A.read_termination == SR865A.write_termination == "\n"
    assert SR865A.error_query == "*ESR?" and SR865A.roles == ("lockin",)
    assert load_model_class(SR865A.simulator) is SR865AModel
    assert SENSITIVITIES[:4] == (1.0, 0.5, 0.2, 0.1) and SENSITIVITIES[27] == 1e-9
    assert TIME_CONSTANTS[0] == 1e-6 and TIME_CONSTANTS[2] == 1e-5 and TIME_CONSTANTS[21] == 3e4
    paths = set(SR865A.setting_paths())
    assert {"frequency", "time_constant", "filter_slope", "sensitivity", "capture_length_kb",
            "aux0.voltage", "aux3.voltage"} <= paths


# -- protocol: exact strings -------------------------------------------------------------------------
@pytest.mark.parametrize("setting,value,command", [
    ("frequency", 1e6, "FREQ 1000000"),
    ("frequency", "3.198725 MHz", "FREQ 3198725"),
    ("phase", 45.5, "PHAS 45.5"),
    ("harmonic", 2, "HARM 2"),
    ("time_constant", "10 us", "OFLT 2"),
    ("time_constant", 3e-6, "OFLT 1"),
    ("time_constant", 30000, "OFLT 21"),
    ("filter_slope", 24, "OFSL 3"),
    ("sensitivity", "10 mV", "SCAL 6"),
    ("sensitivity", 1.0, "SCAL 0"),
    ("input_range", 0.03, "IRNG 3"),
    ("input_config", "A-B", "ISRC 1"),
    ("input_coupling", "dc", "ICPL 1"),
    ("reference_source", "external", "RSRC 1"),
    ("reference_trigger", "positive", "RTRG 1"),
    ("timebase", "internal", "TBMODE 1"),
    ("sync_filter", False, "SYNC 0"),
    ("advanced_filter", True, "ADVFILT 1"),
    ("sine_amplitude", 0.5, "SLVL 0.5"),
    ("capture_length_kb", 256, "CAPTURELEN 256"),
    ("capture_config", "XYRT", "CAPTURECFG 3"),
    ("capture_rate_exponent", 4, "CAPTURERATE 4"),
])
def test_set_commands_then_esr(setting, value, command):
    with expected_protocol(SR865A, [(command, None), ("*ESR?", OK)]) as li:
        li.set(setting, value)


def test_aux_output_and_queries():
    with expected_protocol(SR865A, [("AUXV 2, -1.2500", None), ("*ESR?", OK), ("AUXV? 2", "-1.2500"),
                                    ("OFLT?", "2"), ("SCAL?", "6"), ("OFSL?", "1"), ("FREQ?", "1000.5")]) as li:
        li.aux2.voltage = -1.25
        assert li.aux2.voltage == -1.25
        assert li.time_constant == 1e-5 and li.sensitivity == 0.01 and li.filter_slope == 12
        assert li.frequency == 1000.5


def test_snap_and_outputs():
    with expected_protocol(SR865A, [("SNAP? 0,1", "1.5e-03,-2.0e-04"), ("OUTP? 0", "1.0e-3"),
                                    ("SNAP? 2,3,0", "1,45,0.7")]) as li:
        assert li.xy() == (1.5e-3, -2.0e-4)
        assert li.x == 1e-3
        assert li.snap("R", "theta", "X") == (1.0, 45.0, 0.7)
    with pytest.raises(Exception):
        SR865A("li", RecordingTransport()).snap("Z", "X")


def test_esr_error_bits_become_instrument_errors():
    with expected_protocol(SR865A, [("FREQ 1000", None), ("*ESR?", "32")]) as li:
        with pytest.raises(InstrumentError, match="CMD"):
            li.frequency = 1000
    with expected_protocol(SR865A, [("HARM 3", None), ("*ESR?", "16")]) as li:
        with pytest.raises(InstrumentError, match="EXE"):
            li.harmonic = 3
    # power-on (bit 7) and operation complete (bit 0) are not errors
    with expected_protocol(SR865A, [("HARM 3", None), ("*ESR?", "129")]) as li:
        li.harmonic = 3


def test_limits_refuse_before_writing():
    li = SR865A("li", t := RecordingTransport())
    for setting, value in (("frequency", 4.1e6), ("frequency", 0.0), ("phase", 4e5), ("harmonic", 100),
                           ("time_constant", 2e-5), ("time_constant", "20 us"), ("sensitivity", 3e-3),
                           ("filter_slope", 9), ("capture_length_kb", 4098), ("sine_amplitude", 2.5),
                           ("capture_rate_exponent", 21)):
        with pytest.raises(SettingError):
            li.set(setting, value)
    with pytest.raises(SettingError):
        li.aux0.voltage = 11
    with pytest.raises(SettingError):
        li.start_capture("forever")
    assert t.written == []


@given(st.floats(min_value=1e-3, max_value=4e6, allow_nan=False))
def test_any_frequency_in_range_is_sent_as_written(f):
    li = SR865A("li", t := RecordingTransport(lambda m: "0" if m == "*ESR?" else None))
    li.frequency = f
    assert t.written[0] == f"FREQ {f:.12g}" and float(t.written[0][5:]) == pytest.approx(f, rel=1e-11)


@given(st.sampled_from(TIME_CONSTANTS), st.floats(min_value=-5e-10, max_value=5e-10))
def test_time_constants_match_the_table_to_rounding(tc, rel):
    li = SR865A("li", t := RecordingTransport(lambda m: "0" if m == "*ESR?" else None))
    li.time_constant = tc * (1 + rel)
    assert t.written[0] == f"OFLT {TIME_CONSTANTS.index(tc)}"


def test_connect_clears_status_and_safe_state():
    with expected_protocol(SR865A, [("*CLS", None)]) as li:
        li.connect()
    pairs = [("CAPTURESTOP", None), ("SLVL 0", None), ("*ESR?", OK), ("SOFF 0.0000", None), ("*ESR?", OK)]
    for i in range(4):
        pairs += [(f"AUXV {i}, 0.0000", None), ("*ESR?", OK)]
    with expected_protocol(SR865A, pairs) as li:
        li.safe_state()


def test_safe_state_tries_everything_and_reports():
    pairs = [("CAPTURESTOP", None), ("SLVL 0", None), ("*ESR?", "16"), ("SOFF 0.0000", None), ("*ESR?", OK)]
    for i in range(4):
        pairs += [(f"AUXV {i}, 0.0000", None), ("*ESR?", OK)]
    with expected_protocol(SR865A, pairs) as li:
        with pytest.raises(InstrumentError, match="EXE"):
            li.safe_state()


def test_capture_sequence_and_little_endian_block():
    data = np.arange(2000, dtype=float).reshape(1000, 2) * 1e-6 - 1e-3
    raw = np.zeros(8 * 256)
    raw[:2000] = data.ravel()
    pairs = [("CAPTURERATEMAX?", "156250"), ("CAPTURECFG 1", None), ("*ESR?", OK),
             ("CAPTURELEN 8", None), ("*ESR?", OK), ("CAPTURERATE 1", None), ("*ESR?", OK),
             ("CAPTURESTART ONE, IMM", None), ("*ESR?", OK), ("CAPTUREBYTES?", "8192"),
             ("CAPTURESTOP", None), ("CAPTUREGET? 0,8", block(raw)), ("*ESR?", OK)]
    with expected_protocol(SR865A, pairs, poll_interval="0 s") as li:
        cap = li.acquire(1000, 78125.0)
    assert isinstance(cap, Capture) and cap.names == ("X", "Y") and cap.rate == 78125.0
    assert np.allclose(cap.data, data.astype("<f4"))
    assert cap.times[1] == pytest.approx(1 / 78125)


def test_capture_reads_in_64_kB_pieces_and_checks_the_rate():
    n = 20000                                   # 160000 B → 157 kB → 158 kB buffer, 3 reads
    vals = np.linspace(-1, 1, 158 * 256)
    pairs = [("CAPTURERATEMAX?", "1250000"), ("CAPTURECFG 1", None), ("*ESR?", OK),
             ("CAPTURELEN 158", None), ("*ESR?", OK), ("CAPTURERATE 3", None), ("*ESR?", OK),
             ("CAPTURESTART ONE, TRIG", None), ("*ESR?", OK), ("CAPTUREBYTES?", "0"),
             ("CAPTUREBYTES?", "160000"), ("CAPTURESTOP", None),
             ("CAPTUREGET? 0,64", block(vals[:16384])), ("CAPTUREGET? 64,64", block(vals[16384:32768])),
             ("CAPTUREGET? 128,29", block(vals[32768:32768 + 29 * 256])), ("*ESR?", OK)]
    fired = []
    with expected_protocol(SR865A, pairs, poll_interval="0 s") as li:
        xy = li.acquire_xy(n, "156.25 kHz", trigger="trigger", start_hook=lambda: fired.append(1))
    assert fired == [1] and xy.shape == (n, 2)
    assert np.allclose(xy.ravel(), vals[: 2 * n].astype("<f4"))
    with expected_protocol(SR865A, [("CAPTURERATEMAX?", "1250000")]) as li:
        with pytest.raises(SettingError, match="CAPTURERATEMAX"):
            li.configure_capture(1000, 100e3)
    li = SR865A("li", t := RecordingTransport())
    with pytest.raises(SettingError):
        li.configure_capture(600_000, 1e3)      # more than 4 MB of (X, Y)
    with pytest.raises(SettingError):
        li.configure_capture(0, 1e3)
    assert t.written == []


def test_malformed_block_is_an_instrument_error():
    pairs = [("CAPTUREGET? 0,1", b"#3100" + b"\0" * 50)]    # 50 of 100 bytes: the read times out
    with expected_protocol(SR865A, pairs) as li:
        with pytest.raises(InstrumentError, match="no answer"):
            li._read_block("CAPTUREGET? 0,1")
    with expected_protocol(SR865A, [("CAPTUREGET? 0,1", b"garbage")]) as li:
        with pytest.raises(InstrumentError, match="binary block"):
            li._read_block("CAPTUREGET? 0,1")


def test_oscillator_option_is_checked():
    assert SR865A("li", RecordingTransport(), oscillator=2).oscillator == 2
    with pytest.raises(Exception, match="oscillator"):
        SR865A("li", RecordingTransport(), oscillator=3)


# -- simulator: Python model ----------------------------------------------------------------------------
def test_sim_round_trip_settings_and_snapshot():
    model, li = sim()
    li.connect()
    assert li.idn().startswith("Stanford_Research_Systems,SR865A")
    li.configure_reference("3.198725 MHz", phase_deg=12.5)
    li.configure_filter("10 us", 12)
    li.sensitivity = "100 mV"
    assert li.frequency == 3.198725e6 and li.phase == 12.5 and li.time_constant == 1e-5
    assert li.filter_slope == 12 and li.sensitivity == 0.1 and li.advanced_filter is False
    assert li.noise_bandwidth == pytest.approx(1 / (8 * 1e-5))
    assert li.capture_rate_max == max_capture_rate(1e-5) == 156250.0
    snap = li.snapshot()
    assert snap["settings"]["time_constant"] == 1e-5 and snap["settings"]["aux1"] == {"voltage": 0.0}
    assert model.settings()["order"] == 2


def test_sim_capture_returns_the_trace_source_samples():
    model, li = sim()
    li.configure_filter("10 us", 12)
    rng = np.random.default_rng(1)
    src = rng.normal(0, 1e-3, (5000, 2))
    calls = []

    def trace(n, rate, settings):
        calls.append((n, rate, settings["time_constant"], settings["order"]))
        return src[:n]

    model.trace_source = trace
    rate = li.capture_rate_max / 4
    xy = li.acquire_xy(3000, rate)
    assert np.allclose(xy, src[:3000].astype("<f4"))
    n_buf = li.capture_length_kb * 1024 // 8
    assert calls == [(n_buf, rate, 1e-5, 2)]
    assert li.capture_status() & 0b110 == 0b110           # triggered and wrapped, not capturing
    assert model.prop("capture_length") == 24 and li.captured_bytes() == 24 * 1024
    # SNAP? answers the last captured sample
    x, y = li.xy()
    assert (x, y) == pytest.approx(tuple(src[n_buf - 1]), rel=1e-6)


def test_sim_status_bits_like_the_instrument():
    model, li = sim()
    li.write("CAPTURELEN 3")                                 # odd: execution error
    with pytest.raises(InstrumentError, match="EXE"):
        li.check_errors("CAPTURELEN 3")
    li.write("BOGUS 1")
    with pytest.raises(InstrumentError, match="CMD"):
        li.check_errors("BOGUS 1")
    li.write("OFLT 22")                                      # out of the YAML specs
    with pytest.raises(InstrumentError, match="EXE"):
        li.check_errors("OFLT 22")
    li.check_errors()                                        # reading cleared it
    li.write("CAPTURESTART ONE, TRIG")
    li.write("CAPTUREGET? 0,1")                              # while capturing: range error
    with pytest.raises(InstrumentError, match="EXE"):
        li.check_errors("CAPTUREGET?")
    model.lia_status = 8
    assert li.lia_status() == 8 and li.lia_status() == 0
    li.write("*CLS")
    model.esr = 16
    li.write("*CLS")
    li.check_errors()


def test_sim_trigger_mode_waits_for_the_hardware_trigger():
    model, li = sim()
    li.configure_filter("10 us", 12)
    li.configure_capture(1000, li.capture_rate_max)
    li.start_capture("one", "trigger")
    assert li.captured_bytes() == 0 and model.armed
    model.hardware_trigger()
    assert li.captured_bytes() == 8 * 1024
    li.stop_capture()
    cap = li.read_capture(1000)
    assert cap.data.shape == (1000, 2) and np.all(np.isfinite(cap.data))


def test_sim_realtime_capture_progress():
    model, li = sim(realtime=True)
    now = [100.0]
    model.clock = lambda: now[0]
    li.configure_filter("10 us", 12)
    rate = li.configure_capture(1024, li.capture_rate_max / 8)
    li.start_capture()
    assert li.captured_bytes() == 0 and li.capture_status() & 1
    now[0] += 512 / rate
    assert li.captured_bytes() == 512 * 8
    now[0] += 1.0
    assert li.captured_bytes() == 8 * 1024 and not li.capture_status() & 1


def test_sim_capturget_wraps_and_reads_offsets():
    model, li = sim()
    model.trace_source = lambda n, r, s: np.tile(np.arange(n, dtype=float)[:, None], (1, 2))
    li.configure_capture(1024, li.capture_rate_max)       # 8 kB
    li.start_capture()
    li.stop_capture()
    tail = np.frombuffer(li._read_block("CAPTUREGET? 6,4"), "<f4")   # 6…10 kB: wraps to the start
    assert tail.size == 1024 and tail[0] == 768 and tail[512] == 0
    assert model.log[-1].startswith("CAPTUREGET?")


def test_sim_power_cycle_loses_settings():
    model, li = sim()
    li.time_constant = 1e-3
    model.power_cycle()
    assert li.time_constant == 1.0


def test_sim_default_trace_is_filtered_noise():
    model, li = sim(noise_v=1e-3, seed=2)
    li.configure_filter("100 us", 24)
    xy = li.acquire_xy(4096, li.capture_rate_max)
    assert 0 < np.std(xy) < 1e-3 and abs(np.corrcoef(xy[1:, 0], xy[:-1, 0])[0, 1]) > 0.5


# -- simulator: YAML through real pyvisa ---------------------------------------------------------------
def test_pyvisa_sim_text_commands():
    t = VisaTransport(RESOURCE, backend=f"{YAML}@sim", read_termination="\n", write_termination="\n")
    li = SR865A("v", t)
    assert li.idn() == "Stanford_Research_Systems,SR865A,005432,V1.51"
    li.frequency = 1.5e6
    li.time_constant = 3e-6
    li.filter_slope = 24
    li.aux3.voltage = 2.5
    assert (li.frequency, li.time_constant, li.filter_slope, li.aux3.voltage) == (1.5e6, 3e-6, 24, 2.5)
    li.write("OFLT 30")                                  # refused by the specs: CMD bit standalone
    with pytest.raises(InstrumentError):
        li.check_errors("OFLT 30")
    assert li.time_constant == 3e-6
    assert set(li.snapshot()["settings"]) >= {"frequency", "noise_bandwidth", "capture_rate"}
    li.close()
