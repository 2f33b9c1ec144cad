"""The station: instruments of a station file, connected through the right transport.

``Station(config, sim=True)`` swaps every instrument for its simulator (``sim_instruments``) and
keeps everything else of the config (names, roles, limits, channels). The drivers are the same
objects either way.
"""
from __future__ import annotations

import logging
from typing import Any, Iterable

from .config import InstrumentEntry, StationConfig
from .errors import InputError, InstrumentError, LabctlError
from .instrument.base import Instrument
from .instrument.transport import ModelTransport, NullTransport, SerialTransport, Transport, VisaTransport

log = logging.getLogger("labctl.station")

SERIAL_PREFIXES = ("serial://", "socket://", "loop://", "rfc2217://", "spy://", "/dev/", "COM")


def open_transport(entry: InstrumentEntry, *, sim: bool, lab: Any = None) -> Transport:
    """The transport for one instrument entry (simulator model, pyserial, driver-specific, pyvisa)."""
    cls = entry.driver_cls
    kw = dict(name=entry.name, read_termination=cls.read_termination,
              write_termination=cls.write_termination, timeout=entry.timeout or cls.timeout)
    res = entry.config.resource
    if res.startswith("via:"):
        return NullTransport(res, **kw)
    if sim:
        from sim_instruments.models import make_model

        spec = entry.config.sim.model if entry.config.sim and entry.config.sim.model else cls.simulator
        if not spec:
            raise InputError(f"driver {cls.__name__} of '{entry.name}' has no simulator", line=entry.line,
                             fix="give one with 'sim: {model: module:Class}' or run without --sim")
        # the simulator sees the driver's options (a 75 V limit switch, the SIM928 ports…),
        # overridden by sim-only options
        opts = {**entry.config.options, **(entry.config.sim.options if entry.config.sim else {})}
        model = make_model(spec, entry.name, **opts)
        if lab is not None:
            lab.add(entry.name, model)
        return ModelTransport(f"sim://{entry.name}", model, **kw)
    custom = cls.open_transport(res, **kw)
    if custom is not None:
        return custom
    if res.startswith(SERIAL_PREFIXES) or (cls.transport_kind == "serial" and "::" not in res):
        return SerialTransport(res, baud_rate=cls.baud_rate, **kw)
    return VisaTransport(res, backend=entry.config.visa_library or "@py", baud_rate=cls.baud_rate, **kw)


class Station:
    """Connected instruments of one station file."""

    def __init__(self, config: StationConfig, *, sim: bool = False, seed: int | None = None) -> None:
        self.config = config
        self.sim = sim
        self.instruments: dict[str, Instrument] = {}
        self.lab = None
        if sim:
            from sim_instruments.lab import SimLab

            self.lab = SimLab(seed=seed)

    def connect(self, names: Iterable[str] | None = None) -> "Station":
        """Open every transport, build every driver, apply the safety limits. On failure, close
        what was opened and re-raise."""
        try:
            for name in (names or self.config.instruments):
                entry = self.config.instruments[name]
                transport = open_transport(entry, sim=self.sim, lab=self.lab)
                inst = entry.driver_cls(name, transport, **entry.config.options)
                for path, (lo, hi) in entry.limits.items():
                    inst.restrict(path, lo, hi)
                self.instruments[name] = inst
                inst.connect()
            for inst in self.instruments.values():
                inst.bind(self)
        except BaseException:
            self.close()
            raise
        return self

    def reconnect(self, name: str) -> Instrument:
        """Close and reopen one instrument's connection (after a dropped link or a reboot) and run
        its ``connect()`` again; in simulation the same simulator model is kept."""
        inst = self.instruments[name]
        entry = self.config.instruments[name]
        try:
            inst.transport.close()
        except Exception as e:  # a broken link may fail to close; the new one matters
            log.warning("%s: close before reconnect failed: %s", name, e)
        if self.sim and self.lab is not None and name in self.lab.models:
            cls = entry.driver_cls
            inst.transport = ModelTransport(f"sim://{name}", self.lab.models[name], name=name,
                                            read_termination=cls.read_termination,
                                            write_termination=cls.write_termination,
                                            timeout=entry.timeout or cls.timeout)
        else:
            inst.transport = open_transport(entry, sim=False)
        inst._idn = None
        for comp_path, comp in inst.walk():
            comp._cache.clear()
        inst.connect()
        return inst

    def __getitem__(self, name: str) -> Instrument:
        return self.instruments[name]

    def rows(self) -> list[dict[str, Any]]:
        """name, role, driver, resource, idn of every connected instrument."""
        out = []
        for name, inst in self.instruments.items():
            entry = self.config.instruments[name]
            out.append({"name": name, "role": ",".join(entry.config.roles()),
                        "driver": entry.config.driver, "resource": inst.transport.resource,
                        "idn": inst.idn()})
        return out

    def snapshot(self) -> dict[str, Any]:
        return {name: inst.snapshot() for name, inst in self.instruments.items()}

    def safe_state(self) -> list[str]:
        """Put every instrument in its safe state; never stops at the first failure. Returns the
        failures as messages (empty when all succeeded)."""
        problems = []
        # virtual instruments (via:) last: their partner's safe state must not undo theirs
        order = sorted(self.instruments.items(),
                       key=lambda kv: kv[1].transport.resource.startswith("via:"))
        for name, inst in order:
            if getattr(inst.transport, "reply_pending", False):  # a late reply would answer the wrong query
                try:
                    inst.transport.discard_input()
                except Exception as e:  # the reconnect below is the fallback
                    log.warning("%s: discarding a pending reply failed: %s", name, e)
            try:
                inst.safe_state()
            except (LabctlError, OSError) as e:
                # a stale reply, a dropped link, a rebooted instrument: reconnect once and repeat
                log.warning("%s: safe state failed (%s); reconnecting and trying again", name, e)
                try:
                    self.reconnect(name).safe_state()
                except (LabctlError, OSError) as e2:
                    problems.append(f"{name}: safe state failed: {e2}")
                    log.error("%s: safe state failed: %s", name, e2)
        return problems

    def close(self) -> None:
        for inst in self.instruments.values():
            try:
                inst.close()
            except Exception as e:  # closing must never raise over the real error
                log.warning("%s: close failed: %s", inst.name, e)

    def __enter__(self) -> "Station":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
