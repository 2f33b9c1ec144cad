"""Instrument base class with declarative settings (the PyMeasure ``Instrument.control`` /
QCoDeS parameter idea, written for labctl).

A driver declares each setting once::

    class AFG3152C(Instrument):
        error_query = "SYSTem:ERRor?"
        class Channel(Component):
            frequency = Setting("SOURce{ch}:FREQuency?", "SOURce{ch}:FREQuency {value}",
                                unit="Hz", limits=(1e-6, 150e6), doc="pulse repetition frequency")

and gets: validation before anything is written (limits, choices, safety restrictions from the
station), value mapping both ways, the error queue read after every set, an I/O log at debug level,
and the setting in ``snapshot()``.
"""
from __future__ import annotations

import logging
import math
import string
from typing import Any, Callable, ClassVar, Iterable, Iterator, Mapping

from ..errors import InstrumentError, SettingError
from .. import units as _units
from .transport import Transport

log = logging.getLogger("labctl.instrument")

Limits = tuple[float, float]


class Setting:
    """A readable and/or writable instrument setting.

    :param get: query command (may use ``{ch}`` and other component variables), or None.
    :param set: command template with ``{value}`` (formatted value) and component variables.
    :param unit: SI unit symbol for documentation and strings like ``"45 MHz"`` (``dim`` inferred).
    :param limits: ``(low, high)`` inclusive, or ``callable(component) -> (low, high)``.
    :param choices: allowed Python values (checked after ``mapping`` keys).
    :param mapping: Python value -> instrument token; replies are mapped back.
    :param parse: reply -> Python value when there is no mapping (default ``float``).
    :param fmt: how a value is put in the command (``"{:.12g}"`` by default for numbers).
    :param check_errors: read the instrument's error queue after a set.
    :param step: values are rounded to a multiple of ``step`` before sending (e.g. DAC codes).
    :param invalidates: settings the instrument changes as a side effect of this one (writing a
        frequency changes the period): their remembered values are dropped on a write.
    """

    def __init__(self, get: str | None = None, set: str | None = None, *, unit: str = "",
                 limits: Limits | Callable[[Any], Limits] | None = None,
                 choices: Iterable[Any] | None = None, mapping: Mapping[Any, str] | None = None,
                 parse: Callable[[str], Any] = float, fmt: str = "{:.12g}", doc: str = "",
                 check_errors: bool = True, snapshot: bool = True, dim: str | None = None,
                 step: float | None = None, invalidates: Iterable[str] = ()) -> None:
        self.get_cmd = get
        self.set_cmd = set
        self.unit = unit
        self.limits = limits
        self.mapping = dict(mapping) if mapping else None
        self.choices = tuple(choices) if choices is not None else (tuple(self.mapping) if self.mapping else None)
        self.parse = parse
        self.fmt = fmt
        self.doc = doc
        self.check_errors = check_errors
        self.in_snapshot = snapshot and get is not None
        self.dim = dim if dim is not None else (_units.unit_factor(unit)[0] if unit and _units.unit_factor(unit) else None)
        self.step = step
        self.invalidates = tuple(invalidates)
        self.name = "?"
        self.__doc__ = f"{doc} [{unit}]" if unit else doc

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    # -- descriptor protocol --------------------------------------------------------------------
    def __get__(self, comp: "Component | None", owner: type | None = None) -> Any:
        if comp is None:
            return self
        return self.read(comp)

    def __set__(self, comp: "Component", value: Any) -> None:
        self.write(comp, value)

    # -- behaviour ------------------------------------------------------------------------------
    def limits_for(self, comp: "Component") -> Limits | None:
        lim = self.limits(comp) if callable(self.limits) else self.limits
        restricted = comp._restrictions.get(self.name)
        if restricted is not None:
            lo, hi = restricted
            if lim is None:
                return lo, hi
            return max(lim[0], lo), min(lim[1], hi)
        return lim

    def validate(self, comp: "Component", value: Any) -> Any:
        """Return the value to send (converted, checked), or raise SettingError. Writes nothing."""
        if isinstance(value, str) and self.dim and not (self.mapping and value in self.mapping):
            value = _units.parse_as(value, self.dim, where=f"{comp.full_name}.{self.name}")
        if self.mapping is not None or (self.choices is not None and self.limits is None):
            if self.choices is not None and value not in self.choices:
                raise SettingError(comp.full_name, self.name, value,
                                   "choices " + ", ".join(map(repr, self.choices)))
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SettingError(comp.full_name, self.name, value, "numbers", self.unit)
        if not math.isfinite(value):
            raise SettingError(comp.full_name, self.name, value, "finite numbers", self.unit)
        lim = self.limits_for(comp)
        if lim is not None:
            lo, hi = lim
            # float round-off only, relative to each limit (4.1 ns is not "5 ns"); at a limit of 0
            # the scale is a millionth of the other limit (-5e-17 V is 0 V, -1 mV is not)
            tol_lo = 1e-12 * max(abs(lo), 1e-6 * abs(hi))
            tol_hi = 1e-12 * max(abs(hi), 1e-6 * abs(lo))
            if not (lo - tol_lo <= value <= hi + tol_hi):
                u = f" {self.unit}" if self.unit else ""
                raise SettingError(comp.full_name, self.name, value, f"range {lo:g}{u} to {hi:g}{u}",
                                   self.unit)
            value = min(max(value, lo), hi)  # within rounding tolerance: send the limit itself
        if self.step:
            value = round(value / self.step) * self.step
            if lim is not None:  # rounding to the step must not leave the range
                lo, hi = lim
                if value < lo:
                    value += self.step
                elif value > hi:
                    value -= self.step
        return value

    def format_value(self, value: Any) -> str:
        if self.mapping is not None:
            return self.mapping[value]
        if isinstance(value, str):
            return value
        return self.fmt.format(value)

    def set_command(self, comp: "Component", text: str) -> str:
        """The set command for ``comp`` carrying the formatted value ``text``. The template's
        component variables are substituted once per component, then the value is spliced in."""
        parts = comp._set_templates.get(self.name)
        if parts is None:
            fields = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(self.set_cmd)
                      if f == "value"]
            parts = ()
            if fields == [("value", "", None)]:  # exactly one plain {value}: splice it in
                marker = "\x00"  # cannot occur in a template or a variable
                head, _, tail = self.set_cmd.format(value=marker, **comp.variables).partition(marker)
                parts = (head, tail)
            comp._set_templates[self.name] = parts
        if not parts:
            return self.set_cmd.format(value=text, **comp.variables)
        return parts[0] + text + parts[1]

    def write(self, comp: "Component", value: Any) -> None:
        if self.set_cmd is None:
            raise AttributeError(f"{comp.full_name}.{self.name} is read-only")
        v = self.validate(comp, value)
        for name in self.invalidates:
            comp._cache.pop(name, None)
        cmd = self.set_command(comp, self.format_value(v))
        comp.write(cmd)
        if self.check_errors:
            comp._instrument.check_errors(cmd)
        comp._cache[self.name] = v

    def read(self, comp: "Component") -> Any:
        if self.get_cmd is None:
            if self.name in comp._cache:
                return comp._cache[self.name]
            raise AttributeError(f"{comp.full_name}.{self.name} cannot be read back from the instrument")
        cmd = comp._get_commands.get(self.name)
        if cmd is None:  # the component's variables substituted once
            cmd = comp._get_commands[self.name] = self.get_cmd.format(**comp.variables)
        return self.parse_reply(comp, comp.query(cmd))

    def parse_reply(self, comp: "Component", reply: str) -> Any:
        text = reply.strip()
        if self.mapping is not None:
            for k, token in self.mapping.items():
                if text.upper() == token.upper():
                    return k
            # SCPI instruments answer booleans as 1/0 and may return the long or short token form
            for k, token in self.mapping.items():
                if token.upper().startswith(text.upper()) or text.upper().startswith(token.upper()):
                    return k
                if isinstance(k, bool) and text in ("1", "0") and k == (text == "1"):
                    return k
            raise InstrumentError(comp.full_name, self.get_cmd, f"unexpected reply {reply!r} for {self.name}")
        try:
            return self.parse(text)
        except (ValueError, TypeError):
            raise InstrumentError(comp.full_name, self.get_cmd,
                                  f"unexpected reply {reply!r} for {self.name}") from None


def on_off(token_on: str = "ON", token_off: str = "OFF") -> dict:
    """The usual boolean mapping."""
    return {True: token_on, False: token_off}


class Component:
    """Something that owns settings: an instrument, or one channel of it.

    ``variables`` are substituted into the settings' command templates (``{ch}``). Set them
    before the first I/O (in ``__init__``): each setting's command is built once per component.
    """

    def __init__(self, parent: "Component | None", name: str, **variables: Any) -> None:
        self.parent = parent
        self.short_name = name
        self.variables = dict(parent.variables if parent else {}, **variables)
        self._restrictions: dict[str, Limits] = {}
        self._cache: dict[str, Any] = {}
        #: per-setting commands with this component's variables substituted (built on first use)
        self._get_commands: dict[str, str] = {}
        self._set_templates: dict[str, tuple[str, ...]] = {}
        self._components: dict[str, Component] = {}
        #: the instrument this component belongs to (fixed at construction; looked up on every I/O)
        self._instrument: Component = parent._instrument if parent is not None else self

    # -- structure ------------------------------------------------------------------------------
    @property
    def instrument(self) -> "Instrument":
        return self._instrument  # type: ignore[return-value]

    @property
    def full_name(self) -> str:
        return self.short_name if self.parent is None else f"{self.parent.full_name}.{self.short_name}"

    def add_component(self, name: str, comp: "Component") -> "Component":
        self._components[name] = comp
        setattr(self, name, comp)
        return comp

    @classmethod
    def settings(cls) -> dict[str, Setting]:
        """All declared settings of this class, by name (base classes first)."""
        out: dict[str, Setting] = {}
        for klass in reversed(cls.__mro__):
            for k, v in vars(klass).items():
                if isinstance(v, Setting):
                    out[k] = v
        return out

    def walk(self) -> Iterator[tuple[str, "Component"]]:
        """This component and all sub-components with their dotted paths ("" for self)."""
        yield "", self
        for name, comp in self._components.items():
            for sub, c in comp.walk():
                yield (f"{name}.{sub}" if sub else name), c

    def resolve(self, dotted: str) -> tuple["Component", Setting]:
        """``"ch1.amplitude"`` -> (channel component, Setting); KeyError if unknown."""
        *path, setting = dotted.split(".")
        comp: Component = self
        for p in path:
            comp = comp._components[p]
        s = type(comp).settings().get(setting)
        if s is None:
            raise KeyError(dotted)
        return comp, s

    def restrict(self, dotted: str, low: float, high: float) -> None:
        """Narrow a setting's allowed range (station safety limits)."""
        comp, s = self.resolve(dotted)
        if low > high:
            raise ValueError(f"empty range {low}..{high} for {dotted}")
        comp._restrictions[s.name] = (low, high)

    def check(self, dotted: str, value: Any) -> Any:
        """Validate a value for a setting without touching the instrument."""
        comp, s = self.resolve(dotted)
        return s.validate(comp, value)

    def set(self, dotted: str, value: Any) -> None:
        comp, s = self.resolve(dotted)
        s.write(comp, value)

    def get(self, dotted: str) -> Any:
        comp, s = self.resolve(dotted)
        return s.read(comp)

    # -- I/O goes to the instrument ---------------------------------------------------------------
    def write(self, command: str) -> None:
        self._instrument.write(command)

    def query(self, command: str) -> str:
        return self._instrument.query(command)

    # -- provenance -----------------------------------------------------------------------------
    def snapshot_settings(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, s in type(self).settings().items():
            if not s.in_snapshot:
                continue
            out[name] = s.read(self)
        for name, comp in self._components.items():
            out[name] = comp.snapshot_settings()
        return out


class Instrument(Component):
    """Base of every driver.

    Subclasses set the class attributes below, declare ``Setting``s, and implement
    ``safe_state()``. The station builds the transport; the driver never knows whether it talks to
    hardware, a simulator or an emulator.
    """

    #: human name of the model, shown in listings
    model: ClassVar[str] = ""
    #: role names (see ``labctl.instrument.protocols``) this driver can fill
    roles: ClassVar[tuple[str, ...]] = ()
    read_termination: ClassVar[str] = "\n"
    write_termination: ClassVar[str] = "\n"
    timeout: ClassVar[float] = 2.0  #: seconds
    baud_rate: ClassVar[int] = 115200
    #: query that pops one entry of the error queue, or None if the instrument has none
    error_query: ClassVar[str | None] = "SYSTem:ERRor?"
    #: identity query
    idn_query: ClassVar[str | None] = "*IDN?"
    #: "module:Class" of the simulator model (``sim_instruments.models``)
    simulator: ClassVar[str] = ""
    #: transport kind the real instrument needs when the resource string does not say
    #: ("visa", "serial" or a driver-specific transport factory "module:function")
    transport_kind: ClassVar[str] = "visa"
    #: sub-components built for every instance: name -> (Component class, template variables),
    #: e.g. ``{"ch1": (Channel, {"ch": 1}), "ch2": (Channel, {"ch": 2})}``; declared on the class
    #: so settings can be checked (station limits, sequence compilation) without an instrument.
    components: ClassVar[dict[str, tuple[type, dict]]] = {}

    def __init__(self, name: str, transport: Transport, **options: Any) -> None:
        super().__init__(None, name)
        self.transport = transport
        self.options = options
        self._idn: str | None = None
        for cname, (ccls, cvars) in self.components.items():
            self.add_component(cname, ccls(self, cname, **cvars))

    @classmethod
    def open_transport(cls, resource: str, **kw: Any) -> Transport | None:
        """A driver-specific transport for ``resource`` (e.g. a vendor library through ctypes),
        or None to let the station choose pyvisa or pyserial from the resource string."""
        return None

    @classmethod
    def setting_spec(cls, dotted: str) -> Setting:
        """The Setting a dotted path (``"ch1.amplitude"``) names, from the class alone.

        Raises KeyError naming the path if there is no such setting."""
        *path, setting = dotted.split(".")
        klass: type = cls
        for p in path:
            comps = getattr(klass, "components", {})
            if p not in comps:
                raise KeyError(dotted)
            klass = comps[p][0]
        spec = klass.settings().get(setting)  # type: ignore[attr-defined]
        if spec is None:
            raise KeyError(dotted)
        return spec

    @classmethod
    def setting_paths(cls) -> list[str]:
        """Every dotted setting path of this driver (for help texts and error messages)."""
        out = list(cls.settings())
        for cname, (ccls, _vars) in cls.components.items():
            out += [f"{cname}.{n}" for n in ccls.settings()]
        return out

    # -- I/O ------------------------------------------------------------------------------------
    def write(self, command: str) -> None:
        self.transport.write(command)

    def query(self, command: str) -> str:
        return self.transport.query(command)

    def read(self) -> str:
        return self.transport.read()

    # -- error queue ----------------------------------------------------------------------------
    def parse_error(self, reply: str) -> str | None:
        """None if ``reply`` means "no error", else the error message. SCPI: ``0,"No error"``."""
        text = reply.strip()
        code = text.split(",", 1)[0].strip()
        try:
            if int(code) == 0:
                return None
        except ValueError:
            pass
        return text

    def check_errors(self, command: str | None = None) -> None:
        """Drain the error queue; raise InstrumentError listing every entry found."""
        if not self.error_query:
            return
        errors = []
        for _ in range(32):
            msg = self.parse_error(self.query(self.error_query))
            if msg is None:
                break
            errors.append(msg)
        if errors:
            raise InstrumentError(self.name, command, "; ".join(errors))

    # -- identity, provenance, safety -----------------------------------------------------------
    def idn(self) -> str:
        """The instrument's identity string (``*IDN?`` or its equivalent)."""
        if self._idn is None:
            self._idn = self.query(self.idn_query).strip() if self.idn_query else self.model
        return self._idn

    def connect(self) -> None:
        """Called once after the transport is open (clear interface state, disable echo…)."""

    def bind(self, station: Any) -> None:
        """Called once every instrument of the station is connected: virtual instruments (a VOA
        driven by an analog output, ``resource: via:redpitaya/AOUT0``) find their partners here."""

    def snapshot(self) -> dict[str, Any]:
        """Every readable setting, for provenance (``run.h5``)."""
        return {"idn": self.idn(), "driver": f"{type(self).__module__}.{type(self).__qualname__}",
                "resource": self.transport.resource, "settings": self.snapshot_settings()}

    def safe_state(self) -> None:
        """Put the instrument in a state that cannot harm the experiment (outputs off, attenuation
        up, bias to a safe value). Called on every exit path of a run. Must be implemented."""
        raise NotImplementedError(f"{type(self).__name__} must implement safe_state()")

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> "Instrument":
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self.safe_state()
        finally:
            self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} on {self.transport.resource}>"

    @property
    def name(self) -> str:
        return self.short_name
