"""Thorlabs MDT694 single-channel piezo driver (the fiber stretcher of the phase lock).

Command set: the MDT694A/MDT693A ("compatibility mode" on the B models) ASCII commands over RS-232,
115200 8N1, every command terminated by ``\\r``. No public manual text was available to check
against; the syntax below was cross-checked against these public drivers, which agree on it:

* EPICS ``epics-motor/motorThorLabs``, ``thorlabsApp/src/drvMDT695.cc`` ("compatible with MDT694,
  MDT693"): ``XV<volts>`` (format ``%.1f``), ``XR?``, ``E`` toggles echo, ``I`` multi-line
  identification, ``\\r`` input/output end-of-string, 115200 baud; parses ``XR?`` replies from
  character 2 on (``*[`` or ``[ `` prefix).
* ``claudioarena/mdt69x`` (``mdt69x/mdt69x.py``): compatibility-mode table ``XV``/``XR``/``XL``/
  ``XH``/``XL?``/``XH?``/``%`` (limit switch) and ``E``; replies end with the ``*`` prompt;
  bracketed values ``[ 24.8]``; a bad command is answered ``!`` (its port probe: an empty line
  gives ``b'!'``, or ``b'\\n\\r!'`` with echo on); B firmware in its native mode instead answers
  ``CMD_NOT_DEFINED`` and prompts with ``>`` — not used here.
* ``libics`` ``ThorlabsMDT69XA``: ``XL<v>``/``XH<v>``/``XL?``/``XH?``, ``E`` answered
  ``Echo On``/``Echo Off`` inside ``*[...]``.

What this driver assumes (check on the instrument, see ``docs/instruments/mdt694.md``):

* A query is answered ``[<value>]\\r`` followed by the prompt ``*`` (no terminator); a set only by
  ``*``; a rejected command by ``!`` instead of ``*``. Because the prompt has no terminator, it
  arrives as a prefix of the next reply line (``*[  24.8]``); the parser ignores any ``*`` and
  reports a ``!`` found there as the rejection of an earlier unconfirmed command.
* With echo on (the power-up state), the command line comes back first. Two public drivers hint
  that the echo may come back in lower case, so echo lines are never compared, only skipped:
  a reply is the first line holding a bracketed value. ``connect()`` turns echo off.
* ``XR?`` reads the output back with 0.1 V resolution (a public log shows 24.68 V set, 24.8 V
  read), so a confirmed set is checked with ``readback_tolerance`` (default 0.5 V).
* The output is clipped by the front-panel limit switch (75/100/150 V, ``%`` reads it) and by the
  ``XL``/``XH`` output limits; values are sent with two decimals (``XV24.68``).

Speed: ``set_voltage(v)`` is exactly one write of ``XV<v>\\r`` with no read (``confirm=True`` adds
one ``XR?`` read-back). Over RS-232 at 115200 baud that is ~0.6 ms per set, so the serial path
holds at most ~1.5 kHz updates; the 20 kHz phase lock of the simulation is only possible in
simulation, or through the MDT694's analog modulation input driven by a fast DAC.
"""
from __future__ import annotations

import contextlib
import logging
import math
import re
from typing import Any

from labctl import units as _units
from labctl.errors import InputError, InstrumentError
from labctl.instrument.base import Instrument, Setting

log = logging.getLogger("labctl.drivers.mdt694")

#: front-panel limit switch positions (V)
LIMIT_SWITCH_POSITIONS = (75.0, 100.0, 150.0)

_BRACKET = re.compile(r"\[([^\]]*)\]")


def _reply_float(text: str) -> float:
    return float(text.strip())


class MDT694(Instrument):
    """Thorlabs MDT694 piezo driver on its RS-232 port (roles: ``piezo_driver``).

    Driver options (``options:`` in the station file):

    * ``voltage_limit`` — the front-panel limit switch position the station is built for (75, 100
      or 150 V; number or ``"150 V"``). ``connect()`` reads the switch (``%``): a switch *below*
      this value is an error (the lock range would be wrong); a switch above it keeps this lower
      value as the limit. Without the option the switch setting is used. Before ``connect()``
      the driver assumes this value, or 75 V if it is not given.
    * ``safe_voltage`` — where ``safe_state()`` puts the stretcher (default 0 V).
    * ``readback_tolerance`` — accepted |read-back − set| for confirmed sets (default 0.5 V).

    Station safety limits narrow the output further: ``limits: {output_voltage: [0 V, 120 V]}``.
    """

    model = "Thorlabs MDT694"
    roles = ("piezo_driver",)
    read_termination = "\r"
    write_termination = "\r"
    timeout = 1.0
    baud_rate = 115200
    error_query = None
    idn_query = "I"
    transport_kind = "serial"
    simulator = "sim_instruments.models.mdt694:MDT694Model"

    output_voltage = Setting(
        "XR?", "XV{value}", unit="V", limits=lambda inst: inst._hardware_range(), fmt="{:.2f}",
        parse=_reply_float, check_errors=False,
        doc="piezo output voltage (XV sets, XR? reads back with 0.1 V resolution)")
    min_output = Setting(
        "XL?", "XL{value}", unit="V", limits=lambda inst: (0.0, inst._limit), fmt="{:.1f}",
        parse=_reply_float, check_errors=False, doc="lower output clip XL (device-side limit)")
    max_output = Setting(
        "XH?", "XH{value}", unit="V", limits=lambda inst: (0.0, inst._limit), fmt="{:.1f}",
        parse=_reply_float, check_errors=False, doc="upper output clip XH (device-side limit)")
    limit_switch = Setting("%", None, unit="V", parse=_reply_float,
                           doc="front-panel output limit switch (75, 100 or 150 V)")

    def __init__(self, name: str, transport: Any, **options: Any) -> None:
        super().__init__(name, transport, **options)
        unknown = set(options) - {"voltage_limit", "safe_voltage", "readback_tolerance"}
        if unknown:
            raise InputError(f"{name}: unknown MDT694 option(s) {', '.join(sorted(unknown))}",
                             fix="use voltage_limit, safe_voltage, readback_tolerance")
        limit = options.get("voltage_limit")
        self._configured_limit: float | None = None
        if limit is not None:
            lim = self._volts(limit, "voltage_limit")
            if lim not in LIMIT_SWITCH_POSITIONS:
                raise InputError(
                    f"{name}: voltage_limit {lim:g} V is not a limit switch position",
                    fix="write 75, 100 or 150 V (the front-panel switch); narrow the range with "
                        "'limits: {output_voltage: [0 V, 120 V]}' instead")
            self._configured_limit = lim
        self._limit = self._configured_limit if self._configured_limit is not None else 75.0
        self._xl = 0.0
        self._xh = self._limit
        self.safe_voltage = self._volts(options.get("safe_voltage", 0.0), "safe_voltage")
        if not 0.0 <= self.safe_voltage <= max(LIMIT_SWITCH_POSITIONS):
            raise InputError(f"{name}: safe_voltage {self.safe_voltage:g} V is outside 0..150 V",
                             fix="choose a safe voltage within the limit switch range")
        self.readback_tolerance = self._volts(options.get("readback_tolerance", 0.5), "readback_tolerance")
        if self.readback_tolerance <= 0:
            raise InputError(f"{name}: readback_tolerance must be positive", fix="e.g. 0.5 V")
        self._unconfirmed: str | None = None  #: last set whose prompt was not read

    def _volts(self, value: Any, what: str) -> float:
        if isinstance(value, str):
            return _units.parse_as(value, "V", where=f"{self.name}.{what}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InputError(f"{self.name}: {what} must be a voltage, got {value!r}", fix="e.g. 150 V")
        return float(value)

    # -- protocol plumbing ----------------------------------------------------------------------
    def _lock(self):
        lock = getattr(self.transport, "lock", None)
        return lock if lock is not None else contextlib.nullcontext()

    def query(self, command: str) -> str:
        """Write ``command`` and return the text inside the first ``[...]`` of the reply.

        Lines without a bracketed value (echoes, the stale output of unconfirmed sets, blank
        lines of ``I``) are skipped; a ``!`` before the value means an earlier command was
        rejected, and raises InstrumentError naming it."""
        with self._lock():
            self.transport.write(command)
            return self._read_value(command)

    def _read_value(self, command: str) -> str:
        skipped = 0
        while True:
            line = self.transport.read()
            m = _BRACKET.search(line)
            if m is None:
                skipped += 1
                if "!" in line:
                    self._rejected(command, line)
                if skipped > 100_000:
                    raise InstrumentError(self.name, command, f"no bracketed reply (last line {line!r})")
                continue
            if "!" in line[: m.start()]:
                self._rejected(command, line)
            if skipped:
                log.debug("%s: skipped %d echo/stale line(s) before the reply to %r", self.name, skipped, command)
            self._unconfirmed = None
            return m.group(1)

    def _rejected(self, command: str, line: str) -> None:
        earlier = self._unconfirmed
        self._unconfirmed = None
        what = f"{earlier!r} (unconfirmed) or {command!r}" if earlier else repr(command)
        raise InstrumentError(self.name, earlier or command,
                              f"the MDT694 answered '!' (command not understood) to {what}; reply {line!r}")

    # -- settings support -----------------------------------------------------------------------
    def _hardware_range(self) -> tuple[float, float]:
        xl = self._cache.get("min_output", self._xl)
        xh = self._cache.get("max_output", self._xh)
        return max(0.0, xl), min(self._limit, xh)

    @property
    def voltage_range(self) -> tuple[float, float]:
        """(low, high) V the output may be set to: limit switch, XL/XH and station limits."""
        lim = type(self).output_voltage.limits_for(self)
        assert lim is not None
        return lim

    @property
    def voltage_limit(self) -> float:
        """The limit switch value in use (V)."""
        return self._limit

    def connect(self) -> None:
        """Bring the device to a known state: echo off, limit switch and XL/XH read and checked."""
        self.echo_off()
        switch = self.limit_switch
        if switch not in LIMIT_SWITCH_POSITIONS:
            raise InstrumentError(self.name, "%", f"unexpected limit switch reading {switch!r} V")
        if self._configured_limit is not None and switch < self._configured_limit:
            raise InstrumentError(
                self.name, "%",
                f"the front-panel limit switch is at {switch:g} V but the station sets voltage_limit: "
                f"{self._configured_limit:g} V — turn the switch to {self._configured_limit:g} V or fix the config")
        if self._configured_limit is not None and switch > self._configured_limit:
            log.info("%s: limit switch at %g V, keeping the configured %g V", self.name, switch,
                     self._configured_limit)
        self._limit = self._configured_limit if self._configured_limit is not None else switch
        self._xl = self._cache["min_output"] = self.min_output
        self._xh = self._cache["max_output"] = self.max_output
        if self._xl > self._xh:
            raise InstrumentError(self.name, "XL?", f"output limits XL {self._xl:g} V > XH {self._xh:g} V")
        if self.safe_voltage > self._limit:
            raise InstrumentError(self.name, None, f"safe_voltage {self.safe_voltage:g} V exceeds the "
                                                   f"{self._limit:g} V limit switch")

    def echo_off(self) -> None:
        """Turn command echo off. ``E`` toggles, so it is sent again if the answer is "Echo On"."""
        state = self.query("E")
        if "on" in state.lower():
            state = self.query("E")
        if "off" not in state.lower():
            raise InstrumentError(self.name, "E", f"cannot turn echo off (reply {state!r})")

    def idn(self) -> str:
        """"Thorlabs <model line>, <firmware line>" from the ``I`` product information."""
        if self._idn is None:
            with self._lock():
                self.transport.write("I")
                model_line = version = ""
                for _ in range(16):
                    line = self.transport.read().strip("*\r\n ")
                    if "!" in line:
                        self._rejected("I", line)
                    if "MDT69" in line and not model_line:
                        model_line = line
                    elif "version" in line.lower():
                        version = line
                        break
                if not model_line:
                    raise InstrumentError(self.name, "I", "no model line in the product information")
                self._unconfirmed = None
            self._idn = "Thorlabs " + model_line + (f", {version}" if version else "")
        return self._idn

    # -- the PiezoDriver role -------------------------------------------------------------------
    def set_voltage(self, volts: float | str, confirm: bool = False) -> None:
        """Set the output (V). Validated against ``voltage_range`` before anything is written.

        ``confirm=False`` (the phase-lock path): one write ``XV<v>``, nothing read. ``confirm=True``:
        then read back with ``XR?`` and raise InstrumentError if the device rejected the command
        or the output differs by more than ``readback_tolerance`` (clipped by XL/XH or the switch).
        """
        spec = type(self).output_voltage
        v = spec.validate(self, volts)
        lo, hi = self.voltage_range
        v = min(max(v, lo), hi) + 0.0   # values within the 1e-12 tolerance: no "XV-0.00"
        cmd = "XV" + spec.format_value(v)
        with self._lock():
            self.transport.write(cmd)
            self._unconfirmed = cmd
            self._cache["output_voltage"] = v
            if confirm:
                back = self.voltage()
                if abs(back - v) > self.readback_tolerance:
                    raise InstrumentError(self.name, cmd, f"output reads {back:g} V after setting {v:g} V "
                                                          f"(clipped by XL/XH or the limit switch?)")

    def voltage(self) -> float:
        """Output voltage read back (``XR?``, 0.1 V resolution)."""
        return self.output_voltage

    def safe_state(self) -> None:
        """Put the stretcher at ``safe_voltage`` (default 0 V), confirmed by a read-back.

        Why not "leave it": after a run (or a crash) the lock is stopped, so the held voltage is
        arbitrary; 0 V is the unbiased piezo (no DC stress on the PZT and the wound fiber) and the
        same state as a driver that lost power, so every run starts from the same place. The step
        is harmless for a fiber stretcher. A station limit or XL above 0 V moves it to the lowest
        allowed voltage instead."""
        lo, hi = self.voltage_range
        self.set_voltage(min(max(self.safe_voltage, lo), hi), confirm=True)
