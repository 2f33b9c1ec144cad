"""The instrument layer: declarative settings, validation before writes, error queue, snapshot,
transports (model, pyvisa-sim), message-list protocol helper."""
import pytest
from hypothesis import given, strategies as st

from labctl.errors import InputError, InstrumentError, InstrumentTimeout, SettingError
from labctl.instrument.base import Component, Instrument, Setting, on_off
from labctl.instrument.transport import ModelTransport
from labctl.testing import ProtocolMismatch, RecordingTransport, expected_protocol
from sim_instruments.models.base import DeviceModel, parse_block


class Chan(Component):
    frequency = Setting("SOUR{ch}:FREQ?", "SOUR{ch}:FREQ {value}", unit="Hz", limits=(1.0, 1e6))
    enabled = Setting("OUTP{ch}?", "OUTP{ch} {value}", mapping=on_off())
    shape = Setting("SOUR{ch}:SHAP?", "SOUR{ch}:SHAP {value}", mapping={"pulse": "PULS", "sine": "SIN"})


class Box(Instrument):
    model = "Box 1000"
    components = {"ch1": (Chan, {"ch": 1}), "ch2": (Chan, {"ch": 2})}
    level = Setting("LEV?", "LEV {value}", unit="V", limits=lambda c: (-c.options.get("vmax", 5.0), c.options.get("vmax", 5.0)))

    def safe_state(self):
        self.ch1.enabled = False
        self.ch2.enabled = False


NOERR = ("SYSTem:ERRor?", '0,"No error"')


def test_set_writes_command_then_reads_error_queue():
    with expected_protocol(Box, [("SOUR2:FREQ 20000", None), NOERR]) as box:
        box.ch2.frequency = 20e3


class Odd(Instrument):
    """Set templates the spliced fast path must not mistake: a format spec on the value, the value
    twice, a component variable after the value, no value at all."""
    error_query = None
    padded = Setting(None, "PAD {value:>6}", limits=(0, 10), check_errors=False)
    twice = Setting(None, "A {value};B {value}", limits=(0, 10), check_errors=False)
    after = Setting(None, "SET {value},{unit_}", limits=(0, 10), check_errors=False)
    bare = Setting(None, "TRIG", mapping={True: "1"}, check_errors=False)


def test_set_templates_with_specs_repeats_and_variables():
    t = RecordingTransport()
    odd = Odd("odd", t)
    odd.variables["unit_"] = "V"
    for _ in range(2):  # the second time from the per-component template cache
        odd.padded = 3
        odd.twice = 4
        odd.after = 5
        odd.bare = True
    assert t.written == ["PAD      3", "A 4;B 4", "SET 5,V", "TRIG"] * 2


def test_units_in_strings_are_accepted():
    with expected_protocol(Box, [("LEV 1.5", None), NOERR]) as box:
        box.level = "1500 mV"


def test_mapping_both_ways():
    with expected_protocol(Box, [("OUTP1 ON", None), NOERR, ("OUTP1?", "1"), ("SOUR1:SHAP?", "PULSE")]) as box:
        box.ch1.enabled = True
        assert box.ch1.enabled is True
        assert box.ch1.shape == "pulse"


def test_out_of_range_raises_before_writing():
    t = RecordingTransport()
    box = Box("box", t)
    with pytest.raises(SettingError) as e:
        box.ch1.frequency = 2e6
    assert t.written == []
    assert "box.ch1" in str(e.value) and "frequency" in str(e.value)
    with pytest.raises(SettingError):
        box.ch1.shape = "triangle"
    with pytest.raises(SettingError):
        box.ch1.frequency = float("nan")
    with pytest.raises(InputError):
        box.ch1.frequency = "5 ns"
    assert t.written == []


def test_callable_limits_and_station_restrictions():
    t = RecordingTransport(lambda m: '0,"No error"' if m.startswith("SYST") else None)
    box = Box("box", t, vmax=2.0)
    with pytest.raises(SettingError):
        box.level = 3.0
    box.level = 1.5
    box.restrict("level", 0.0, 1.0)
    with pytest.raises(SettingError) as e:
        box.level = 1.5
    assert "0" in str(e.value) and "1" in str(e.value)
    assert "LEV 1.5" in t.written


def test_error_queue_becomes_instrument_error():
    pairs = [("SOUR1:FREQ 10", None), ("SYSTem:ERRor?", '-222,"Data out of range"'),
             ("SYSTem:ERRor?", '0,"No error"')]
    with pytest.raises(InstrumentError) as e:
        with expected_protocol(Box, pairs) as box:
            box.ch1.frequency = 10
    msg = str(e.value)
    assert "dut" in msg and "SOUR1:FREQ 10" in msg and "Data out of range" in msg


def test_protocol_helper_catches_wrong_syntax():
    with pytest.raises(ProtocolMismatch):
        with expected_protocol(Box, [("SOURCE1:FREQ 10", None), NOERR]) as box:
            box.ch1.frequency = 10
    with pytest.raises(ProtocolMismatch):
        with expected_protocol(Box, [("SOUR1:FREQ 10", None), NOERR, ("LEV?", "1")]) as box:
            box.ch1.frequency = 10  # the LEV? pair is never used


def test_static_setting_specs():
    assert Box.setting_spec("ch2.frequency").unit == "Hz"
    assert "ch1.enabled" in Box.setting_paths() and "level" in Box.setting_paths()
    with pytest.raises(KeyError):
        Box.setting_spec("ch3.frequency")


class EchoModel(DeviceModel):
    """A tiny device: remembers LEV, answers LEV?, times out on anything else."""

    def __init__(self, name="", **kw):
        super().__init__(name, **kw)
        self.level = 0.0

    def handle(self, message):
        if message.startswith("LEV "):
            self.level = float(message[4:])
            return None
        if message == "LEV?":
            return f"{self.level:g}"
        if message == "SYSTem:ERRor?":
            return '0,"No error"'
        if message == "*IDN?":
            return "ACME,BOX1000,42,1.0"
        return None


def test_model_transport_roundtrip_and_snapshot():
    box = Box("box", ModelTransport("sim://box", EchoModel()))
    box.level = 2.5
    assert box.level == 2.5
    assert box.idn() == "ACME,BOX1000,42,1.0"
    with pytest.raises(InstrumentTimeout) as e:
        box.ch1.frequency  # the model does not answer this query
    assert "sim://box" in str(e.value) and "box" in str(e.value)


def test_block_aware_model_keeps_binary_blocks_whole():
    class BlockModel(DeviceModel):
        block_aware = True

        def __init__(self):
            super().__init__()
            self.got = []

        def handle(self, message):
            self.got.append(message)

    m = BlockModel()
    payload = b"\n\x00\n\xff"
    m.feed(b"DATA #14" + payload + b"\nNEXT\n")
    assert m.got[0].encode("latin-1") == b"DATA #14" + payload
    assert m.got[1] == "NEXT"
    assert parse_block("#14" + payload.decode("latin-1")) == payload


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_validation_is_exact_about_limits(x):
    t = RecordingTransport(lambda m: '0,"No error"' if m.startswith("SYST") else None)
    box = Box("box", t)
    if 1.0 <= x <= 1e6:
        box.ch1.frequency = x
        assert t.written[0].startswith("SOUR1:FREQ ")
    else:
        with pytest.raises(SettingError):
            box.ch1.frequency = x
        assert t.written == []


def test_yaml_model_keeps_trailing_block_bytes_that_look_like_whitespace():
    from sim_instruments.models.base import YamlScpiModel

    class M(YamlScpiModel):
        yaml_file = "afg3152c.yaml"
        yaml_resource = next(iter(__import__("yaml").safe_load(
            open(__import__("sim_instruments.models.base", fromlist=["VISA_DIR"]).VISA_DIR / "afg3152c.yaml"))["resources"]))
        handlers = [(r"DATA (#.*)", "data")]

        def data(self, m):
            self.payload = m.group(1)

    model = M()
    payload = "\x00\x0b\x20\x0a"
    model.feed(("DATA #14" + payload + "\n").encode("latin-1"))
    assert model.payload == "#14" + payload


def test_tolerance_is_relative_to_each_limit():
    class W(Instrument):
        width = Setting("W?", "W {value}", unit="s", limits=(5e-9, 999.99))

        def safe_state(self):
            pass

    t = RecordingTransport(lambda m: '0,"No error"' if m.startswith("SYST") else None)
    w = W("w", t)
    with pytest.raises(SettingError):
        w.width = 4.1e-9
    w.width = 5e-9 * (1 - 1e-14)  # round-off below the limit is accepted and sent as the limit
    assert t.written[0] == "W 5e-09"
