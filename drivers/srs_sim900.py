"""SRS SIM900 mainframe with SIM928 isolated voltage sources: the SNSPD bias.

Every SIM928 sits in a mainframe slot ("port") and is reached through the mainframe's
pass-through commands (SIM900 Operation and Service Manual, Rev. 2.0, ch. 3 "Remote Operation",
mainframe commands):

* ``SNDT p,"msg"`` sends ``msg`` to the module in port ``p``;
* ``GETN? p,n`` returns up to ``n`` bytes of that module's output buffer as a definite-length block
  ``#3nnn<data>`` (``#3000`` when nothing has arrived yet); the module's own reply, with its own
  terminator (SIM928 power-on default ``TERM CRLF``), is inside the block and the mainframe's
  terminator follows it;
* ``FLSH p`` discards the port's buffers; ``*IDN?`` identifies the mainframe
  (``Stanford_Research_Systems,SIM900,s/n…,ver…``). (``CONN p,"esc"`` — a transparent link until the
  escape string — is not used: pass-through keeps every exchange addressed and checkable.)

SIM928 commands (SIM928 Operation and Service Manual, ch. 2 "Remote Operation": §2.4.4 output
commands ``VOLT(?) {f}``, ``OPON``, ``OPOF``, ``EXON(?) {z}``; §2.4.8 interface commands ``*IDN?``,
``LEXE?``, ``LCME?``, ``TERM``): output −20…+20 V with 1 mV resolution. ``LEXE?``/``LCME?`` return
the last execution / command error code and clear it; code tables as in the manual and in
``QCoDeS/Qcodes_contrib_drivers: qcodes_contrib_drivers/drivers/StanfordResearchSystems/SIM928.py``,
which uses the same ``SNDT``/``GETN?`` pass-through. Every command sent to a module is followed by
``LEXE?`` and ``LCME?``; a non-zero code raises an InstrumentError naming the port, the command and
the error.

Assumptions: ``EXON?`` reports the output state (1 on, 0 off; ``TOKN OFF``, the power-on default);
the mainframe ends its replies in CR LF — replies are read to LF and the block length is used to
re-join a block whose data contains LF, so LF-only mainframes work too.

``safe_state()``: every configured port to 0 V, then output off (never stops at the first failure).
``reset_latch(settle_s)``: the fix for a latched nanowire — bias to 0 V, wait, back to the set point.

Driver options: ``ports`` (slots holding SIM928s, default ``[1]``), ``default_port`` (the port the
instrument-level ``DetectorBias`` methods act on, default the first of ``ports``), ``module_timeout``
(how long to wait for a module's reply, default ``"1 s"``), ``poll_interval`` (pause between empty
``GETN?`` polls, default ``"10 ms"``). Station safety limits narrow ``port1.voltage`` etc.
"""
from __future__ import annotations

import logging
import math
import time
from typing import Any

from labctl import units as _units
from labctl.errors import InputError, InstrumentError, InstrumentTimeout, LabctlError, SettingError
from labctl.instrument.base import Component, Instrument, Setting

log = logging.getLogger("labctl.drivers.sim900")

#: SIM928 ``LEXE?`` codes (SIM928 manual §2.4.8)
EXECUTION_ERRORS = {0: "No error", 1: "Illegal value", 2: "Wrong token", 3: "Invalid bit"}
#: SIM928 ``LCME?`` codes (SIM928 manual §2.4.8)
COMMAND_ERRORS = {0: "No error", 1: "Illegal command", 2: "Undefined command", 3: "Illegal query",
                  4: "Illegal set", 5: "Missing parameter(s)", 6: "Extra parameter(s)",
                  7: "Null parameter(s)", 8: "Parameter buffer overflow", 9: "Bad floating-point",
                  10: "Bad integer", 11: "Bad integer token", 12: "Bad token value", 13: "Bad hex block",
                  14: "Unknown token"}
PORTS = tuple(range(1, 9))
MAX_SETTLE_S = 60.0


class SIM928Port(Component):
    """One SIM928 in a SIM900 port; fills the ``DetectorBias`` protocol for that port."""

    voltage = Setting("VOLT?", "VOLT {value}", unit="V", limits=(-20.0, 20.0), fmt="{:.3f}", step=0.001,
                      check_errors=False, doc="output voltage set point (1 mV resolution)")
    output = Setting("EXON?", "{value}", mapping={True: "OPON", False: "OPOF"}, check_errors=False,
                     doc="output on (OPON) / off (OPOF)")

    @property
    def port(self) -> int:
        return self.variables["port"]

    # messages to this module go through the mainframe's pass-through, each one error-checked
    def write(self, command: str) -> None:
        self.instrument.module_write(self.port, command)

    def query(self, command: str) -> str:
        return self.instrument.module_query(self.port, command)

    # -- DetectorBias ---------------------------------------------------------------------------
    def set_bias(self, volts: float | str) -> None:
        """Output voltage (V, or ``"0.5 V"``), validated against the SIM928 and station limits."""
        self.voltage = volts

    def bias(self) -> float:
        """Output voltage set point (V), read back from the module."""
        return self.voltage

    def set_output(self, on: bool) -> None:
        if not isinstance(on, bool):
            raise SettingError(self.full_name, "output", on, "True or False")
        self.output = on

    def reset_latch(self, settle_s: float = 0.1) -> None:
        """Un-latch the nanowire: bias to 0 V, wait ``settle_s``, back to the previous set point."""
        if isinstance(settle_s, bool) or not isinstance(settle_s, (int, float)) or not math.isfinite(settle_s) \
                or not 0 <= settle_s <= MAX_SETTLE_S:
            raise SettingError(self.full_name, "settle_s", settle_s, f"range 0 s to {MAX_SETTLE_S:g} s", "s")
        target = self.voltage
        self.voltage = 0.0
        time.sleep(settle_s)
        self.voltage = target

    def idn(self) -> str:
        return self.query("*IDN?")

    # the rest of the Device protocol, so a port can stand in for a detector_bias instrument
    @property
    def name(self) -> str:
        return self.full_name

    def snapshot(self) -> dict[str, Any]:
        return {"idn": self.idn(), "port": self.port, "settings": self.snapshot_settings()}

    def close(self) -> None:
        """Nothing to close: the mainframe owns the link."""

    def errors(self) -> list[str]:
        """Read (and clear) the module's last execution and command errors."""
        return self.instrument.module_errors(self.port)

    def safe_state(self) -> None:
        """0 V, then output off (the output is switched off even if zeroing failed)."""
        try:
            self.voltage = 0.0
        finally:
            self.output = False


class SIM900(Instrument):
    """SIM900 mainframe whose ports ``ports`` hold SIM928 sources (``port1``, ``port2``, …)."""

    model = "SRS SIM900 + SIM928"
    roles = ("detector_bias",)
    read_termination = "\n"
    write_termination = "\n"
    timeout = 2.0
    baud_rate = 9600
    error_query = None  # errors live in the modules (LEXE?/LCME?), see check_errors
    idn_query = "*IDN?"
    simulator = "sim_instruments.models.sim900:SIM900Model"
    components = {f"port{p}": (SIM928Port, {"port": p}) for p in PORTS}
    #: bytes asked for per GETN? (the block header has 3 length digits)
    getn_bytes = 128

    def __init__(self, name: str, transport: Any, **options: Any) -> None:
        super().__init__(name, transport, **options)
        ports = options.get("ports", [1])
        if isinstance(ports, int) and not isinstance(ports, bool):
            ports = [ports]
        if not isinstance(ports, (list, tuple)) or not ports or \
                any(isinstance(p, bool) or not isinstance(p, int) or p not in PORTS for p in ports) or \
                len(set(ports)) != len(ports):
            raise InputError(f"{name}.options.ports = {ports!r}: expected a list of distinct SIM900 ports 1–8",
                             fix="e.g. ports: [1, 2]")
        self.ports = tuple(ports)
        for cname in list(self._components):
            if self._components[cname].variables["port"] not in self.ports:
                del self._components[cname]
                delattr(self, cname)
        default = options.get("default_port", self.ports[0])
        if default not in self.ports:
            raise InputError(f"{name}.options.default_port = {default!r} is not one of ports {list(self.ports)}",
                             fix="choose one of the configured ports")
        self.default_port = default
        self.module_timeout = _units.parse_as(options.get("module_timeout", "1 s"), "s",
                                              where=f"{name}.options.module_timeout")
        self.poll_interval = _units.parse_as(options.get("poll_interval", "10 ms"), "s",
                                             where=f"{name}.options.poll_interval")

    # -- pass-through ---------------------------------------------------------------------------
    def port(self, port: int | None = None) -> SIM928Port:
        """The component of ``port`` (default: ``default_port``)."""
        p = self.default_port if port is None else port
        if p not in self.ports:
            raise SettingError(self.name, "port", port, "ports " + ", ".join(map(str, self.ports)))
        return self._components[f"port{p}"]  # type: ignore[return-value]

    @staticmethod
    def _sndt(port: int, message: str) -> str:
        if '"' in message or "\n" in message or "\r" in message:
            raise SettingError("SIM900", "message", message, "text without quotes or line breaks")
        return f'SNDT {port},"{message}"'

    def module_write(self, port: int, message: str, check: bool = True) -> None:
        """Send ``message`` to the module in ``port``; then read its LEXE?/LCME? (``check``)."""
        cmd = self._sndt(port, message)
        self.write(cmd)
        if check:
            errors = self.module_errors(port)
            if errors:
                raise InstrumentError(f"{self.name}.port{port}", cmd, "; ".join(errors))

    def module_query(self, port: int, message: str) -> str:
        """Send a query to the module in ``port`` and return its reply (terminator stripped)."""
        cmd = self._sndt(port, message)
        self.write(cmd)
        return self._module_reply(port, cmd)

    def _module_reply(self, port: int, cmd: str) -> str:
        deadline = time.monotonic() + self.module_timeout
        data = ""
        while True:
            data += self.getn(port)
            if data.endswith("\n"):
                break
            if time.monotonic() > deadline:
                self.write(f"FLSH {port}")  # drop a partial reply so it cannot answer the next query
                raise InstrumentTimeout(f"{self.name}.port{port}", self.transport.resource, cmd, self.module_timeout)
            time.sleep(self.poll_interval)
        lines = [ln.strip() for ln in data.splitlines() if ln.strip()]
        if len(lines) > 1:
            log.warning("%s.port%d: discarded stale module output %r", self.name, port, lines[:-1])
        return lines[-1] if lines else ""

    def getn(self, port: int, max_bytes: int | None = None) -> str:
        """One ``GETN?``: the data of the returned ``#3nnn`` block (may be empty or partial)."""
        n_req = self.getn_bytes if max_bytes is None else max_bytes
        cmd = f"GETN? {port},{n_req}"
        self.write(cmd)
        text = self.read()
        if len(text) < 2 or text[0] != "#" or not text[1].isdigit() or text[1] == "0":
            raise InstrumentError(self.name, cmd, f"unexpected reply {text!r} (expected a block #3nnn…)")
        head = 2 + int(text[1])
        while len(text) < head:  # a terminator inside the header cannot happen; be safe anyway
            text += "\n" + self.read()
        try:
            n = int(text[2:head])
        except ValueError:
            raise InstrumentError(self.name, cmd, f"bad block length in {text!r}") from None
        while len(text) < head + n:  # the LF that ended a read belonged to the block's data
            text += "\n" + self.read()
        rest = text[head + n:]
        if rest.strip("\r"):
            raise InstrumentError(self.name, cmd, f"unexpected bytes {rest!r} after the {n}-byte block")
        return text[head:head + n]

    def module_errors(self, port: int) -> list[str]:
        """Last execution and command errors of the module in ``port`` (reading clears them)."""
        out = []
        for query, table, kind in (("LEXE?", EXECUTION_ERRORS, "execution error"),
                                   ("LCME?", COMMAND_ERRORS, "command error")):
            reply = self.module_query(port, query)
            try:
                code = int(reply)
            except ValueError:
                raise InstrumentError(f"{self.name}.port{port}", self._sndt(port, query),
                                      f"unexpected reply {reply!r}") from None
            if code:
                out.append(f"{kind} {code} ({table.get(code, 'unknown')})")
        return out

    def check_errors(self, command: str | None = None) -> None:
        """Read every configured module's error codes; raise listing all that are set."""
        problems = []
        for p in self.ports:
            problems += [f"port{p}: {e}" for e in self.module_errors(p)]
        if problems:
            raise InstrumentError(self.name, command, "; ".join(problems))

    def connect(self) -> None:
        """Flush each port, restore the module's power-on reply terminator (``TERM CRLF``: replies
        are complete when they end in LF), check that it holds a SIM928, clear stale error codes."""
        for p in self.ports:
            self.write(f"FLSH {p}")
            self.module_write(p, "TERM CRLF", check=False)
            try:
                idn = self.module_query(p, "*IDN?")
            except InstrumentTimeout:
                raise InstrumentError(f"{self.name}.port{p}", self._sndt(p, "*IDN?"),
                                      "no module answers in this port; check the 'ports' option") from None
            if "SIM928" not in idn.upper():
                raise InstrumentError(f"{self.name}.port{p}", self._sndt(p, "*IDN?"),
                                      f"port holds {idn!r}, not a SIM928")
            stale = self.module_errors(p)
            if stale:
                log.warning("%s.port%d: cleared stale errors: %s", self.name, p, "; ".join(stale))

    # -- DetectorBias on the default port -----------------------------------------------------
    def set_bias(self, volts: float | str, port: int | None = None) -> None:
        self.port(port).set_bias(volts)

    def bias(self, port: int | None = None) -> float:
        return self.port(port).bias()

    def set_output(self, on: bool, port: int | None = None) -> None:
        self.port(port).set_output(on)

    def reset_latch(self, settle_s: float = 0.1, port: int | None = None) -> None:
        self.port(port).reset_latch(settle_s)

    def safe_state(self) -> None:
        """Every configured port to 0 V and output off; all ports are tried before raising."""
        failures = []
        for p in self.ports:
            try:
                self.port(p).safe_state()
            except (LabctlError, OSError) as e:
                failures.append(f"port{p}: {e}")
        if failures:
            raise InstrumentError(self.name, "safe_state", "; ".join(failures))
