"""The emulator: every instrument of a station file served on the wire from its simulator.

``Emulator(config).start()`` builds each instrument's model exactly as ``--sim`` does
(``labctl.station.open_transport(entry, sim=True, lab=lab)``: the same model class and options,
all in one ``SimLab``), attaches the digital twin when ``sim_instruments.twin`` exists, and serves:

=======================================  =====================================================
instrument (driver)                      emulated resource
=======================================  =====================================================
VISA over LAN/USB/GPIB (AFG3152C,        ``TCPIP0::127.0.0.1::<port>::SOCKET`` (raw socket,
81180A, Red Pitaya), New Focus TLB-6700  pyvisa-py's TCPIP SOCKET session)
(Newport USB library in the lab)
serial through pyserial (MDT694,         ``serial:///dev/pts/N`` (pseudo-terminal)
Sercalo VP1: ``serial://``, ``/dev/…``)
serial through VISA (SIM900, ``ASRL…``)  ``ASRL/dev/pts/N::INSTR`` (pseudo-terminal, pyvisa-py)
TimeHarp 260 (vendor library)            ``TH260-EMU::127.0.0.1:<port>::<index>`` with driver
                                         ``sim_instruments.emulator.tagger.EmulatedTimeHarp260``
                                         (see :mod:`sim_instruments.emulator.tagger`)
virtual (``via:``)                       unchanged
=======================================  =====================================================

A control port (JSON lines on 127.0.0.1) installs and removes fault plans and reports their
events; its address is in the side-car file ``<station-out>.emulator.json``.
"""
from __future__ import annotations

import inspect
import json
import logging
import os
import re
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from labctl.config import StationConfig, load_station
from labctl.errors import InputError, LabctlError
from labctl.faults import FaultInjector, FaultPlan, control_request, load_fault_plan, sidecar_path
from labctl.station import SERIAL_PREFIXES, open_transport

from .servers import PtyServer, SocketServer
from .tagger import EmulatedTimeHarp260, RecordServer

log = logging.getLogger("sim_instruments.emulator")

TAGGER_DRIVER = f"{EmulatedTimeHarp260.__module__}.{EmulatedTimeHarp260.__name__}"


def serving_kind(entry: Any, model: Any) -> str:
    """How an instrument is put on the wire: ``tagger``, ``pty-visa``, ``pty-serial`` or ``socket``."""
    res = entry.config.resource
    if hasattr(model, "TH260_ReadFiFo"):
        return "tagger"
    if res.upper().startswith("ASRL"):
        return "pty-visa"
    if res.startswith(SERIAL_PREFIXES) or getattr(entry.driver_cls, "transport_kind", "visa") == "serial":
        return "pty-serial"
    return "socket"


def attach_twin(lab: Any, config: StationConfig, seed: int | None) -> Any:
    """Attach ``sim_instruments.twin.Twin`` to ``lab`` when the package exists (None otherwise).
    The keyword arguments ``Twin.attach`` takes are matched by name."""
    try:
        from sim_instruments.twin import Twin  # type: ignore[import-not-found]
    except ImportError as e:
        if "sim_instruments.twin" not in str(e):
            log.warning("the digital twin failed to import: %s", e)
        return None
    attach = getattr(Twin, "attach", None)
    if attach is None:
        return None
    offer = {"lab": lab, "config": config, "station": config, "cfg": config, "seed": seed,
             "rng": getattr(lab, "rng", None), "params": getattr(config.model, "twin", None) or None,
             "twin_config": getattr(config.model, "twin", None) or {}}
    try:
        sig = inspect.signature(attach)
        params = list(sig.parameters.values())
        args, kw = [], {}
        for i, p in enumerate(params):
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            if i == 0 and p.name not in offer:
                args.append(lab)
            elif p.name in offer:
                kw[p.name] = offer[p.name]
        twin = attach(*args, **kw)
    except Exception as e:  # the emulator still serves every instrument without a twin
        log.warning("could not attach the digital twin: %s: %s", type(e).__name__, e)
        return None
    if twin is None:
        twin = getattr(lab, "twin", None)
    elif getattr(lab, "twin", None) is None:
        lab.twin = twin
    return twin


class Emulator:
    """Serves the instruments of one station file; see the module docstring."""

    def __init__(self, config: StationConfig, *, seed: int | None = None, host: str = "127.0.0.1",
                 faults: FaultPlan | None = None, twin: bool = True, echo_events: bool = False) -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise InputError(f"the emulator binds to loopback only, not {host!r}", fix="use 127.0.0.1")
        self.config = config
        self.seed = seed
        self.host = "127.0.0.1" if host == "localhost" else host
        self.plan = faults
        self.want_twin = twin
        self.echo_events = echo_events
        self.lab: Any = None
        self.twin: Any = None
        self.models: dict[str, Any] = {}
        self.servers: dict[str, Any] = {}
        self.resources: dict[str, str] = {}
        self.kinds: dict[str, str] = {}
        self.injectors: list[FaultInjector] = []
        self.events_reported = 0
        self.stop = threading.Event()
        self._control: socket.socket | None = None
        self.control_address = ""
        self.station_out: Path | None = None
        self._lock = threading.RLock()
        self.t0 = time.monotonic()

    # -- set-up ------------------------------------------------------------------------------------
    def start(self) -> "Emulator":
        from sim_instruments.lab import SimLab

        self.lab = SimLab(seed=self.seed)
        try:
            for name, entry in self.config.instruments.items():
                if entry.config.resource.startswith("via:"):
                    self.resources[name] = entry.config.resource
                    self.kinds[name] = "virtual"
                    continue
                transport = open_transport(entry, sim=True, lab=self.lab)
                model = getattr(transport, "model", None)
                if model is None:
                    raise InputError(f"'{name}' has no simulator model to emulate", line=entry.line,
                                     file=self.config.path, fix="give it 'sim: {model: module:Class}'")
                self.models[name] = model
            if self.want_twin:
                self.twin = attach_twin(self.lab, self.config, self.seed)
            for name, model in self.models.items():
                entry = self.config.instruments[name]
                kind = serving_kind(entry, model)
                self.kinds[name] = kind
                if kind == "tagger":
                    srv: Any = RecordServer(name, model, host=self.host).start()
                    self.resources[name] = srv.resource()
                elif kind == "socket":
                    srv = SocketServer(name, model, host=self.host).start()
                    self.resources[name] = srv.resource()
                else:
                    srv = PtyServer(name, model).start()
                    self.resources[name] = (f"ASRL{srv.path}::INSTR" if kind == "pty-visa"
                                            else f"serial://{srv.path}")
                self.servers[name] = srv
            self._start_control()
            if self.plan is not None:
                self.install_faults(self.plan)
            t = threading.Thread(target=self._poll_loop, name="emu-faults", daemon=True)
            t.start()
        except BaseException:
            self.close()
            raise
        return self

    # -- faults ------------------------------------------------------------------------------------
    def install_faults(self, plan: FaultPlan) -> FaultInjector:
        plan.check(self.config)
        inj = FaultInjector(plan, self.lab)
        inj.install(autopoll=True)
        with self._lock:
            self.injectors.append(inj)
        return inj

    def remove_faults(self) -> list[dict[str, Any]]:
        with self._lock:
            events = self.events()
            for inj in self.injectors:
                inj.remove()
            self.injectors.clear()
            self.events_reported = 0
            return events

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [ev for inj in self.injectors for ev in list(inj.events)]

    def _poll_loop(self) -> None:
        while not self.stop.wait(0.05):
            with self._lock:
                evs = self.events()
                if self.echo_events:
                    for ev in evs[self.events_reported:]:
                        print(f"labctl emulate: fault injected: {json.dumps(ev, default=str)}",
                              file=sys.stderr, flush=True)
                self.events_reported = len(evs)

    # -- control port -------------------------------------------------------------------------------
    def _start_control(self) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.host, 0))
        s.listen(4)
        s.settimeout(0.1)
        self._control = s
        host, port = s.getsockname()[:2]
        self.control_address = f"{host}:{port}"
        threading.Thread(target=self._control_loop, name="emu-control", daemon=True).start()

    def _control_loop(self) -> None:
        assert self._control is not None
        while not self.stop.is_set():
            try:
                conn, _ = self._control.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            threading.Thread(target=self._control_client, args=(conn,), daemon=True).start()

    def _control_client(self, conn: socket.socket) -> None:
        conn.settimeout(5.0)
        try:
            buf = b""
            while b"\n" not in buf and len(buf) < 1 << 16:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                buf += chunk
            reply = self.control(json.loads(buf.split(b"\n", 1)[0] or b"{}"))
            conn.sendall(json.dumps(reply, default=str).encode() + b"\n")
        except (OSError, ValueError) as e:
            log.debug("control connection: %s", e)
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def control(self, req: dict[str, Any]) -> dict[str, Any]:
        """One control request: ``ping``, ``install`` (``plan``: path), ``remove``, ``events``,
        ``twin`` (``method``, ``args``, ``kwargs``: call a public method of the digital twin)."""
        op = req.get("op")
        try:
            if op == "ping":
                return {"ok": True, "resources": self.resources, "twin": self.twin is not None}
            if op == "twin":
                return self._twin_call(req)
            if op == "install":
                self.install_faults(load_fault_plan(req["plan"]))
                return {"ok": True}
            if op == "remove":
                return {"ok": True, "events": self.remove_faults()}
            if op == "events":
                return {"ok": True, "events": self.events()}
            return {"ok": False, "error": f"unknown op {op!r} (ping, install, remove, events, twin)"}
        except InputError as e:
            return {"ok": False, "error": e.render(), "input_error": True}
        except (LabctlError, KeyError, OSError) as e:
            return {"ok": False, "error": f"{type(e).__name__}: {e}"}

    def _twin_call(self, req: dict[str, Any]) -> dict[str, Any]:
        method = str(req.get("method", ""))
        if self.twin is None:
            return {"ok": False, "error": "the emulator runs without a digital twin"}
        fn = getattr(self.twin, method, None) if method and not method.startswith("_") else None
        if not callable(fn):
            return {"ok": False, "error": f"the digital twin has no method {method!r}"}
        with self._lock:
            result = fn(*(req.get("args") or []), **(req.get("kwargs") or {}))
        try:
            json.dumps(result)
        except (TypeError, ValueError):
            result = repr(result)
        return {"ok": True, "result": result}

    # -- the station file ------------------------------------------------------------------------
    def station_text(self) -> str:
        """The input station file with every resource (and the tagger's driver) replaced; comments
        and everything else kept."""
        doc = self.config.doc
        lines = doc.text.splitlines(keepends=True)
        ok = bool(lines)
        for name, new in self.resources.items():
            entry = self.config.instruments[name]
            if new == entry.config.resource:
                continue
            ok = ok and _replace_value(lines, doc.lines.get(("instruments", name, "resource")),
                                       entry.config.resource, new)
            if self.kinds.get(name) == "tagger":
                ok = ok and _replace_value(lines, doc.lines.get(("instruments", name, "driver")),
                                           entry.config.driver, TAGGER_DRIVER)
        header = ("# Written by 'labctl emulate' from {src}: resources point at the emulator "
                  "(pid {pid}).\n").format(src=self.config.path, pid=os.getpid())
        if ok:
            return header + "".join(lines)
        import copy

        import yaml

        data = copy.deepcopy(doc.data)
        for name, new in self.resources.items():
            data["instruments"][name]["resource"] = new
            if self.kinds.get(name) == "tagger":
                data["instruments"][name]["driver"] = TAGGER_DRIVER
        return header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)

    def write_station(self, path: str | Path) -> Path:
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(self.station_text(), encoding="utf-8")
        os.replace(tmp, out)
        load_station(out)  # what we wrote must be a valid station file
        self.station_out = out
        side = sidecar_path(out)
        side.write_text(json.dumps({"pid": os.getpid(), "control": self.control_address,
                                    "station": str(out), "source": self.config.path,
                                    "resources": self.resources, "kinds": self.kinds,
                                    "faults": self.plan.path if self.plan else None,
                                    "twin": self.twin is not None}, indent=2))
        return out

    # -- running -------------------------------------------------------------------------------------
    def serve_forever(self, stop: threading.Event | None = None) -> None:
        stop = stop or self.stop
        while not stop.wait(0.1):
            pass

    def close(self) -> None:
        self.stop.set()
        if self._control is not None:
            try:
                self._control.close()
            except OSError:
                pass
        with self._lock:
            for inj in self.injectors:
                try:
                    inj.remove()
                except Exception:
                    pass
        for srv in list(self.servers.values()):
            try:
                srv.close()
            except Exception as e:  # closing must never raise
                log.warning("closing %s: %s", srv, e)
        if self.station_out is not None:
            try:
                sidecar_path(self.station_out).unlink()
            except OSError:
                pass

    def __enter__(self) -> "Emulator":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()


class RemoteTwin:
    """Calls public methods of the emulator's digital twin from the run process (JSON-able
    arguments and results), e.g. ``RemoteTwin.for_station(path).begin_block(point=0, block=0)``."""

    def __init__(self, control: tuple[str, int], *, timeout: float = 10.0) -> None:
        self.control = control
        self.timeout = timeout

    @classmethod
    def for_station(cls, station_file: str | Path) -> "RemoteTwin | None":
        """The twin behind a station file written by ``labctl emulate`` (None when the file has no
        emulator side-car or the emulator runs without a twin)."""
        side = sidecar_path(station_file)
        if not side.exists():
            return None
        info = json.loads(side.read_text())
        if not info.get("twin"):
            return None
        host, _, port = str(info["control"]).rpartition(":")
        return cls((host, int(port)))

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        reply = control_request(self.control, {"op": "twin", "method": method, "args": list(args),
                                               "kwargs": kwargs}, self.timeout)
        if not reply.get("ok"):
            raise LabctlError(f"digital twin in the emulator: {reply.get('error', 'no reply')}")
        return reply.get("result")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *a, **k: self.call(name, *a, **k)


def _replace_value(lines: list[str], line_no: int | None, old: str, new: str) -> bool:
    """Replace the YAML scalar ``old`` with ``new`` on line ``line_no`` (1-based); False if it is
    not found there as written."""
    if not line_no or line_no > len(lines):
        return False
    text = lines[line_no - 1]
    key_end = text.find(":")
    if key_end < 0:
        return False
    for token in (f'"{old}"', f"'{old}'", old):
        i = text.find(token, key_end + 1)
        if i >= 0:
            rep = json.dumps(new) if token.startswith('"') or _needs_quotes(new) else new
            rest = text[i + len(token):]
            m = re.match(r"( +)#", rest)
            if m:  # keep the comment in its column where there is room
                spaces = max(2, len(m.group(1)) - (len(rep) - len(token)))
                rest = " " * spaces + rest[len(m.group(1)):]
            lines[line_no - 1] = text[:i] + rep + rest
            return True
    return False


def _needs_quotes(v: str) -> bool:
    return bool(re.search(r"(^[\s\-?!&*#|>'\"%@`{}\[\]]|: | #|\s$)", v))


__all__ = ["Emulator", "RemoteTwin", "serving_kind", "attach_twin", "TAGGER_DRIVER"]
