"""Fault plans: which fault to inject into which simulated or emulated instrument, and when.

A fault plan is a YAML file (``configs/faults/*.yaml``): a list of faults (or a mapping with
``faults:`` and an optional ``description:``). Each fault::

    - instrument: afg             # a station instrument name
      kind: timeout               # see KINDS below
      after_commands: 20          # trigger: after_commands: N | at_s: T | every: N
      count: 2                    # messages affected per occurrence (default 1) …
      duration: 500 ms            # … or everything during this time
      times: 3                    # with every: how many occurrences at most (default: no limit)
      note: what the run should do about it   # free text, copied into the events

Triggers count the messages the instrument's simulator receives (every command and query the
driver sends, error-queue reads included): ``after_commands: N`` hits the message after the N-th,
``every: N`` hits messages N, 2N, 3N…, ``at_s: T`` the first message (or :meth:`FaultInjector.poll`)
at least T seconds after :meth:`FaultInjector.install`.

Kinds and their parameters:

=================== ===========================================================================
``latency``         every affected message is answered ``delay`` (e.g. ``200 ms``) late
``timeout``         the next ``count`` replies are lost (the command is executed, its answer never
                    arrives): the driver raises ``InstrumentTimeout``
``dropped_connection`` the link breaks: in-process the driver's next I/O raises ``ConnectionLost``;
                    an emulator closes the client's socket (a serial link goes silent). The link
                    stays down for ``duration`` (default 0: reconnecting works at once)
``cut_reply``       the reply is cut in half (its terminator is lost): a timeout, then a garbled read
``garbled_reply``   letters and digits of the reply are replaced by noise, the terminator is kept:
                    the driver cannot parse it (``InstrumentError``)
``error_queue``     ``entry`` (default ``-222,"Data out of range"``) is pushed into the instrument's
                    error queue ``count`` times: the next error check raises ``InstrumentError``
``reboot``          the instrument power-cycles: every setting back to its power-on default; with
                    ``duration`` it is also away that long (the connection is reset, as
                    ``dropped_connection``)
``latched_detector`` the SNSPD on SIM928 ``port`` (default 1) latches (SIM900 ``set_latched``); the
                    digital twin stops counting on it until its bias is cycled through 0 V
``phase_disturbance`` the interferometer phase is kicked by ``kick`` (e.g. ``1.5 rad``, ``0.5 pi``)
                    through the digital twin (``twin.kick_phase(rad)``, else its interferometer's
                    random-walk phase ``twin.ifo.walk``); without a twin the fault is recorded
                    with ``effect: none``
``mode_hop``        the laser's measured wavelength jumps by ``offset`` (default ``50 pm``) until the
                    next wavelength set point (TLB-6700 ``mode_hop``)
=================== ===========================================================================

The injection goes through the models' ``interceptors`` hook and their fault methods, so the same
plan works in ``--sim`` (in-process models) and in ``labctl emulate`` (the emulator installs the
injector in the models it serves). API for the runner::

    plan = load_fault_plan("configs/faults/timeout.yaml")     # InputError with file:line
    plan.check(station_config)                                 # names exist in the station
    inj = FaultInjector(plan, station.lab, clock=time.monotonic)
    inj.install(); …; inj.poll(); …; inj.remove()
    inj.events   # [{"time": s, "instrument", "kind", "details": {…}, "fault": i, "line": n}, …]

For an emulated station (a station file written by ``labctl emulate``), :func:`injector_for`
returns a :class:`RemoteFaultInjector` with the same API that installs the plan in the emulator
process through its control port.
"""
from __future__ import annotations

import contextlib
import difflib
import json
import math
import random
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from . import units
from .errors import ConnectionLost, InputError, raise_input_errors
from .yamlio import YamlDoc, load_yaml, loads_yaml

DEFAULT_ERROR_ENTRY = '-222,"Data out of range"'

#: kind -> (description, {parameter: (dimension or type, default)}); a default of ``...`` = required
KINDS: dict[str, tuple[str, dict[str, tuple[str, Any]]]] = {
    "latency": ("replies arrive late", {"delay": ("s", ...)}),
    "timeout": ("replies are lost", {}),
    "dropped_connection": ("the link breaks", {}),
    "cut_reply": ("a reply is cut in half", {}),
    "garbled_reply": ("a reply is garbled", {}),
    "error_queue": ("an entry in the instrument's error queue", {"entry": ("str", DEFAULT_ERROR_ENTRY)}),
    "reboot": ("the instrument reboots, settings lost", {}),
    "latched_detector": ("an SNSPD latches", {"port": ("int", 1)}),
    "phase_disturbance": ("the interferometer phase is kicked", {"kick": ("rad", ...)}),
    "mode_hop": ("the laser hops to another mode", {"offset": ("m", 50e-12)}),
}
#: kinds acting on the reply of each affected message (``count``/``duration`` = messages affected)
MESSAGE_KINDS = ("latency", "timeout", "cut_reply", "garbled_reply")
TRIGGERS = ("after_commands", "at_s", "every")
COMMON_KEYS = ("instrument", "kind", *TRIGGERS, "count", "duration", "times", "note", "description")


class LinkDropped(ConnectionLost):
    """Raised from a model's ``feed`` by a ``dropped_connection`` fault: in-process the driver
    sees a ConnectionLost; an emulator closes the client connection when it catches it."""


@dataclass
class Fault:
    """One validated fault of a plan."""

    instrument: str
    kind: str
    trigger: str                    #: "after_commands", "at_s" or "every"
    at: float                       #: N (commands) or T (s)
    count: int = 1
    duration: float | None = None   #: s
    times: int | None = None        #: occurrences at most (None: once, or no limit with every)
    params: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    index: int = 0
    line: int | None = None

    @property
    def max_occurrences(self) -> float:
        if self.times is not None:
            return self.times
        return math.inf if self.trigger == "every" else 1

    def describe(self) -> str:
        trig = {"after_commands": f"after {int(self.at)} commands", "every": f"every {int(self.at)} commands",
                "at_s": f"at {self.at:g} s"}[self.trigger]
        return f"{self.kind} on {self.instrument} {trig}"


@dataclass
class FaultPlan:
    """A validated fault plan (``faults`` in file order)."""

    path: str
    faults: list[Fault]
    description: str = ""
    doc: YamlDoc | None = None

    def instruments(self) -> list[str]:
        return sorted({f.instrument for f in self.faults})

    def check(self, station: Any) -> None:
        """Check every fault names an instrument of ``station`` (a StationConfig, a Station, a
        mapping or a list of names); raise InputError at the fault's line otherwise."""
        if hasattr(station, "instruments"):
            names = list(station.instruments)
        elif isinstance(station, Mapping):
            names = list(station)
        else:
            names = list(station)
        errors = []
        for f in self.faults:
            if f.instrument not in names:
                near = difflib.get_close_matches(f.instrument, names, 1)
                errors.append(InputError(
                    f"fault {f.index + 1} ({f.kind}) names instrument '{f.instrument}', which is not in the station",
                    file=self.path, line=f.line,
                    fix=f"did you mean '{near[0]}'?" if near else "instruments: " + ", ".join(names)))
        raise_input_errors(errors)

    def to_dict(self) -> list[dict[str, Any]]:
        return [{"instrument": f.instrument, "kind": f.kind, f.trigger: f.at, "count": f.count,
                 "duration": f.duration, "times": f.times, "params": f.params, "note": f.note}
                for f in self.faults]


# ---- loading and validation --------------------------------------------------------------------
def load_fault_plan(path: str | Path) -> FaultPlan:
    """Read and validate a fault plan; every problem is an InputError naming file and line."""
    return parse_fault_plan(load_yaml(path))


def loads_fault_plan(text: str, file: str = "<string>") -> FaultPlan:
    return parse_fault_plan(loads_yaml(text, file))


def parse_fault_plan(doc: YamlDoc) -> FaultPlan:
    data = doc.data
    file = doc.file
    description = ""
    base: tuple = ()
    if isinstance(data, dict):
        unknown = [k for k in data if k not in ("faults", "description", "name")]
        if unknown:
            k = unknown[0]
            near = difflib.get_close_matches(str(k), ["faults", "description", "name"], 1)
            raise doc.error((k,), f"unknown key '{k}' in the fault plan",
                            f"did you mean '{near[0]}'?" if near else "a plan has 'faults:' (a list) and 'description:'")
        if "faults" not in data:
            raise doc.error((), "the fault plan has no 'faults:' list", "add 'faults:' with one entry per fault")
        description = data.get("description") or ""
        if not isinstance(description, str):
            raise doc.error(("description",), "'description' must be text", "write it as a string")
        data = data["faults"]
        base = ("faults",)
    if data is None:
        raise InputError("the fault plan is empty", file=file, line=1,
                         fix="write a list of faults, e.g. '- {instrument: afg, kind: timeout, after_commands: 5}'")
    if not isinstance(data, list):
        raise doc.error(base, f"a fault plan is a list of faults, not {_kind_of(data)}",
                        "write one '- instrument: …' entry per fault (see docs/faults.md)")
    if not data:
        raise doc.error(base, "the fault plan lists no faults", "add at least one fault")
    faults, errors = [], []
    for i, raw in enumerate(data):
        try:
            faults.append(_parse_fault(doc, base + (i,), raw, i))
        except InputError as e:
            errors.extend(e.problems)
    raise_input_errors(errors)
    return FaultPlan(file, faults, description, doc)


def _kind_of(v: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "text", bool: "a boolean", int: "a number",
            float: "a number", type(None): "empty"}.get(type(v), type(v).__name__)


def _parse_fault(doc: YamlDoc, path: tuple, raw: Any, index: int) -> Fault:
    if not isinstance(raw, dict):
        raise doc.error(path, f"fault {index + 1} must be a mapping, not {_kind_of(raw)}",
                        "write e.g. '- {instrument: afg, kind: timeout, after_commands: 5}'")
    where = f"fault {index + 1}"
    errors: list[InputError] = []

    def err(key: Any, what: str, fix: str) -> None:
        errors.append(doc.error(path + ((key,) if key is not None else ()), f"{where}: {what}", fix))

    kind = raw.get("kind")
    if kind is None:
        err(None, "'kind' is missing", "kinds: " + ", ".join(KINDS))
        kind_params: dict[str, tuple[str, Any]] = {}
    elif not isinstance(kind, str) or kind not in KINDS:
        near = difflib.get_close_matches(str(kind), list(KINDS), 1)
        err("kind", f"unknown fault kind {kind!r}",
            f"did you mean '{near[0]}'?" if near else "kinds: " + ", ".join(KINDS))
        kind_params = {}
    else:
        kind_params = KINDS[kind][1]
    allowed = list(COMMON_KEYS) + list(kind_params)
    for k in raw:
        if k not in allowed:
            other = [n for n, (_, p) in KINDS.items() if k in p]
            near = difflib.get_close_matches(str(k), allowed, 1)
            fix = (f"'{k}' belongs to kind {other[0]}" if other else
                   f"did you mean '{near[0]}'?" if near else "allowed keys: " + ", ".join(allowed))
            err(k, f"unknown key '{k}'" + (f" for kind {kind}" if isinstance(kind, str) and kind in KINDS else ""), fix)
    inst = raw.get("instrument")
    if inst is None:
        err(None, "'instrument' is missing", "name the station instrument, e.g. 'instrument: afg'")
    elif not isinstance(inst, str) or not inst.strip():
        err("instrument", f"'instrument' must be an instrument name, not {inst!r}", "e.g. 'instrument: afg'")
    trig = [t for t in TRIGGERS if t in raw]
    at: float = 0.0
    if len(trig) != 1:
        err(trig[1] if len(trig) > 1 else None,
            "give exactly one trigger" + (f" (found {', '.join(trig)})" if trig else ""),
            "after_commands: N, every: N or at_s: T")
        trig_name = "after_commands"
    else:
        trig_name = trig[0]
        v = raw[trig_name]
        if trig_name == "at_s":
            try:
                at = v if isinstance(v, (int, float)) and not isinstance(v, bool) else units.parse_as(v, "s", where="at_s")
                at = float(at)
                if not math.isfinite(at) or at < 0:
                    raise InputError("at_s must be a time ≥ 0", fix="e.g. at_s: 2.5")
            except InputError as e:
                err("at_s", e.what, e.fix or "e.g. at_s: 2.5 (seconds since the run started)")
        else:
            lo = 0 if trig_name == "after_commands" else 1
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                err(trig_name, f"{trig_name} must be a whole number ≥ {lo}, not {v!r}", f"e.g. {trig_name}: 10")
            else:
                at = float(v)
    count = raw.get("count", 1)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        err("count", f"'count' must be a whole number ≥ 1, not {count!r}", "e.g. count: 2")
        count = 1
    times = raw.get("times")
    if times is not None and (isinstance(times, bool) or not isinstance(times, int) or times < 1):
        err("times", f"'times' must be a whole number ≥ 1, not {times!r}", "e.g. times: 3")
        times = None
    duration = None
    if raw.get("duration") is not None:
        try:
            duration = units.parse_as(raw["duration"], "s", where="duration")
            if duration < 0:
                raise InputError("duration must not be negative", fix="e.g. duration: 500 ms")
        except InputError as e:
            err("duration", e.what, e.fix or "e.g. duration: 500 ms")
    note = raw.get("note", raw.get("description", ""))
    if not isinstance(note, str):
        err("note", "'note' must be text", "write it as a string")
        note = ""
    params: dict[str, Any] = {}
    for name, (dim, default) in kind_params.items():
        if name not in raw:
            if default is ...:
                err(None, f"kind {kind} needs '{name}'", _param_example(name))
            else:
                params[name] = default
            continue
        v = raw[name]
        try:
            if dim == "str":
                if not isinstance(v, (str, int)) or isinstance(v, bool) or not str(v).strip():
                    raise InputError(f"'{name}' must be text, not {v!r}", fix=_param_example(name))
                params[name] = str(v)
            elif dim == "int":
                if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                    raise InputError(f"'{name}' must be a whole number, not {v!r}", fix=_param_example(name))
                params[name] = v
            else:
                q = units.parse_as(v, dim, where=name)
                if dim == "s" and q < 0:
                    raise InputError(f"'{name}' must not be negative", fix=_param_example(name))
                params[name] = q
        except InputError as e:
            err(name, e.what, e.fix or _param_example(name))
    raise_input_errors(errors)
    return Fault(instrument=str(inst), kind=str(kind), trigger=trig_name, at=at, count=int(count),
                 duration=duration, times=times, params=params, note=note, index=index,
                 line=doc.line(path))


def _param_example(name: str) -> str:
    return {"delay": "e.g. delay: 200 ms", "kick": "e.g. kick: 1.5 rad (or 0.5 pi)",
            "offset": "e.g. offset: 50 pm", "port": "e.g. port: 1",
            "entry": "e.g. entry: '-222,\"Data out of range\"'"}.get(name, "see docs/faults.md")


# ---- injection ---------------------------------------------------------------------------------
class _LinkDown:
    """Truthy while a dropped link is down; stands in for a model's ``disconnected`` flag (read by
    ``ModelTransport`` and the emulator) and goes false by itself when the time is up."""

    def __init__(self, clock: Callable[[], float], until: float) -> None:
        self.clock = clock
        self.until = until

    def __bool__(self) -> bool:
        return self.clock() < self.until

    def __repr__(self) -> str:
        return f"<link down until t={self.until:.3f}>"


_GARBAGE = "~^`|@$%&?!{}"


class _State:
    """Per-fault bookkeeping."""

    def __init__(self, fault: Fault) -> None:
        self.fault = fault
        self.occurrences = 0
        self.remaining = 0                  # messages left in the current occurrence
        self.until: float | None = None     # end of the current occurrence (duration)


def _model_lock(model: Any) -> Any:
    lock = getattr(model, "lock", None)
    return lock if lock is not None and hasattr(lock, "__enter__") else contextlib.nullcontext()


class FaultInjector:
    """Injects the faults of a plan into simulator models.

    :param plan: a :class:`FaultPlan`.
    :param lab_or_models: a ``SimLab`` (``models``, ``twin``), a station with ``.lab``, or a
        mapping instrument name -> model.
    :param clock: seconds (monotonic); ``at_s`` and ``duration`` are measured on it from
        :meth:`install`.
    :param sleep: how latency waits (default ``time.sleep``).
    :param twin: the digital twin, when not reachable as ``lab.twin``.
    :param seed: seeds the noise of garbled replies.
    """

    def __init__(self, plan: FaultPlan, lab_or_models: Any, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, twin: Any = None, seed: int | None = 0) -> None:
        self.plan = plan
        lab = getattr(lab_or_models, "lab", None) if not hasattr(lab_or_models, "models") else lab_or_models
        if lab is not None and hasattr(lab, "models"):
            self.models: dict[str, Any] = dict(lab.models)
            self._lab = lab
        elif isinstance(lab_or_models, Mapping):
            self.models = dict(lab_or_models)
            self._lab = None
        else:
            raise InputError("fault injection needs the simulated station's models (run with --sim, or "
                             "against a station written by 'labctl emulate')",
                             fix="use --sim, or start 'labctl emulate --faults PLAN' and run on its station file")
        self._twin = twin
        self.clock = clock
        self.sleep = sleep
        self.rng = random.Random(seed)
        self.events: list[dict[str, Any]] = []
        self.lock = threading.RLock()
        self.t0: float | None = None
        self._states: dict[str, list[_State]] = {}
        self._counts: dict[str, int] = {}
        self._hooks: dict[str, Callable] = {}
        self._local = threading.local()
        self._stop_poll: threading.Event | None = None
        self._poller: threading.Thread | None = None

    # -- set-up ------------------------------------------------------------------------------------
    @property
    def twin(self) -> Any:
        if self._twin is not None:
            return self._twin
        return getattr(self._lab, "twin", None) if self._lab is not None else None

    def check(self) -> None:
        """Every fault's instrument has a model that supports its kind (InputError at the line)."""
        errors = []
        for f in self.plan.faults:
            model = self.models.get(f.instrument)
            why = None
            if model is None:
                near = difflib.get_close_matches(f.instrument, list(self.models), 1)
                errors.append(InputError(
                    f"fault {f.index + 1} ({f.kind}): no simulated instrument '{f.instrument}'",
                    file=self.plan.path, line=f.line,
                    fix=f"did you mean '{near[0]}'?" if near else "instruments: " + ", ".join(sorted(self.models))))
                continue
            if not hasattr(model, "interceptors"):
                why = (f"'{f.instrument}' ({type(model).__name__}) is not a byte-stream simulator, so its "
                       "traffic cannot be intercepted")
            elif f.kind == "error_queue" and not (hasattr(model, "push_error") or hasattr(model, "errors")):
                why = f"'{f.instrument}' ({type(model).__name__}) has no error queue"
            elif f.kind == "latched_detector" and not hasattr(model, "set_latched"):
                why = f"'{f.instrument}' ({type(model).__name__}) is not a detector bias source (SIM900)"
            elif f.kind == "latched_detector" and int(f.params["port"]) not in getattr(model, "modules", {}):
                why = (f"'{f.instrument}' has no SIM928 in port {f.params['port']} "
                       f"(ports: {', '.join(map(str, sorted(getattr(model, 'modules', {}))))})")
            elif f.kind == "mode_hop" and not hasattr(model, "mode_hop"):
                why = f"'{f.instrument}' ({type(model).__name__}) is not a laser with mode hops (TLB-6700)"
            if why:
                errors.append(InputError(f"fault {f.index + 1} ({f.kind}): {why}", file=self.plan.path,
                                         line=f.line, fix="choose an instrument whose simulator supports this kind "
                                                          "(see docs/faults.md)"))
        raise_input_errors(errors)

    def install(self, *, autopoll: bool | None = None, interval: float = 0.02) -> "FaultInjector":
        """Check the plan against the models and hook into them; starts the clock. ``autopoll``
        (default: when the plan has ``at_s`` faults) starts a thread that calls :meth:`poll`."""
        self.check()
        if autopoll is None:
            autopoll = any(f.trigger == "at_s" for f in self.plan.faults)
        with self.lock:
            self.t0 = self.clock()
            for f in self.plan.faults:
                self._states.setdefault(f.instrument, []).append(_State(f))
            for name in self._states:
                model = self.models[name]
                self._counts[name] = 0
                hook = self._make_hook(name)
                self._hooks[name] = hook
                model.interceptors.append(hook)
        if autopoll:
            self._stop_poll = threading.Event()
            self._poller = threading.Thread(target=self._autopoll, args=(self._stop_poll, interval),
                                            name="fault-poll", daemon=True)
            self._poller.start()
        return self

    def remove(self) -> None:
        """Unhook from every model; links dropped by the plan come back."""
        if self._stop_poll is not None:
            self._stop_poll.set()
            if self._poller is not None and self._poller is not threading.current_thread():
                self._poller.join(timeout=1.0)
            self._stop_poll = self._poller = None
        with self.lock:
            for name, hook in self._hooks.items():
                model = self.models[name]
                try:
                    model.interceptors.remove(hook)
                except ValueError:
                    pass
                if isinstance(getattr(model, "disconnected", None), _LinkDown):
                    model.disconnected = False
            self._hooks.clear()

    def __enter__(self) -> "FaultInjector":
        return self.install()

    def __exit__(self, *exc: Any) -> None:
        self.remove()

    def elapsed(self) -> float:
        return 0.0 if self.t0 is None else self.clock() - self.t0

    # -- triggers -------------------------------------------------------------------------------
    def poll(self) -> None:
        """Fire ``at_s`` faults whose time has come on instruments that are silent: state faults
        (reboot, latch, mode hop, phase kick, error entry) and links dropped for a ``duration``;
        reply faults start with the next message. Called by the injector's own thread
        (``autopoll``), and may be called by the runner between steps."""
        if self.t0 is None:
            return
        for name, states in list(self._states.items()):
            if not any(st.fault.trigger == "at_s" for st in states):
                continue
            model = self.models[name]
            with _model_lock(model):
                with self.lock:
                    now = self.elapsed()
                    for st in states:
                        f = st.fault
                        if f.trigger != "at_s" or f.kind in MESSAGE_KINDS:
                            continue
                        if f.kind == "dropped_connection" and not f.duration:
                            continue   # a drop without down time happens on the next message
                        if self._due(st, 0, now):
                            self._start(name, st, None)

    def _autopoll(self, stop: threading.Event, interval: float) -> None:
        while not stop.wait(interval):
            try:
                self.poll()
            except Exception as e:  # a failing fault must not kill the thread silently
                self.events.append({"time": round(self.elapsed(), 6), "instrument": "?", "kind": "error",
                                    "details": {"error": f"{type(e).__name__}: {e}"}, "fault": None,
                                    "line": None})

    def _due(self, st: _State, n: int, now: float) -> bool:
        f = st.fault
        if st.occurrences >= f.max_occurrences:
            return False
        if f.trigger == "every":
            return n % int(f.at) == 0
        ready = n > f.at if f.trigger == "after_commands" else now >= f.at
        busy = st.remaining > 0 or (st.until is not None and now < st.until)
        return ready and not busy

    def _start(self, name: str, st: _State, message: str | None) -> None:
        """Begin one occurrence of a fault: apply state effects now, arm message effects."""
        f = st.fault
        st.occurrences += 1
        model = self.models[name]
        now = self.elapsed()
        details: dict[str, Any] = {}
        if f.kind in MESSAGE_KINDS:
            if f.duration is not None:
                st.until = now + f.duration
                st.remaining = 0
                details["duration_s"] = f.duration
            else:
                st.remaining = f.count
                st.until = None
                details["messages"] = f.count
            if f.kind == "latency":
                details["delay_s"] = f.params["delay"]
        elif f.kind == "dropped_connection":
            down = f.duration or 0.0
            details["down_s"] = down
            if down > 0:
                model.disconnected = _LinkDown(self.clock, self.clock() + down)
        elif f.kind == "error_queue":
            entry = f.params["entry"]
            for _ in range(f.count):
                if hasattr(model, "push_error"):
                    model.push_error(entry)
                else:
                    model.errors.append(entry)
            details["entry"] = entry
            details["entries"] = f.count
        elif f.kind == "reboot":
            model.power_cycle()
            details["effect"] = "power cycle: settings back to power-on defaults"
            if f.duration:
                # a full reboot: the connection is reset and the instrument is away meanwhile
                model.disconnected = _LinkDown(self.clock, self.clock() + f.duration)
                details["down_s"] = f.duration
        elif f.kind == "latched_detector":
            port = int(f.params["port"])
            model.set_latched(port, True)
            details["port"] = port
            twin = self.twin
            hook = getattr(twin, "latch_detector", None) if twin is not None else None
            if callable(hook):
                try:
                    hook(port)
                except Exception as e:  # the twin's view is a bonus; the SIM900 state is the fault
                    details["twin_error"] = f"{type(e).__name__}: {e}"
        elif f.kind == "phase_disturbance":
            kick = float(f.params["kick"])
            details["kick_rad"] = kick
            twin = self.twin
            fn = None
            for attr in ("kick_phase", "phase_kick", "disturb_phase"):
                fn = getattr(twin, attr, None) if twin is not None else None
                if callable(fn):
                    break
                fn = None
            ifo = getattr(twin, "ifo", None) if twin is not None else None
            if fn is not None:
                fn(kick)
                details["effect"] = "interferometer phase kicked"
            elif ifo is not None and isinstance(getattr(ifo, "walk", None), (int, float)):
                # the twin's interferometer keeps its random-walk phase in ``walk`` (rad)
                with _model_lock(twin):
                    ifo.walk += kick
                details["effect"] = "interferometer phase kicked (twin.ifo.walk)"
            else:
                details["effect"] = "none (the simulated station has no digital twin with kick_phase)"
        elif f.kind == "mode_hop":
            off = float(f.params["offset"])
            model.mode_hop(off * 1e9)
            details["offset_nm"] = off * 1e9
        if message is not None:
            details["message"] = message if len(message) <= 80 else message[:80] + "…"
        ev = {"time": round(now, 6), "instrument": name, "kind": f.kind, "details": details,
              "fault": f.index, "line": f.line, "occurrence": st.occurrences,
              "command_number": self._counts.get(name, 0)}
        if f.note:
            ev["note"] = f.note
        self.events.append(ev)

    # -- the interceptor ---------------------------------------------------------------------------
    def _make_hook(self, name: str) -> Callable[[Any, str], Any]:
        def hook(model: Any, message: str) -> Any:
            if getattr(self._local, "busy", False):
                return None
            return self._on_message(name, model, message)
        hook.__name__ = f"fault_hook_{name}"
        return hook

    def _on_message(self, name: str, model: Any, message: str) -> Any:
        with self.lock:
            self._counts[name] = n = self._counts.get(name, 0) + 1
            now = self.elapsed()
            drop: _State | None = None
            for st in self._states.get(name, []):
                if self._due(st, n, now):
                    self._start(name, st, message)
                    if st.fault.kind == "dropped_connection" or (st.fault.kind == "reboot" and st.fault.duration):
                        drop = st
            if drop is not None:
                short = message if len(message) <= 60 else message[:60] + "…"
                raise LinkDropped(name, short, "connection dropped (fault injection: "
                                  f"{drop.fault.describe()})")
            delay = 0.0
            transform: _State | None = None
            for st in self._states.get(name, []):
                if st.fault.kind not in MESSAGE_KINDS:
                    continue
                if st.until is not None and now >= st.until:
                    st.until = None
                if not (st.until is not None or st.remaining > 0):
                    continue
                if st.fault.kind == "latency":
                    delay += st.fault.params["delay"]
                    if st.until is None:
                        st.remaining -= 1
                elif transform is None:
                    transform = st
        if delay > 0:
            self.sleep(delay)
        if transform is None:
            return None
        reply = self._reply_of(model, message)
        kind = transform.fault.kind
        if kind == "timeout" and not reply:
            return ("reply", b"")      # not a query: nothing to lose, does not count
        with self.lock:
            if transform.until is None:
                transform.remaining = max(0, transform.remaining - 1)
        if kind == "timeout":
            return ("reply", b"")
        if kind == "cut_reply":
            return ("reply", reply[:max(1, len(reply) // 2)] if reply else b"")
        return ("reply", self._garble(reply) if reply else b"")

    def _reply_of(self, model: Any, message: str) -> bytes:
        """What the model would send for ``message`` (the command is executed)."""
        with model.lock:
            self._local.busy = True
            try:
                before = len(model._out)
                reply = model.handle(message)
                direct = bytes(model._out[before:])
                del model._out[before:]
            finally:
                self._local.busy = False
        prompt = getattr(model, "prompt", None)
        err = getattr(model, "error", None)
        if reply is None:
            tail = err.encode() if isinstance(prompt, str) and isinstance(err, str) else b""
            return direct + tail
        data = reply.encode("latin-1") if isinstance(reply, str) else bytes(reply)
        if isinstance(prompt, str):
            return direct + data + prompt.encode()
        return direct + data + model.out_terminator

    def _garble(self, reply: bytes) -> bytes:
        out = bytearray(reply)
        changed = False
        for i, b in enumerate(out):
            if chr(b).isalnum() or chr(b) in "+-.,\"":
                out[i] = ord(self.rng.choice(_GARBAGE))
                changed = True
        if not changed:
            out[:0] = b"~"
        return bytes(out)


# ---- emulated stations ---------------------------------------------------------------------------
def control_request(address: tuple[str, int], request: dict[str, Any], timeout: float) -> dict[str, Any]:
    """One JSON-lines request to an emulator's control port and its reply (OSError when the port
    cannot be reached); shared by the remote fault injector and the remote twin."""
    with socket.create_connection(address, timeout=timeout) as s:
        s.sendall(json.dumps(request, default=str).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    return json.loads(buf or b"{}")


def sidecar_path(station_file: str | Path) -> Path:
    """Where ``labctl emulate`` describes itself next to the station file it wrote."""
    p = Path(station_file)
    return p.with_name(p.stem + ".emulator.json")


class RemoteFaultInjector:
    """The :class:`FaultInjector` API for an emulated station: the plan is installed in the
    emulator process through its control port (JSON lines on 127.0.0.1)."""

    def __init__(self, plan: FaultPlan, control: tuple[str, int], *, timeout: float = 5.0) -> None:
        self.plan = plan
        self.control = control
        self.timeout = timeout
        self._events: list[dict[str, Any]] = []
        self.installed = False

    def _call(self, request: dict[str, Any]) -> dict[str, Any]:
        try:
            reply = control_request(self.control, request, self.timeout)
        except OSError as e:
            raise ConnectionLost("emulator", request.get("op"), f"emulator control port "
                                 f"{self.control[0]}:{self.control[1]} unreachable: {e}") from None
        if not reply.get("ok"):
            err = reply.get("error", "no reply")
            if reply.get("input_error"):
                raise InputError(err, file=self.plan.path)
            raise ConnectionLost("emulator", request.get("op"), err)
        return reply

    def install(self) -> "RemoteFaultInjector":
        self._call({"op": "install", "plan": str(Path(self.plan.path).resolve())})
        self.installed = True
        return self

    def poll(self) -> None:
        pass

    def remove(self) -> None:
        if self.installed:
            try:
                self._events = self._call({"op": "remove"}).get("events", self._events)
            except ConnectionLost:
                pass
            self.installed = False

    @property
    def events(self) -> list[dict[str, Any]]:
        if self.installed:
            try:
                self._events = self._call({"op": "events"}).get("events", [])
            except ConnectionLost:
                pass
        return self._events

    def __enter__(self) -> "RemoteFaultInjector":
        return self.install()

    def __exit__(self, *exc: Any) -> None:
        self.remove()


def injector_for(plan: FaultPlan, station: Any, *, clock: Callable[[], float] = time.monotonic,
                 **kw: Any) -> "FaultInjector | RemoteFaultInjector":
    """The injector for a connected station: in-process for ``--sim`` (``station.lab``), through
    the emulator's control port for a station file written by ``labctl emulate``."""
    plan.check(station.config if hasattr(station, "config") else station)
    lab = getattr(station, "lab", None)
    if lab is not None:
        return FaultInjector(plan, lab, clock=clock, **kw)
    path = getattr(getattr(station, "config", None), "path", None)
    side = sidecar_path(path) if path else None
    if side is not None and side.exists():
        info = json.loads(side.read_text())
        host, _, port = str(info["control"]).rpartition(":")
        return RemoteFaultInjector(plan, (host, int(port)))
    raise InputError("faults can only be injected into a simulated or emulated station", file=plan.path,
                     fix="add --sim, or run against the station file of 'labctl emulate' "
                         "(or start the emulator with --faults PLAN)")


__all__ = ["Fault", "FaultPlan", "FaultInjector", "RemoteFaultInjector", "LinkDropped", "KINDS",
           "load_fault_plan", "loads_fault_plan", "injector_for", "sidecar_path"]
