"""Station configuration: which instruments, where, with which safety limits.

A station file (``configs/lab.yaml``) is YAML::

    station: riedinger-lab
    instruments:
      afg:
        driver: drivers.tektronix_afg3152c.AFG3152C     # module.Class
        resource: TCPIP0::10.0.0.21::inst0::INSTR        # where it is
        role: pulse_generator                            # see labctl.instrument.protocols
        limits: {ch1.high: [0 V, 1 V]}                   # safety limits, narrower than the model's
        options: {}                                      # driver keyword arguments
        sim: {model: ..., options: {...}}                 # optional simulator override
    channels:                                            # sequence channel role -> instrument output
      pump_aom: {instrument: afg, output: 1}
    eom: {v_pi_rf: 3.5 V, v_pi_dc: 4.5 V, max_rf_power: 28 dBm}
    amplifier: {gain: 13 dB, band: [0.5 MHz, 1000 MHz]}

Everything is checked before any instrument is touched; errors read ``file:line: what — fix``.
"""
from __future__ import annotations

import difflib
import importlib
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from . import units
from .errors import InputError, raise_input_errors
from .instrument.base import Instrument
from .instrument.protocols import ROLES
from .yamlio import YamlDoc, load_yaml


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SimConfig(_Strict):
    model: str | None = None
    options: dict[str, Any] = {}


class InstrumentConfig(_Strict):
    driver: str
    resource: str
    role: str | list[str] | None = None
    description: str = ""
    timeout: str | float | None = None
    visa_library: str | None = None  #: pyvisa backend: "@py" (default), a VISA library path, "file.yaml@sim"
    options: dict[str, Any] = {}
    limits: dict[str, list[Any]] = {}
    sim: SimConfig | None = None

    @field_validator("resource")
    @classmethod
    def _resource(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("the resource is empty")
        return v

    @field_validator("driver")
    @classmethod
    def _driver(cls, v: str) -> str:
        if "." not in v:
            raise ValueError("a driver is written module.Class, e.g. drivers.tektronix_afg3152c.AFG3152C")
        return v

    def roles(self) -> list[str]:
        if self.role is None:
            return []
        return [self.role] if isinstance(self.role, str) else list(self.role)


class ChannelConfig(_Strict):
    instrument: str
    output: int | str | None = None
    description: str = ""


class EomConfig(_Strict):
    """Passive phase modulator (Photline MPZ-LN-10): half-wave voltages and damage limit."""

    model: str = ""
    v_pi_rf: str | float        #: Vπ for RF drive (V)
    v_pi_dc: str | float | None = None  #: Vπ of the DC (bias) path (V); defaults to v_pi_rf
    bandwidth: str | float = "12 GHz"
    max_rf_power: str | float = "28 dBm"  #: damage limit of the RF input


class AmplifierConfig(_Strict):
    """RF amplifier between AWG and EOM (Minicircuits TVA-R5-13A+)."""

    model: str = ""
    gain: str | float           #: dB
    band: list[str | float] = ["0.5 MHz", "1000 MHz"]
    max_output_power: str | float | None = None


class StationModel(_Strict):
    station: str
    description: str = ""
    instruments: dict[str, InstrumentConfig]
    channels: dict[str, ChannelConfig] = {}
    eom: EomConfig | None = None
    amplifier: AmplifierConfig | None = None
    twin: dict[str, Any] = {}
    lock: dict[str, Any] = {}
    calibration: dict[str, Any] = {}


@dataclass
class InstrumentEntry:
    """One validated instrument entry."""

    name: str
    config: InstrumentConfig
    driver_cls: type[Instrument]
    limits: dict[str, tuple[float, float]]
    timeout: float | None
    line: int | None


@dataclass
class StationConfig:
    """A validated station file."""

    path: str
    doc: YamlDoc
    model: StationModel
    instruments: dict[str, InstrumentEntry] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.model.station

    def quantity(self, section: str, key: str, dim: str) -> float:
        """A quantity from a passive-component section (``eom``, ``amplifier``) in SI units."""
        sec = getattr(self.model, section)
        if sec is None:
            raise self.doc.error((), f"the station has no '{section}' section",
                                 f"add '{section}:' with '{key}' to {self.path}")
        value = getattr(sec, key)
        try:
            return units.parse_as(value, dim, where=f"{section}.{key}")
        except InputError as e:
            raise self.doc.error((section, key), e.what, e.fix) from None

    def channel(self, role: str) -> ChannelConfig:
        if role not in self.model.channels:
            known = ", ".join(sorted(self.model.channels)) or "none"
            raise InputError(f"the station maps no channel '{role}' (known: {known})", file=self.path,
                             line=self.doc.line(("channels",)),
                             fix=f"add '{role}: {{instrument: NAME, output: N}}' under 'channels:'")
        return self.model.channels[role]

    def instruments_with_role(self, role: str) -> list[str]:
        return [n for n, e in self.instruments.items() if role in e.config.roles()]


def available_drivers() -> list[str]:
    """``module.Class`` of every Instrument subclass in the ``drivers`` package."""
    import drivers

    out = []
    for mod in pkgutil.iter_modules(drivers.__path__):
        try:
            m = importlib.import_module(f"drivers.{mod.name}")
        except Exception:  # a broken driver module must not hide the others in a hint
            continue
        for k, v in vars(m).items():
            if isinstance(v, type) and issubclass(v, Instrument) and v.__module__ == m.__name__:
                out.append(f"drivers.{mod.name}.{k}")
    return sorted(out)


def import_driver(spec: str) -> type[Instrument]:
    """Import ``module.Class``; raise LookupError with a helpful reason."""
    module, _, cls = spec.rpartition(".")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        raise LookupError(f"no module {e.name!r}") from None
    except Exception as e:
        raise LookupError(f"module {module!r} failed to import: {type(e).__name__}: {e}") from None
    obj = getattr(mod, cls, None)
    if obj is None:
        raise LookupError(f"module {module!r} has no class {cls!r}")
    if not (isinstance(obj, type) and issubclass(obj, Instrument)):
        raise LookupError(f"{spec!r} is not an instrument driver (not a labctl Instrument)")
    return obj


def _pydantic_errors(doc: YamlDoc, exc: ValidationError) -> list[InputError]:
    out = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        # pydantic inserts union-branch names (e.g. 'str', 'list[str]', 'function-after[...]') into
        # loc; drop only those that are not keys of the document at that place
        clean: tuple = ()
        for p in loc:
            node = _at(doc.data, clean)
            if isinstance(p, str) and not (isinstance(node, dict) and p in node) and \
                    not isinstance(node, list) and _is_branch(p):
                continue
            clean = clean + (p,)
        key = ".".join(str(p) for p in clean)
        typ = err["type"]
        if not clean:
            out.append(doc.error((), err["msg"], "see docs/configuration.md for the schema"))
            continue
        if typ == "extra_forbidden":
            parent = clean[:-1]
            allowed = _allowed_keys(parent)
            hint = difflib.get_close_matches(str(clean[-1]), allowed, 1)
            fix = (f"did you mean '{hint[0]}'?" if hint else f"allowed keys: {', '.join(allowed)}") if allowed else "remove it"
            out.append(doc.error(clean, f"unknown key '{clean[-1]}'", fix))
        elif typ == "missing":
            out.append(doc.error(clean[:-1], f"'{key}' is missing", f"add '{clean[-1]}:'"))
        else:
            out.append(doc.error(clean, f"{key}: {err['msg']}", "see docs/configuration.md for the schema"))
    # one error per line is enough
    seen, uniq = set(), []
    for e in out:
        k = (e.line, e.what)
        if k not in seen:
            seen.add(k)
            uniq.append(e)
    return uniq


def _at(data: Any, path: tuple) -> Any:
    for p in path:
        try:
            data = data[p]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _is_branch(part: str) -> bool:
    return part in ("str", "int", "float", "bool", "list", "dict") or "[" in part


def _allowed_keys(parent: tuple) -> list[str]:
    """Keys allowed in the mapping at ``parent`` (for 'did you mean' hints)."""
    shapes: list[tuple[tuple, type[BaseModel]]] = [
        ((), StationModel), (("instruments", None), InstrumentConfig),
        (("instruments", None, "sim"), SimConfig), (("channels", None), ChannelConfig),
        (("eom",), EomConfig), (("amplifier",), AmplifierConfig)]
    for shape, model in shapes:
        if len(shape) == len(parent) and all(s is None or s == p for s, p in zip(shape, parent)):
            return list(model.model_fields)
    return []


def load_station(path: str | Path) -> StationConfig:
    """Read and validate a station file. Nothing is connected here."""
    doc = load_yaml(path)
    file = str(path)
    if not isinstance(doc.data, dict):
        raise InputError("a station file must be a YAML mapping with 'station' and 'instruments'",
                         file=file, line=1, fix="see configs/lab.yaml for an example")
    try:
        model = StationModel.model_validate(doc.data)
    except ValidationError as e:
        schema_errors = _pydantic_errors(doc, e)
    else:
        schema_errors = []
    raise_input_errors(schema_errors)  # outside the except: the pydantic error is not the user's concern
    cfg = StationConfig(file, doc, model)
    errors: list[InputError] = []
    for name, ic in model.instruments.items():
        base = ("instruments", name)
        try:
            cls = import_driver(ic.driver)
        except LookupError as why:
            near = difflib.get_close_matches(ic.driver, available_drivers(), 1)
            fix = f"did you mean '{near[0]}'?" if near else \
                "available drivers: " + ", ".join(available_drivers())
            errors.append(doc.error(base + ("driver",), f"unknown driver '{ic.driver}' for '{name}': {why}", fix))
            continue
        for r in ic.roles():
            if r not in ROLES:
                errors.append(doc.error(base + ("role",), f"unknown role '{r}' for '{name}'",
                                        "roles: " + ", ".join(ROLES)))
        limits: dict[str, tuple[float, float]] = {}
        for path_, bounds in ic.limits.items():
            where = base + ("limits", path_)
            try:
                spec = cls.setting_spec(path_)
            except KeyError:
                near = difflib.get_close_matches(path_, cls.setting_paths(), 1)
                errors.append(doc.error(where, f"{cls.__name__} has no setting '{path_}'",
                                        f"did you mean '{near[0]}'?" if near else
                                        "settings: " + ", ".join(cls.setting_paths())))
                continue
            if len(bounds) != 2:
                errors.append(doc.error(where, f"limits for '{path_}' must be [low, high]",
                                        "write e.g. [0 V, 1 V]"))
                continue
            try:
                dim = spec.dim or "1"
                lo, hi = (units.parse_as(b, dim, where=f"{name}.limits.{path_}") for b in bounds)
            except InputError as e:
                errors.append(doc.error(where, e.what, e.fix))
                continue
            if lo > hi:
                errors.append(doc.error(where, f"limits for '{path_}' are reversed ({bounds[0]} > {bounds[1]})",
                                        "write [low, high]"))
                continue
            limits[path_] = (lo, hi)
        timeout = None
        if ic.timeout is not None:
            try:
                timeout = units.parse_as(ic.timeout, "s", where=f"{name}.timeout")
                if timeout <= 0:
                    raise InputError(f"{name}.timeout must be positive", fix="e.g. timeout: 2 s")
            except InputError as e:
                errors.append(doc.error(base + ("timeout",), e.what, e.fix))
        cfg.instruments[name] = InstrumentEntry(name, ic, cls, limits, timeout, doc.line(base))
    for role, ch in model.channels.items():
        if ch.instrument not in model.instruments:
            near = difflib.get_close_matches(ch.instrument, list(model.instruments), 1)
            errors.append(doc.error(("channels", role, "instrument"),
                                    f"channel '{role}' names unknown instrument '{ch.instrument}'",
                                    f"did you mean '{near[0]}'?" if near else
                                    "instruments: " + ", ".join(model.instruments)))
    for section, fields in (("eom", {"v_pi_rf": "V", "v_pi_dc": "V", "bandwidth": "Hz", "max_rf_power": "W"}),
                            ("amplifier", {"gain": "dB", "max_output_power": "W"})):
        sec = getattr(model, section)
        if sec is None:
            continue
        for key, dim in fields.items():
            v = getattr(sec, key)
            if v is None:
                continue
            try:
                units.parse_as(v, dim, where=f"{section}.{key}")
            except InputError as e:
                errors.append(doc.error((section, key), e.what, e.fix))
    raise_input_errors(errors)
    return cfg
