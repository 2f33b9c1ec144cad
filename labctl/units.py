"""Quantities with units, as written in sequences and station files: ``50 us``, ``45 MHz``,
``0.2 pi``, ``3.4 %``, ``-3 dBm``, ``4.2 GSa/s``.

Values are converted to SI (seconds, hertz, volts, watts, radians, metres, joules, kelvin, ohms;
dB stays dB). A value with no unit is accepted only where the dimension is "1" (a pure number).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .errors import UnitError

PREFIXES = {"f": 1e-15, "p": 1e-12, "n": 1e-9, "u": 1e-6, "µ": 1e-6, "μ": 1e-6, "m": 1e-3,
            "": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}

#: base unit symbol -> dimension; every one of these takes SI prefixes
BASE_UNITS = {
    "s": "s", "Hz": "Hz", "Sa/s": "Hz", "S/s": "Hz", "V": "V", "Vpp": "V", "Vpk": "V", "A": "A",
    "W": "W", "J": "J", "m": "m", "rad": "rad", "K": "K", "Ohm": "Ohm", "ohm": "Ohm", "Ω": "Ohm",
}
#: units with a fixed factor and no prefixes
SPECIAL_UNITS = {
    "%": ("1", 1e-2), "ppm": ("1", 1e-6), "pi": ("rad", math.pi), "π": ("rad", math.pi),
    "deg": ("rad", math.pi / 180.0), "°": ("rad", math.pi / 180.0), "dB": ("dB", 1.0),
    "min": ("s", 60.0), "h": ("s", 3600.0), "": ("1", 1.0),
}
DIMENSION_NAMES = {
    "s": "a time (s, ms, us, ns, ps)", "Hz": "a frequency (Hz, kHz, MHz, GHz) or rate (GSa/s)",
    "V": "a voltage (V, mV)", "A": "a current (A, mA, uA)", "W": "a power (W, mW, uW, dBm)",
    "J": "an energy (J, nJ, pJ, fJ)", "m": "a length (m, um, nm)",
    "rad": "a phase (rad, mrad, deg, pi)", "K": "a temperature (K, mK)", "Ohm": "a resistance (Ohm)",
    "dB": "a level in dB", "1": "a plain number or a percentage (%, ppm)",
}

_NUM = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_QUANTITY = re.compile(rf"^\s*({_NUM})?\s*\*?\s*([^\s\d+\-*][^\s]*)?\s*$")


@dataclass(frozen=True)
class Quantity:
    """A value in SI units with its dimension (one of the DIMENSION_NAMES keys)."""

    value: float
    dim: str

    def __str__(self) -> str:
        return format_quantity(self.value, self.dim)


def unit_factor(unit: str) -> tuple[str, float] | None:
    """Dimension and SI factor of a unit symbol, or None if unknown. ``dBm`` is handled by callers."""
    if unit in SPECIAL_UNITS:
        return SPECIAL_UNITS[unit]
    if unit in BASE_UNITS:
        return BASE_UNITS[unit], 1.0
    for p, f in PREFIXES.items():
        if p and unit.startswith(p) and unit[len(p):] in BASE_UNITS:
            return BASE_UNITS[unit[len(p):]], f
    return None


def parse(text: object, where: str = "value") -> Quantity:
    """Parse ``text`` (a number, or a string like ``"50 us"``) into a Quantity.

    Raises UnitError naming ``where`` for malformed text or unknown units.
    """
    if isinstance(text, bool):
        raise UnitError(f"{where}: expected a quantity, got {text!r}", fix="write a number with a unit, e.g. 50 us")
    if isinstance(text, (int, float)):
        if not math.isfinite(float(text)):
            raise UnitError(f"{where}: {text!r} is not a finite number", fix="write a finite value")
        return Quantity(float(text), "1")
    if not isinstance(text, str):
        raise UnitError(f"{where}: expected a quantity such as '50 us', got {type(text).__name__}",
                        fix="write a number with a unit, e.g. 50 us")
    m = _QUANTITY.match(text)
    if not m or (m.group(1) is None and not m.group(2)):
        raise UnitError(f"{where}: cannot read {text!r} as a number with a unit",
                        fix="write it as '<number> <unit>', e.g. '123 ns', '45 MHz', '0.2 pi'")
    num = float(m.group(1)) if m.group(1) is not None else 1.0
    unit = m.group(2) or ""
    if unit == "dBm":
        return Quantity(1e-3 * 10 ** (num / 10.0), "W")
    uf = unit_factor(unit)
    if uf is None:
        raise UnitError(f"{where}: unknown unit {unit!r} in {text!r}",
                        fix="use SI units with prefixes (s, Hz, V, W, J, m, rad), or %, ppm, pi, deg, dB, dBm")
    dim, factor = uf
    value = num * factor
    if not math.isfinite(value):
        raise UnitError(f"{where}: {text!r} is not a finite value", fix="write a finite value")
    return Quantity(value, dim)


def parse_as(text: object, dim: str, where: str = "value") -> float:
    """Parse ``text`` and require dimension ``dim``; return the SI value.

    A bare number is accepted for dimension "1" and for "dB"; elsewhere a unit is required, because
    a bare ``50`` could mean 50 s or 50 us.
    """
    q = parse(text, where)
    if q.dim == dim:
        return q.value
    if q.dim == "1" and dim == "dB" and not (isinstance(text, str) and '%' in text):
        return q.value
    want = DIMENSION_NAMES.get(dim, dim)
    if q.dim == "1" and (isinstance(text, (int, float)) or not re.search(r"[A-Za-z%]", str(text))):
        raise UnitError(f"{where}: {text!r} has no unit; it must be {want}",
                        fix=f"add the unit, e.g. '{text} {_example_unit(dim)}'")
    raise UnitError(f"{where}: {text!r} is {DIMENSION_NAMES.get(q.dim, q.dim)}, but it must be {want}",
                    fix=f"write it in {_example_unit(dim)} or a prefixed form")


def _example_unit(dim: str) -> str:
    return {"s": "ns", "Hz": "MHz", "V": "V", "A": "mA", "W": "mW", "J": "pJ", "m": "nm",
            "rad": "pi", "K": "mK", "Ohm": "Ohm", "dB": "dB", "1": "%"}.get(dim, dim)


_ENG = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, ""), (1e-3, "m"), (1e-6, "u"),
        (1e-9, "n"), (1e-12, "p"), (1e-15, "f")]


def format_quantity(value: float, dim: str, digits: int = 6) -> str:
    """Engineering notation for display: ``format_quantity(5e-5, 's') == '50 us'``."""
    if dim == "rad":
        return f"{value / math.pi:.{digits}g} pi"
    if dim == "1":
        return f"{value:.{digits}g}"
    if dim == "dB":
        return f"{value:.{digits}g} dB"
    if value == 0 or not math.isfinite(value):
        return f"{value:g} {dim}"
    a = abs(value)
    for f, p in _ENG:
        if a >= f * 0.9999999:
            return f"{value / f:.{digits}g} {p}{dim}"
    return f"{value:.{digits}g} {dim}"
