"""Simulator of the Thorlabs MDT694 piezo driver (MDT694A / compatibility-mode command set).

Wire behaviour (see ``drivers/thorlabs_mdt694.py`` for the sources and what is assumed):

* input: commands end with ``\\r``; a stray ``\\n`` (from senders ending lines with ``\\r\\n``
  or ``\\n\\r``) is ignored; commands are case-insensitive.
* echo (on at power-up, ``E`` toggles): the command line comes back first, ending ``\\r``.
* every command is followed by the prompt ``*`` (no terminator); a query's value comes first,
  bracketed and ending ``\\r``: ``XR?`` -> ``[  24.8]\\r*``; ``XV10`` -> ``*``.
* anything not understood (unknown command, malformed number, empty line) -> ``!`` instead of
  ``*``.
* the output is clipped to ``[max(0, XL), min(limit switch, XH)]``; ``XR?`` reads it with 0.1 V
  resolution.

State for the digital twin: ``voltage`` (V at the piezo; the fiber-stretcher phase is k·V),
``voltage_limit`` (switch), ``xl``/``xh``, ``echo``, ``set_count``.

Like a host serial port whose receive buffer overflows when nobody reads, at most
``max_pending_output`` bytes wait for the driver: the phase lock's unread ``*`` prompts (one per
set) cannot grow without bound in a long simulated run.
"""
from __future__ import annotations

import math
import re
from typing import Any

from .base import DeviceModel

_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")

LIMIT_SWITCH_POSITIONS = (75.0, 100.0, 150.0)


class MDT694Model(DeviceModel):
    """MDT694A-like device model. Options: ``voltage_limit`` (switch position, default 150 V),
    ``echo`` (power-up echo state, default True), ``firmware`` (version string)."""

    in_terminator = b"\r"
    out_terminator = b"\r"
    prompt = "*"
    error = "!"
    max_pending_output = 4096

    def __init__(self, name: str = "", **options: Any) -> None:
        super().__init__(name, **options)
        limit = float(options.get("voltage_limit", 150.0))
        if limit not in LIMIT_SWITCH_POSITIONS:
            raise ValueError(f"voltage_limit must be one of {LIMIT_SWITCH_POSITIONS}, got {limit}")
        self.voltage_limit = limit
        self.power_up_echo = bool(options.get("echo", True))
        self.firmware = str(options.get("firmware", "1.09"))
        self._reset_state()

    def _reset_state(self) -> None:
        self.echo = self.power_up_echo
        self.voltage = 0.0          #: output voltage (V) — what the twin reads
        self.xl = 0.0               #: lower output clip (V)
        self.xh = self.voltage_limit  #: upper output clip (V)
        self.set_count = 0

    def power_cycle(self) -> None:
        super().power_cycle()
        self._reset_state()

    # -- byte stream: echo, prompt, bounded output ------------------------------------------------
    def _dispatch(self, raw: bytes) -> None:
        text = raw.decode("latin-1")
        if self.echo:
            self._out.extend(raw + b"\r")
        message = text.replace("\n", "").strip()
        self.log.append(message)
        if self.intercepted(message):
            return
        reply = self.handle(message)
        if reply is None:
            self._out.extend(self.error.encode())
        else:
            self._out.extend(reply.encode("latin-1") + self.prompt.encode())
        excess = len(self._out) - self.max_pending_output
        if excess > 0:
            del self._out[:excess]

    # -- commands ---------------------------------------------------------------------------------
    def _clip(self, v: float) -> float:
        lo = max(0.0, self.xl)
        hi = min(self.voltage_limit, self.xh)
        return min(max(v, lo), hi)

    @staticmethod
    def _value(text: str) -> str:
        return f"[{text}]\r"

    def handle(self, message: str) -> str | None:
        """Reply text *before* the prompt ("" for a set), or None if not understood (-> ``!``)."""
        cmd = message.upper()
        if not cmd:
            return None
        if cmd == "XR?":
            return self._value(f"{self.voltage:6.1f}")
        if cmd == "XL?":
            return self._value(f"{self.xl:6.1f}")
        if cmd == "XH?":
            return self._value(f"{self.xh:6.1f}")
        if cmd == "%":
            return self._value(f"{int(self.voltage_limit):4d}")
        if cmd == "E":
            self.echo = not self.echo
            return self._value("Echo On" if self.echo else "Echo Off")
        if cmd == "I":
            return (f"Model MDT694A Piezo Control Module\rFirmware Version: {self.firmware}\r")
        if cmd[:2] in ("XV", "XL", "XH") and len(cmd) > 2:
            arg = cmd[2:].strip()
            if not _NUMBER.fullmatch(arg):
                return None
            v = float(arg)
            if not math.isfinite(v):
                return None
            if cmd[:2] == "XV":
                self.voltage = self._clip(v)
                self.set_count += 1
            elif cmd[:2] == "XL":
                self.xl = min(max(v, 0.0), self.voltage_limit)
                self.voltage = self._clip(self.voltage)
            else:
                self.xh = min(max(v, 0.0), self.voltage_limit)
                self.voltage = self._clip(self.voltage)
            return ""
        return None
