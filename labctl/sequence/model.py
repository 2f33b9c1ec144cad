"""Pulse sequences: YAML → validated, resolved sweep points.

A sequence file is data, never code (schema in ``docs/sequences.md``)::

    name: dlcz_witness
    period: 50 us
    values: {tau: 123 ns, dphi: 0.2 pi}
    pulses:
      - {name: pump, channel: pump_aom, start: 1 us, duration: 40 ns, kind: pump}
      - {name: read, channel: read_aom, start: pump.end + tau, duration: 40 ns, kind: read}
    windows:
      - {name: herald, covers: pump, start: pump.start - 10 ns, duration: 80 ns}
    sweep: {parameter: dphi, range: {start: 0 pi, stop: 2 pi, num: 9}}

``load_sequence(path)`` parses and checks everything that needs no station and returns a
``Sequence`` whose ``points`` hold every sweep point fully resolved in SI units. Every problem is
reported as ``file:line: what — fix``, all of them at once.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, raise_input_errors
from ..yamlio import YamlDoc, load_yaml, loads_yaml
from .expr import ExprError, Value, evaluate, require

#: channel roles a sequence may use when no station is given
KNOWN_ROLES = ("pump_aom", "read_aom", "aux_aom", "serrodyne", "lock_detector", "filter_1", "filter_2",
               "phase_actuator", "arm_balance", "detector_1_bias", "detector_2_bias", "detector_1",
               "detector_2", "parametric_drive", "lockin")
PULSE_KINDS = ("pump", "read", "aux", "drive", "other")
TOP_KEYS = ("name", "description", "period", "trials", "values", "device", "pulses", "windows",
            "serrodyne", "detection", "tagger", "lock", "sweep", "calibrations", "experiment", "parametric")
PULSE_KEYS = ("name", "channel", "start", "duration", "kind", "amplitude", "energy", "probability",
              "edge", "shift", "description")
WINDOW_KEYS = ("name", "covers", "start", "duration", "detectors", "description")
DEFAULT_TRIALS = 1_000_000
MAX_TRIALS = 1e15
MAX_POINTS = 10_000


@dataclass
class Pulse:
    """One resolved pulse (SI units: s, V, J, Hz)."""

    name: str
    channel: str
    kind: str
    start: float
    duration: float
    amplitude: float | None = None
    energy: float | None = None
    probability: float | None = None
    edge: float | None = None
    shift: float | None = None  #: serrodyne shift applied during the pulse (Hz, signed), if any

    @property
    def end(self) -> float:
        return self.start + self.duration


@dataclass
class Window:
    """A detection window on the tagger's micro-time axis (s from the start of the period)."""

    name: str
    covers: str
    start: float
    duration: float
    detectors: tuple[int, ...] = (1, 2)

    @property
    def end(self) -> float:
        return self.start + self.duration


@dataclass
class Point:
    """One sweep point: the swept parameters and everything resolved with them."""

    index: int
    parameters: dict[str, float]
    values: dict[str, float]
    pulses: list[Pulse]
    windows: list[Window]
    phase_offset: float = 0.0  #: Δφ (rad), the EOM DC bias


@dataclass
class Sequence:
    """A validated sequence. ``points`` has one entry per sweep point (one when nothing is swept)."""

    path: str
    doc: YamlDoc
    name: str
    period: float
    trials: float
    points: list[Point]
    sweep_parameters: list[str]
    raw: dict[str, Any]
    device: dict[str, Any] = field(default_factory=dict)
    serrodyne: dict[str, Any] | None = None
    tagger: dict[str, Any] = field(default_factory=dict)
    detection_delay: float = 0.0
    lock: dict[str, Any] = field(default_factory=dict)
    calibrations: list[str] = field(default_factory=list)
    experiment: str = "dlcz"

    def line(self, *path: Any) -> int | None:
        return self.doc.line(path)


class _Collector:
    """Gathers errors so a user sees all of them at once."""

    MAX_REPORTED = 50

    def __init__(self, doc: YamlDoc) -> None:
        self.doc = doc
        self.errors: list[InputError] = []
        self._seen: set[tuple] = set()
        self.suppressed = 0

    @property
    def full(self) -> bool:
        """Enough errors to show; later ones are only counted."""
        return len(self.errors) >= self.MAX_REPORTED

    def add(self, path: tuple, what: str, fix: str | None = None) -> None:
        if self.full:
            self.suppressed += 1
            return
        e = self.doc.error(path, what, fix)
        if (e.line, e.what) not in self._seen:
            self._seen.add((e.line, e.what))
            self.errors.append(e)

    def add_exc(self, path: tuple, exc: InputError) -> None:
        self.add(path, exc.what, exc.fix)

    def raise_if_any(self) -> None:
        if self.errors:
            self.errors.sort(key=lambda e: e.line or 0)
            if self.suppressed:
                self.errors.append(InputError(f"... and {self.suppressed} more problems not shown", file=self.doc.file,
                                              fix="fix the ones above first"))
                self.suppressed = 0
            raise_input_errors(self.errors)


def _num_trials(raw: Any) -> float:
    if isinstance(raw, bool):
        raise ValueError
    if isinstance(raw, str):
        raw = float(raw.replace("_", ""))
    v = float(raw)
    if not (v >= 1 and v <= MAX_TRIALS and v == math.floor(v)):
        raise ValueError
    return v


class _Resolver:
    """Evaluates values and pulse fields of one sweep point lazily, detecting reference cycles."""

    def __init__(self, seq: dict, overrides: dict[str, Value], col: _Collector) -> None:
        self.values_raw: dict = seq.get("values") or {}
        self.pulses_raw: dict[str, tuple[int, dict]] = {}
        for i, p in enumerate(seq.get("pulses") or []):
            if isinstance(p, dict) and isinstance(p.get("name"), str):
                self.pulses_raw.setdefault(p["name"], (i, p))
        self.overrides = overrides
        self.cache: dict[str, Value] = dict(overrides)
        self.stack: list[str] = []
        self.col = col

    def __call__(self, name: str) -> Value:
        if name in self.cache:
            return self.cache[name]
        if name in self.stack:
            cycle = " -> ".join(self.stack[self.stack.index(name):] + [name])
            raise ExprError(f"circular reference {cycle}", fix="break the cycle: give one of them a plain value")
        self.stack.append(name)
        try:
            v = self._compute(name)
        finally:
            self.stack.pop()
        self.cache[name] = v
        return v

    def _compute(self, name: str) -> Value:
        if name in self.values_raw:
            return evaluate(self.values_raw[name], self)
        head, _, attr = name.partition(".")
        if head in self.pulses_raw and attr:
            _, p = self.pulses_raw[head]
            if attr == "start":
                return evaluate(p.get("start"), self)
            if attr == "duration":
                return evaluate(p.get("duration"), self)
            if attr == "end":
                s = evaluate(p.get("start"), self)
                d = evaluate(p.get("duration"), self)
                if s.dim != d.dim:
                    raise ExprError(f"{head}.start and {head}.duration have different units",
                                    fix="give both as times")
                return Value(s.x + d.x, s.dim)
            if attr in ("amplitude", "energy", "probability", "shift", "edge") and p.get(attr) is not None:
                return evaluate(p.get(attr), self)
            raise ExprError(f"pulse '{head}' has no field '{attr}' to refer to",
                            fix="use start, end, duration, amplitude, energy, probability or shift")
        if name == "period":
            raise ExprError("'period' cannot be used in expressions", fix="write the time explicitly")
        known = sorted(list(self.values_raw) + [f"{p}.start|end|duration" for p in self.pulses_raw])
        raise ExprError(f"unknown name {name!r}",
                        fix=f"define it under 'values:' (known: {', '.join(known) or 'none'})")


def _sweep_axes(seq: dict, col: _Collector) -> list[tuple[str, list[Value], tuple]]:
    raw = seq.get("sweep")
    if raw is None:
        return []
    items = raw if isinstance(raw, list) else [raw]
    axes = []
    for i, item in enumerate(items):
        path = ("sweep", i) if isinstance(raw, list) else ("sweep",)
        if not isinstance(item, dict):
            col.add(path, "a sweep is a mapping with 'parameter' and 'values' or 'range'",
                    "e.g. sweep: {parameter: dphi, values: [0 pi, 0.5 pi]}")
            continue
        unknown = set(item) - {"parameter", "values", "range", "description"}
        for k in unknown:
            col.add(path + (k,), f"unknown sweep key '{k}'", "use parameter, values or range")
        name = item.get("parameter")
        if not isinstance(name, str):
            col.add(path, "sweep needs 'parameter' (a name from 'values:' or a pulse field like pump.energy)",
                    "add 'parameter: NAME'")
            continue
        vals: list[Value] = []
        try:
            if "values" in item and "range" in item:
                col.add(path, "give either 'values' or 'range', not both", "remove one")
                continue
            if "values" in item:
                if not isinstance(item["values"], list) or not item["values"]:
                    col.add(path + ("values",), "'values' must be a non-empty list", "e.g. values: [0 pi, 0.5 pi]")
                    continue
                for j, v in enumerate(item["values"]):
                    try:
                        vals.append(evaluate(v))
                    except InputError as e:
                        col.add_exc(path + ("values", j), e)
            elif "range" in item:
                r = item["range"]
                if not isinstance(r, dict) or not {"start", "stop"} <= set(r) or not ({"num"} & set(r) or {"step"} & set(r)):
                    col.add(path + ("range",), "a range needs start, stop and num (or step)",
                            "e.g. range: {start: 0 pi, stop: 2 pi, num: 17}")
                    continue
                a, b = evaluate(r["start"]), evaluate(r["stop"])
                if a.dim != b.dim:
                    col.add(path + ("range",), "range start and stop have different units", "use one unit")
                    continue
                if "num" in r:
                    n = r["num"]
                    if isinstance(n, bool) or not isinstance(n, int) or n < 1 or n > MAX_POINTS:
                        col.add(path + ("range", "num"), f"num must be a whole number from 1 to {MAX_POINTS}",
                                "e.g. num: 17")
                        continue
                    xs = np.linspace(a.x, b.x, n)
                else:
                    s = evaluate(r["step"])
                    if s.dim != a.dim or s.x == 0 or (b.x - a.x) / s.x < 0:
                        col.add(path + ("range", "step"), "step must have the range's unit and point from start to stop",
                                "e.g. step: 22 ns")
                        continue
                    count = int(math.floor((b.x - a.x) / s.x + 1e-9)) + 1
                    if count > MAX_POINTS:
                        col.add(path + ("range",), f"the range has {count} points, more than {MAX_POINTS}",
                                "use a larger step")
                        continue
                    xs = a.x + s.x * np.arange(count)
                vals = [Value(float(x), a.dim) for x in xs]
            else:
                col.add(path, "sweep needs 'values' or 'range'", "e.g. values: [0 pi, 0.5 pi]")
                continue
        except InputError as e:
            col.add_exc(path, e)
            continue
        if vals and len({v.dim for v in vals}) > 1:
            col.add(path, f"the values of sweep '{name}' have different units", "use one unit for all")
            continue
        axes.append((name, vals, path))
    return axes


def _resolve_point(seq: dict, index: int, overrides: dict[str, Value], col: _Collector, period: float,
                   sweep_names: list[str]) -> Point | None:
    res = _Resolver(seq, overrides, col)
    before = len(col.errors)
    values: dict[str, float] = {}
    for k in (seq.get("values") or {}):
        try:
            values[k] = res(k).x
        except InputError as e:
            col.add_exc(("values", k), e)
    pulses: list[Pulse] = []
    for i, p in enumerate(seq.get("pulses") or []):
        if not isinstance(p, dict) or not isinstance(p.get("name"), str):
            continue
        base = ("pulses", i)
        fields: dict[str, float | None] = {}
        for key, unit_dim in (("start", "s"), ("duration", "s"), ("amplitude", "V"), ("energy", "J"),
                              ("probability", "1"), ("edge", "s"), ("shift", "Hz")):
            if key not in p or p[key] is None:
                if key in ("start", "duration"):
                    col.add(base, f"pulse '{p['name']}' needs '{key}'", f"add '{key}: <time>'")
                fields[key] = None
                continue
            try:
                override = overrides.get(f"{p['name']}.{key}")
                v = override if override is not None else evaluate(p[key], res)
                fields[key] = require(v, unit_dim, f"pulses[{i}].{key}", p[key])
            except InputError as e:
                col.add_exc(base + (key,), e)
                fields[key] = None
        if fields["start"] is None or fields["duration"] is None:
            continue
        kind = p.get("kind") or _guess_kind(p["name"], str(p.get("channel", "")))
        pulses.append(Pulse(p["name"], str(p.get("channel")), kind, fields["start"], fields["duration"],
                            fields["amplitude"], fields["energy"], fields["probability"], fields["edge"],
                            fields["shift"]))
    windows: list[Window] = []
    for i, w in enumerate(seq.get("windows") or []):
        if not isinstance(w, dict) or not isinstance(w.get("name"), str):
            continue
        base = ("windows", i)
        try:
            s = require(evaluate(w.get("start"), res), "s", f"windows[{i}].start", w.get("start"))
            d = require(evaluate(w.get("duration"), res), "s", f"windows[{i}].duration", w.get("duration"))
        except InputError as e:
            col.add_exc(base, e)
            continue
        dets = w.get("detectors", [1, 2])
        windows.append(Window(w["name"], str(w.get("covers", "")), s, d, tuple(dets) if isinstance(dets, list) else (1, 2)))
    phase = 0.0
    ser = seq.get("serrodyne")
    if isinstance(ser, dict) and ser.get("phase_offset") is not None:
        try:
            phase = require(evaluate(ser["phase_offset"], res), "rad", "serrodyne.phase_offset", ser["phase_offset"])
        except InputError as e:
            col.add_exc(("serrodyne", "phase_offset"), e)
    if len(col.errors) > before:
        return None
    params = {n: overrides[n].x for n in sweep_names}
    return Point(index, params, values, pulses, windows, phase)


def _guess_kind(name: str, channel: str) -> str:
    for k in ("pump", "read", "aux"):
        if name.startswith(k) or channel.startswith(k):
            return k
    return "other"


def _check_structure(seq: Any, col: _Collector) -> None:
    if not isinstance(seq, dict):
        col.add((), "a sequence file must be a YAML mapping with name, period and pulses",
                "see sequences/dlcz_witness.yaml for an example")
        col.raise_if_any()
    for k in seq:
        if k not in TOP_KEYS and col.full:
            col.add((k,), f"unknown key '{k}'")
        elif k not in TOP_KEYS:
            import difflib
            near = difflib.get_close_matches(str(k), TOP_KEYS, 1)
            col.add((k,), f"unknown key '{k}'", f"did you mean '{near[0]}'?" if near else
                    "allowed keys: " + ", ".join(TOP_KEYS))
    for k in ("name", "period", "pulses"):
        if k not in seq:
            col.add((), f"the sequence has no '{k}'", f"add '{k}:' at the top level")
    if "name" in seq and not isinstance(seq["name"], str):
        col.add(("name",), "name must be text", "e.g. name: dlcz_witness")
    if "values" in seq and not isinstance(seq["values"], dict):
        col.add(("values",), "'values' must be a mapping of names to values", "e.g. values: {tau: 123 ns}")
    pulses = seq.get("pulses")
    if pulses is not None and (not isinstance(pulses, list) or not pulses):
        col.add(("pulses",), "'pulses' must be a non-empty list", "add at least one pulse")
        pulses = []
    names: dict[str, int] = {}
    for i, p in enumerate(pulses or []):
        base = ("pulses", i)
        if not isinstance(p, dict):
            col.add(base, "each pulse is a mapping with name, channel, start and duration",
                    "e.g. - {name: pump, channel: pump_aom, start: 1 us, duration: 40 ns}")
            continue
        for k in p:
            if k not in PULSE_KEYS:
                import difflib
                near = difflib.get_close_matches(str(k), PULSE_KEYS, 1)
                col.add(base + (k,), f"unknown pulse key '{k}'", f"did you mean '{near[0]}'?" if near else
                        "allowed: " + ", ".join(PULSE_KEYS))
        if not isinstance(p.get("name"), str) or not p.get("name"):
            col.add(base, "a pulse needs a 'name'", "add 'name: pump' (names are unique)")
        elif p["name"] in names:
            col.add(base + ("name",), f"pulse name '{p['name']}' is used twice",
                    f"rename one (the other is pulse {names[p['name']] + 1})")
        else:
            names[p["name"]] = i
            if not p["name"].isidentifier():
                col.add(base + ("name",), f"pulse name '{p['name']}' is not a plain identifier",
                        "use letters, digits and _ (it is used in expressions like pump.end)")
        if "channel" not in p or not isinstance(p.get("channel"), str):
            col.add(base, f"pulse {p.get('name', i)!r} needs a 'channel' (a role such as pump_aom)",
                    "add 'channel: pump_aom'")
        if p.get("kind") is not None and p["kind"] not in PULSE_KINDS:
            col.add(base + ("kind",), f"unknown pulse kind '{p['kind']}'", "kinds: " + ", ".join(PULSE_KINDS))
    wins = seq.get("windows")
    if wins is not None and not isinstance(wins, list):
        col.add(("windows",), "'windows' must be a list", "e.g. - {name: herald, covers: pump, start: ..., duration: ...}")
    wnames: set[str] = set()
    for i, w in enumerate(wins if isinstance(wins, list) else []):
        base = ("windows", i)
        if not isinstance(w, dict):
            col.add(base, "each window is a mapping with name, covers, start, duration", "see docs/sequences.md")
            continue
        for k in w:
            if k not in WINDOW_KEYS:
                col.add(base + (k,), f"unknown window key '{k}'", "allowed: " + ", ".join(WINDOW_KEYS))
        for k in ("name", "covers", "start", "duration"):
            if k not in w:
                col.add(base, f"window {w.get('name', i)!r} needs '{k}'", f"add '{k}:'")
        if isinstance(w.get("name"), str):
            if w["name"] in wnames:
                col.add(base + ("name",), f"window name '{w['name']}' is used twice", "rename one")
            wnames.add(w["name"])
        if "covers" in w and w["covers"] not in names:
            col.add(base + ("covers",), f"window covers unknown pulse '{w['covers']}'",
                    "name a pulse of this sequence: " + ", ".join(names))
        dets = w.get("detectors")
        if dets is not None and (not isinstance(dets, list) or not all(d in (1, 2) for d in dets) or not dets):
            col.add(base + ("detectors",), "detectors must be a list from [1, 2]", "e.g. detectors: [1, 2]")


def parse_sequence(doc: YamlDoc) -> Sequence:
    """Validate a parsed sequence document (no station) and resolve all sweep points."""
    seq = doc.data
    col = _Collector(doc)
    _check_structure(seq, col)
    period = 0.0
    if "period" in seq:
        try:
            period = require(evaluate(seq["period"]), "s", "period", seq["period"])
            if period <= 0:
                col.add(("period",), f"period {seq['period']!r} must be positive", "e.g. period: 50 us")
        except InputError as e:
            col.add_exc(("period",), e)
    trials = float(DEFAULT_TRIALS)
    if "trials" in seq:
        try:
            trials = _num_trials(seq["trials"])
        except (ValueError, TypeError):
            col.add(("trials",), f"trials {seq['trials']!r} must be a whole number ≥ 1",
                    "e.g. trials: 1e8 (trials per sweep point)")
    axes = _sweep_axes(seq, col)
    col.raise_if_any()
    sweep_names = [a[0] for a in axes]
    for name, vals, path in axes:
        if name not in (seq.get("values") or {}) and not _is_pulse_field(seq, name):
            col.add(path + ("parameter",), f"sweep parameter '{name}' is not defined",
                    "sweep a name from 'values:' or a pulse field such as pump.energy")
    if len(set(sweep_names)) != len(sweep_names):
        col.add(("sweep",), "a parameter is swept twice", "sweep each parameter once")
    n_points = int(np.prod([len(a[1]) for a in axes])) if axes else 1
    if n_points > MAX_POINTS:
        col.add(("sweep",), f"{n_points} sweep points, more than {MAX_POINTS}", "sweep fewer values")
    col.raise_if_any()
    points: list[Point] = []
    combos = itertools.product(*[a[1] for a in axes]) if axes else [()]
    for idx, combo in enumerate(combos):
        overrides = {name: v for name, v in zip(sweep_names, combo)}
        pt = _resolve_point(seq, idx, overrides, col, period, sweep_names)
        if pt is not None:
            points.append(pt)
        if col.errors:
            break  # the same mistake would repeat for every point
    col.raise_if_any()
    device = seq.get("device") or {}
    s = Sequence(doc.file, doc, seq["name"], period, trials, points, sweep_names, seq,
                 device=device, serrodyne=seq.get("serrodyne"), tagger=seq.get("tagger") or {},
                 lock=seq.get("lock") or {}, calibrations=list(seq.get("calibrations") or []),
                 experiment=str(seq.get("experiment", "dlcz")))
    from .validate import check_sequence

    check_sequence(s, col)
    col.raise_if_any()
    return s


def _is_pulse_field(seq: dict, name: str) -> bool:
    head, _, attr = name.partition(".")
    return attr in ("start", "duration", "amplitude", "energy", "probability", "shift", "edge") and \
        any(isinstance(p, dict) and p.get("name") == head for p in seq.get("pulses") or [])


def load_sequence(path: str | Path) -> Sequence:
    """Read, validate and resolve a sequence file (no station)."""
    return parse_sequence(load_yaml(path))


def loads_sequence(text: str, file: str = "<string>") -> Sequence:
    return parse_sequence(loads_yaml(text, file))
