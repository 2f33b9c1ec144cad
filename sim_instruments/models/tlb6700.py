"""Simulator of a New Focus Velocity TLB-6700 controller with a TLB-6728 head.

Speaks the controller's ASCII command set (see ``drivers/newfocus_tlb6700.py``) with its real
terminators (CR LF both ways): set commands are answered ``OK``; refused commands are answered with
the error text and logged in the error buffer that ``ERRSTR?`` pops (``0,NO ERROR`` when empty).
Long and short SCPI forms and any letter case are accepted.

State the digital twin reads: ``setpoint_nm``, ``output``, ``track``, ``piezo_percent``,
``current_mA``, ``mode_hop_nm``, ``moving``. Wavelength moves take simulated time: after a
``SOURce:WAVElength`` the next ``opc_polls`` ``*OPC?`` answer 0 (and, with ``move_time_s`` > 0,
until that much time has passed), then 1.

Options: ``serial``, ``range_nm`` (default 1520–1570, or the driver's ``wavelength_range``),
``max_current_mA`` (the head's own limit, default 200), ``jitter_nm``, ``opc_polls``, ``move_time_s``,
``seed``.

Fault injection: ``mode_hop(offset_nm)`` offsets the measured wavelength until the next set point;
``interlock_open`` refuses ``OUTPut:STATe 1`` with error 501 (LDD INTERLOCK FLT);
``power_cycle()`` loses every setting.
"""
from __future__ import annotations

import re
import time
import zlib
from collections import deque
from typing import Any, Callable

import numpy as np

from labctl.units import parse_as

from .base import DeviceModel

NO_ERROR = "0,NO ERROR"
ERRORS = {116: "SYNTAX ERROR", 126: "WRONG NUM OF PARAMS", 201: "VALUE OUT OF RANGE",
          501: "LDD INTERLOCK FLT", 805: "CMD NOT SUPPORTED"}


def _scpi(pattern: str) -> str:
    """``SOURce:WAVElength`` -> regex accepting ``SOUR:WAVE``, ``source:wavelength``, …"""
    parts = []
    for word in pattern.split(":"):
        n = len(word) - len(word.lstrip("*ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
        short, rest = word[:n], word[n:].upper()
        parts.append(re.escape(short) + (f"(?:{re.escape(rest)})?" if rest else ""))
    return ":".join(parts)


class TLB6700Model(DeviceModel):
    in_terminator = b"\r\n"
    out_terminator = b"\r\n"

    DEFAULTS = dict(setpoint_nm=1550.0, output=False, track=False, piezo_percent=50.0, current_mA=100.0,
                    power_setpoint_mW=10.0, slew_nm_s=2.0)

    def __init__(self, name: str = "", **options: Any) -> None:
        super().__init__(name, **options)
        # distinct, reproducible serial numbers for the pump and read lasers of a simulated station
        self.serial = str(options.get("serial", f"SN{10000 + zlib.crc32(name.encode()) % 90000}" if name else "SN12345"))
        if "range_nm" in options:
            self.range_nm = tuple(float(x) for x in options["range_nm"])
        elif "wavelength_range" in options:  # the driver option: the simulated head is the configured one
            self.range_nm = tuple(parse_as(x, "m", where=f"{self.name}.wavelength_range") * 1e9
                                  for x in options["wavelength_range"])
        else:
            self.range_nm = (1520.0, 1570.0)
        self.max_current_mA = float(options.get("max_current_mA", 200.0))
        self.jitter_nm = float(options.get("jitter_nm", 0.0005))
        self.opc_polls = int(options.get("opc_polls", 1))
        self.move_time_s = float(options.get("move_time_s", 0.0))
        self.rng = np.random.default_rng(options.get("seed"))
        self.interlock_open = False
        self.errors: deque[str] = deque(maxlen=32)
        self._commands: list[tuple[re.Pattern, Callable[[re.Match], str | None]]] = [
            (re.compile(r"\*IDN\?", re.I), lambda m: f"New_Focus 6700 v2.4 08/01/15 {self.serial}"),
            (re.compile(r"\*OPC\?", re.I), self._opc),
            (re.compile(r"\*RST", re.I), self._rst),
            (re.compile(r"ERRSTR\?", re.I), lambda m: self.errors.popleft() if self.errors else NO_ERROR),
            (self._rx("SOURce:WAVElength:SLEWrate:FORWard?"), lambda m: f"{self.slew_nm_s:.3f}"),
            (self._rx("SOURce:WAVElength:SLEWrate:FORWard", arg=True), self._set_slew),
            (self._rx("SOURce:WAVElength?"), lambda m: f"{self.setpoint_nm:.3f}"),
            (self._rx("SOURce:WAVElength", arg=True), self._set_wavelength),
            (self._rx("SENSe:WAVElength"), lambda m: f"{self.measured_nm():.4f}"),
            (self._rx("SENSe:CURRent:DIODe"), lambda m: f"{(self.current_mA if self.output else 0.0):.1f}"),
            (self._rx("SENSe:POWer:DIODe"), lambda m: f"{self.power_mW():.2f}"),
            (self._rx("SOURce:POWer:DIODe?"), lambda m: f"{self.power_setpoint_mW:.2f}"),
            (self._rx("SOURce:CURRent:DIODe?"), lambda m: f"{self.current_mA:.2f}"),
            (self._rx("SOURce:CURRent:DIODe", arg=True), self._set_current),
            (self._rx("SOURce:VOLTage:PIEZo?"), lambda m: f"{self.piezo_percent:.2f}"),
            (self._rx("SOURce:VOLTage:PIEZo", arg=True), self._set_piezo),
            (self._rx("OUTPut:STATe?"), lambda m: "1" if self.output else "0"),
            (self._rx("OUTPut:STATe", arg=True), self._set_output),
            (self._rx("OUTPut:TRACk?"), lambda m: "1" if self.track else "0"),
            (self._rx("OUTPut:TRACk", arg=True), self._set_track),
        ]
        self._reset_state()

    @staticmethod
    def _rx(pattern: str, arg: bool = False) -> re.Pattern:
        query = pattern.endswith("?")
        head = _scpi(pattern[:-1] if query else pattern) + (r"\?" if query else "")
        return re.compile(head + (r"\s+(?P<arg>\S.*)" if arg else ""), re.IGNORECASE)

    def _reset_state(self) -> None:
        for k, v in self.DEFAULTS.items():
            setattr(self, k, v)
        self.mode_hop_nm = 0.0
        self.moving = False
        self._polls_left = 0
        self._move_done_at = 0.0

    # -- twin-facing helpers ----------------------------------------------------------------
    def measured_nm(self) -> float:
        return self.setpoint_nm + self.mode_hop_nm + float(self.rng.normal(0.0, self.jitter_nm))

    def power_mW(self) -> float:
        if not self.output:
            return 0.0
        return max(0.0, 0.25 * (self.current_mA - 20.0))

    def mode_hop(self, offset_nm: float = 0.05) -> None:
        """Offset the measured wavelength (a mode hop) until the next wavelength set point."""
        self.mode_hop_nm = float(offset_nm)

    def power_cycle(self) -> None:
        super().power_cycle()
        self.errors.clear()
        self.interlock_open = False
        self._reset_state()

    # -- protocol ------------------------------------------------------------------------------
    def handle(self, message: str) -> str | None:
        cmd = message.strip()
        if not cmd:
            return None
        for rx, fn in self._commands:
            m = rx.fullmatch(cmd)
            if m:
                return fn(m)
        return self._refuse(116)

    def _refuse(self, code: int) -> str:
        self.errors.append(f"{code},{ERRORS[code]}")
        return ERRORS[code]

    def _number(self, m: re.Match) -> float | None:
        try:
            value = float(m.group("arg"))
        except ValueError:
            return None
        return value if np.isfinite(value) else None

    def _opc(self, m: re.Match) -> str:
        if self.moving:
            if self._polls_left > 0:
                self._polls_left -= 1
                return "0"
            if time.monotonic() < self._move_done_at:
                return "0"
            self.moving = False
        return "1"

    def _rst(self, m: re.Match) -> str:
        self._reset_state()
        return "OK"

    def _set_wavelength(self, m: re.Match) -> str:
        v = self._number(m)
        if v is None:
            return self._refuse(116)
        if not self.range_nm[0] <= v <= self.range_nm[1]:
            return self._refuse(201)
        self.setpoint_nm = round(v, 3)
        self.mode_hop_nm = 0.0
        self.moving = True
        self._polls_left = self.opc_polls
        self._move_done_at = time.monotonic() + self.move_time_s
        return "OK"

    def _set_slew(self, m: re.Match) -> str:
        v = self._number(m)
        if v is None:
            return self._refuse(116)
        if not 0.01 <= v <= 20.0:
            return self._refuse(201)
        self.slew_nm_s = v
        return "OK"

    def _set_current(self, m: re.Match) -> str:
        arg = m.group("arg").strip().upper()
        v = self.max_current_mA if arg == "MAX" else self._number(m)
        if v is None:
            return self._refuse(116)
        if not 0.0 <= v <= self.max_current_mA:
            return self._refuse(201)
        self.current_mA = v
        return "OK"

    def _set_piezo(self, m: re.Match) -> str:
        arg = m.group("arg").strip().upper()
        v = 100.0 if arg == "MAX" else self._number(m)
        if v is None:
            return self._refuse(116)
        if not 0.0 <= v <= 100.0:
            return self._refuse(201)
        self.piezo_percent = v
        return "OK"

    def _flag(self, m: re.Match) -> bool | None:
        arg = m.group("arg").strip().upper()
        return {"1": True, "ON": True, "0": False, "OFF": False}.get(arg)

    def _set_output(self, m: re.Match) -> str:
        v = self._flag(m)
        if v is None:
            return self._refuse(201)
        if v and self.interlock_open:
            return self._refuse(501)
        self.output = v
        return "OK"

    def _set_track(self, m: re.Match) -> str:
        v = self._flag(m)
        if v is None:
            return self._refuse(201)
        self.track = v
        return "OK"
