"""Quantities with units (labctl.units): parsing, dimension checks, formatting."""
import math

import pytest
from hypothesis import given, strategies as st

from labctl import units
from labctl.errors import InputError, UnitError


@pytest.mark.parametrize("text,value,dim", [
    ("50 us", 50e-6, "s"), ("50us", 50e-6, "s"), ("123 ns", 123e-9, "s"), ("45 MHz", 45e6, "Hz"),
    ("0.2 pi", 0.2 * math.pi, "rad"), ("3.4 %", 0.034, "1"), ("4.2 GSa/s", 4.2e9, "Hz"),
    ("1553.8 nm", 1553.8e-9, "m"), ("2 Vpp", 2.0, "V"), ("-1.5 V", -1.5, "V"), ("90 deg", math.pi / 2, "rad"),
    ("60 mK", 0.06, "K"), ("1e-3 s", 1e-3, "s"), ("10 dB", 10.0, "dB"), ("5 µs", 5e-6, "s"),
    ("0 dBm", 1e-3, "W"), ("30 dBm", 1.0, "W"), ("pi", math.pi, "rad"), (".5 mW", 0.5e-3, "W"),
])
def test_parse_known(text, value, dim):
    q = units.parse(text)
    assert q.dim == dim
    assert q.value == pytest.approx(value, rel=1e-12)


@pytest.mark.parametrize("text", ["40 parsec", "fast", "1..2 ns", "ns 5", "", "5 n s", "--3 ns"])
def test_parse_rejects(text):
    with pytest.raises(UnitError):
        units.parse(text, where="pulse.duration")


def test_dimension_mismatch_names_both():
    with pytest.raises(UnitError) as e:
        units.parse_as("45 MHz", "s", where="pump.duration")
    assert "frequency" in str(e.value) and "time" in str(e.value) and "pump.duration" in str(e.value)


def test_bare_number_needs_unit_for_time():
    with pytest.raises(UnitError) as e:
        units.parse_as(50, "s", where="period")
    assert "no unit" in str(e.value)
    assert units.parse_as(3, "1") == 3.0
    assert units.parse_as(7, "dB") == 7.0


def test_errors_are_input_errors():
    assert issubclass(UnitError, InputError)


_prefixes = st.sampled_from(["p", "n", "u", "m", "", "k", "M", "G"])
_bases = st.sampled_from(["s", "Hz", "V", "W", "m"])


@given(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False), _prefixes, _bases)
def test_roundtrip_prefixes(x, prefix, base):
    q = units.parse(f"{x!r} {prefix}{base}")
    assert q.dim == units.BASE_UNITS[base]
    assert q.value == pytest.approx(x * units.PREFIXES[prefix], rel=1e-12, abs=1e-300)


@given(st.text(max_size=20))
def test_parser_never_crashes(text):
    try:
        units.parse(text)
    except UnitError:
        pass


@given(st.floats(min_value=1e-14, max_value=1e12), st.sampled_from(["s", "Hz", "V"]))
def test_format_parses_back(x, dim):
    back = units.parse_as(units.format_quantity(x, dim, digits=12), dim)
    assert back == pytest.approx(x, rel=1e-9)
