"""A small, safe expression language for sequence values (never ``eval``).

Grammar::

    expr   := term (('+' | '-') term)*
    term   := factor (('*' | '/') factor)*
    factor := ('-' | '+') factor | NUMBER [UNIT] | NAME | '(' expr ')'
    NAME   := identifier ('.' identifier)*      e.g. tau, pump.end, read.start

Values carry dimensions (exponents of base units), so ``pump.end + tau`` is a time and
``pump.end + 45 MHz`` is an error. Names are resolved by a callback, which lets the sequence model
evaluate references lazily and detect cycles.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable

from .. import units
from ..errors import InputError

#: dimension as sorted tuple of (base, exponent); () is dimensionless
Dim = tuple

_BASE_OF = {"s": (("s", 1),), "Hz": (("s", -1),), "V": (("V", 1),), "A": (("A", 1),),
            "W": (("W", 1),), "J": (("J", 1),), "m": (("m", 1),), "rad": (("rad", 1),),
            "K": (("K", 1),), "Ohm": (("Ohm", 1),), "dB": (("dB", 1),), "1": ()}
_NAME_OF = {v: k for k, v in _BASE_OF.items()}
MAX_LENGTH = 500


def dim_of(unit_dim: str) -> Dim:
    return _BASE_OF[unit_dim]


def dim_name(d: Dim) -> str:
    """``(('s', 1),)`` -> 's' (known dimensions) or a product like 's^2'."""
    if d in _NAME_OF:
        return _NAME_OF[d]
    return "·".join(f"{b}^{e}" if e != 1 else b for b, e in d)


def _mul(a: Dim, b: Dim, sign: int = 1) -> Dim:
    acc: dict[str, int] = dict(a)
    for base, e in b:
        acc[base] = acc.get(base, 0) + sign * e
    return tuple(sorted((k, v) for k, v in acc.items() if v))


@dataclass(frozen=True)
class Value:
    """A number with a dimension (SI units)."""

    x: float
    dim: Dim = ()

    def __str__(self) -> str:
        name = dim_name(self.dim)
        if name in units.DIMENSION_NAMES:
            return units.format_quantity(self.x, name)
        return f"{self.x:g} {name}"


class ExprError(InputError):
    pass


_TOKEN = re.compile(r"""
    (?P<num>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<rate>[kMG]?Sa/s\b|[kMG]?S/s\b)
  | (?P<name>[A-Za-z_µμ°%Ωπ][A-Za-z0-9_µμΩ]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*|%|°)
  | (?P<op>[-+*/()])
  | (?P<ws>\s+)
  | (?P<bad>.)
""", re.VERBOSE)


def _tokens(text: str) -> list[tuple[str, str]]:
    out = []
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup
        if kind == "ws":
            continue
        if kind == "bad":
            raise ExprError(f"unexpected character {m.group()!r} in {text!r}",
                            fix="expressions use numbers with units, names, + - * / and parentheses")
        out.append((kind, m.group()))
    return out


Resolver = Callable[[str], Value]


class _Parser:
    def __init__(self, text: str, resolve: Resolver) -> None:
        self.text = text
        self.toks = _tokens(text)
        self.i = 0
        self.resolve = resolve

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> tuple[str, str]:
        t = self.peek()
        if t is None:
            raise ExprError(f"{self.text!r} ends too early", fix="complete the expression")
        self.i += 1
        return t

    def parse(self) -> Value:
        if not self.toks:
            raise ExprError("empty expression", fix="write a value such as '123 ns'")
        v = self.expr()
        if self.peek() is not None:
            raise ExprError(f"unexpected {self.peek()[1]!r} in {self.text!r}",
                            fix="check the operators between the terms (write 2 * tau, not 2 tau)")
        return v

    def expr(self) -> Value:
        v = self.term()
        while (t := self.peek()) and t[1] in "+-" and t[0] == "op":
            self.take()
            w = self.term()
            if v.dim != w.dim:
                raise ExprError(f"cannot add {v} and {w} in {self.text!r} (different units)",
                                fix="both sides of + and - must be of the same kind (e.g. two times)")
            v = Value(v.x + w.x if t[1] == "+" else v.x - w.x, v.dim)
        return v

    def term(self) -> Value:
        v = self.factor()
        while (t := self.peek()) and t[1] in "*/" and t[0] == "op":
            self.take()
            w = self.factor()
            if t[1] == "*":
                v = Value(v.x * w.x, _mul(v.dim, w.dim))
            else:
                if w.x == 0:
                    raise ExprError(f"division by zero in {self.text!r}", fix="check the divisor")
                v = Value(v.x / w.x, _mul(v.dim, w.dim, -1))
        return v

    def factor(self) -> Value:
        kind, tok = self.take()
        if kind == "op" and tok in "+-":
            v = self.factor()
            return Value(-v.x if tok == "-" else v.x, v.dim)
        if kind == "op" and tok == "(":
            v = self.expr()
            k2, t2 = self.take()
            if t2 != ")":
                raise ExprError(f"missing ')' in {self.text!r}", fix="close every parenthesis")
            return v
        if kind == "num":
            x = float(tok)
            nxt = self.peek()
            if nxt and (nxt[0] == "rate" or (nxt[0] == "name" and "." not in nxt[1])):
                unit = nxt[1]
                uf = units.unit_factor(unit) if unit != "dBm" else None
                if uf is not None:
                    self.take()
                    return Value(x * uf[1], dim_of(uf[0]))
                if unit == "dBm":
                    self.take()
                    return Value(1e-3 * 10 ** (x / 10.0), dim_of("W"))
                raise ExprError(f"unknown unit {unit!r} in {self.text!r}",
                                fix="use SI units with prefixes (s, Hz, V, W, J, m, rad), or %, ppm, pi, deg, dB; "
                                    "to multiply by a named value write 2 * name")
            return Value(x, ())
        if kind == "name":
            if tok in ("pi", "π"):
                return Value(math.pi, dim_of("rad"))
            return self.resolve(tok)
        raise ExprError(f"unexpected {tok!r} in {self.text!r}", fix="check the expression")


def evaluate(text: object, resolve: Resolver | None = None) -> Value:
    """Evaluate an expression (or a bare number) to a Value. Names go to ``resolve``."""
    if isinstance(text, bool):
        raise ExprError(f"expected a value, got {text!r}", fix="write a number with a unit")
    if isinstance(text, (int, float)):
        if not math.isfinite(float(text)):
            raise ExprError(f"{text!r} is not finite", fix="write a finite value")
        return Value(float(text), ())
    if not isinstance(text, str):
        raise ExprError(f"expected a value such as '123 ns', got {type(text).__name__}",
                        fix="write a number with a unit, or an expression like 'pump.end + tau'")
    if len(text) > MAX_LENGTH:
        raise ExprError(f"expression longer than {MAX_LENGTH} characters", fix="shorten it")

    def no_names(name: str) -> Value:
        raise ExprError(f"unknown name {name!r}", fix="define it under 'values:'")

    v = _Parser(text, resolve or no_names).parse()
    if not math.isfinite(v.x):
        raise ExprError(f"{text!r} is not finite", fix="check the expression")
    return v


def require(v: Value, unit_dim: str, what: str, text: object) -> float:
    """The SI number of ``v`` if it has dimension ``unit_dim`` (as in units.DIMENSION_NAMES)."""
    want = dim_of(unit_dim)
    if v.dim == want:
        return v.x
    if v.dim == () and unit_dim == "dB":
        return v.x
    want_name = units.DIMENSION_NAMES.get(unit_dim, unit_dim)
    if v.dim == ():
        raise ExprError(f"{what}: {text!r} has no unit; it must be {want_name}",
                        fix=f"add the unit, e.g. '{text} {units._example_unit(unit_dim)}'")
    got = units.DIMENSION_NAMES.get(dim_name(v.dim), dim_name(v.dim))
    raise ExprError(f"{what}: {text!r} is {got}, but it must be {want_name}",
                    fix=f"write it in {units._example_unit(unit_dim)}")
