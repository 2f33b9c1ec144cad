"""Simulator of an SRS SIM900 mainframe holding SIM928 isolated voltage sources.

Faithful to the pass-through: ``SNDT p,"msg"`` hands ``msg`` to the module in port ``p``; the
module's reply (with the module's own terminator, ``TERM CRLF`` at power-on) lands in that port's
output buffer and only comes out with ``GETN? p,n`` as a definite-length block ``#3nnn<data>``
(followed by the mainframe's CR LF). ``CONN p,"esc"`` links the host straight to a module until the
escape string arrives; ``FLSH [p]`` empties port buffers; ``SRST [p]`` resets a module's interface;
``CTCR?`` reports occupied ports (bit p); ``*IDN?``, ``*CLS``, ``*RST``. An unknown mainframe command
sets the mainframe's ``LCME?`` code (2, undefined command) and is otherwise ignored, as the real
mainframe does.

SIM928 sub-model: ``VOLT(?)`` (−20…+20 V, rounded to 1 mV), ``OPON``, ``OPOF``, ``EXON(?)``,
``*IDN?``, ``*RST``, ``*CLS``, ``TERM(?)``, ``LEXE?``/``LCME?`` (codes as in the SIM928 manual; read
clears them). Out-of-range values set ``LEXE`` 1 (illegal value), unparsable numbers ``LCME`` 9, unknown
commands ``LCME`` 2.

For the digital twin: ``SIM900Model.modules[p]`` (``voltage``, ``output``, ``latched``);
``set_latched(p, True)`` latches a detector; a latched flag clears when the bias goes to 0 V or the
output is switched off (that is what ``reset_latch`` does).
"""
from __future__ import annotations

import re
from typing import Any

from .base import DeviceModel

TERMS = {"NONE": "", "0": "", "CR": "\r", "1": "\r", "LF": "\n", "2": "\n", "CRLF": "\r\n", "3": "\r\n",
         "LFCR": "\n\r", "4": "\n\r"}
TERM_CODES = {"": 0, "\r": 1, "\n": 2, "\r\n": 3, "\n\r": 4}


class SIM928Model:
    """One SIM928 isolated voltage source (state + its command parser)."""

    def __init__(self, serial: str = "s/n012345") -> None:
        self.serial = serial
        self.out = bytearray()  #: replies waiting in the mainframe's port buffer
        self.reset()

    def reset(self) -> None:
        self.voltage = 0.0
        self.output = False
        self.latched = False
        self.term = "\r\n"
        self.lexe = 0
        self.lcme = 0
        self.out.clear()

    @property
    def bias_on_device(self) -> float:
        """The voltage the detector sees (0 when the output is off)."""
        return self.voltage if self.output else 0.0

    def _reply(self, text: str) -> None:
        self.out.extend((text + self.term).encode("latin-1"))

    def handle(self, message: str) -> None:
        for cmd in message.split(";"):
            cmd = cmd.strip()
            if cmd:
                self._one(cmd)

    def _one(self, cmd: str) -> None:
        head, _, arg = cmd.partition(" ")
        head = head.upper()
        arg = arg.strip()
        if head == "VOLT?" and not arg:
            self._reply(f"{self.voltage:+.3f}")
        elif head == "VOLT":
            try:
                v = float(arg)
            except ValueError:
                self.lcme = 9 if arg else 5
                return
            if not -20.0 <= v <= 20.0:
                self.lexe = 1
                return
            self.voltage = round(v, 3)
            if self.voltage == 0.0:
                self.latched = False
        elif head == "OPON" and not arg:
            self.output = True
        elif head == "OPOF" and not arg:
            self.output = False
            self.latched = False
        elif head == "EXON?" and not arg:
            self._reply("1" if self.output else "0")
        elif head == "EXON":
            v = {"1": True, "ON": True, "0": False, "OFF": False}.get(arg.upper())
            if v is None:
                self.lcme = 12
                return
            self.output = v
            if not v:
                self.latched = False
        elif head == "*IDN?":
            self._reply(f"Stanford_Research_Systems,SIM928,{self.serial},ver2.2")
        elif head == "*RST":
            self.voltage, self.output = 0.0, False
            self.latched = False
        elif head == "*CLS":
            self.lexe = self.lcme = 0
        elif head == "TERM?":
            self._reply(str(TERM_CODES[self.term]))
        elif head == "TERM":
            t = TERMS.get(arg.upper())
            if t is None:
                self.lcme = 12
                return
            self.term = t
        elif head == "LEXE?":
            self._reply(str(self.lexe))
            self.lexe = 0
        elif head == "LCME?":
            self._reply(str(self.lcme))
            self.lcme = 0
        else:
            self.lcme = 2


class SIM900Model(DeviceModel):
    """SIM900 mainframe; ``ports`` option: which ports hold a SIM928 (default all eight)."""

    in_terminator = b"\n"
    out_terminator = b"\r\n"

    def __init__(self, name: str = "", **options: Any) -> None:
        super().__init__(name, **options)
        ports = options.get("ports", list(range(1, 9)))
        self.modules: dict[int, SIM928Model] = {int(p): SIM928Model(f"s/n0{10000 + int(p)}") for p in ports}
        self.serial = str(options.get("serial", "s/n152741"))
        self.lcme = 0
        self.lexe = 0
        self.conn_port: int | None = None
        self.conn_escape = ""

    # -- twin-facing helpers -------------------------------------------------------------------
    def set_latched(self, port: int, latched: bool = True) -> None:
        self.modules[port].latched = latched

    def latched(self, port: int) -> bool:
        return self.modules[port].latched

    def power_cycle(self) -> None:
        super().power_cycle()
        for m in self.modules.values():
            m.reset()
        self.lcme = self.lexe = 0
        self.conn_port = None

    # -- protocol ------------------------------------------------------------------------------
    _SNDT = re.compile(r'SNDT\s+(\d)\s*,\s*"([^"]*)"', re.I)
    _GETN = re.compile(r"GETN\?\s+(\d)\s*,\s*(\d+)", re.I)
    _CONN = re.compile(r'CONN\s+(\d)\s*,\s*"([^"]+)"', re.I)

    def handle(self, message: str) -> str | bytes | None:
        msg = message.rstrip("\r")
        if self.conn_port is not None:  # transparent link to one module
            if msg == self.conn_escape:
                self.conn_port = None
                return None
            mod = self.modules[self.conn_port]
            mod.handle(msg)
            self._out.extend(mod.out)  # raw: the module's reply already carries its terminator
            mod.out.clear()
            return None
        cmd = msg.strip()
        if not cmd:
            return None
        m = self._SNDT.fullmatch(cmd)
        if m:
            port = int(m.group(1))
            if port in self.modules:
                self.modules[port].handle(m.group(2))
            else:
                self.lexe = 1  # nothing in that port
            return None
        m = self._GETN.fullmatch(cmd)
        if m:
            port, n = int(m.group(1)), min(int(m.group(2)), 999)
            mod = self.modules.get(port)
            data = b""
            if mod is not None:
                data = bytes(mod.out[:n])
                del mod.out[:n]
            return b"#3" + f"{len(data):03d}".encode() + data
        m = self._CONN.fullmatch(cmd)
        if m:
            port = int(m.group(1))
            if port not in self.modules:
                self.lexe = 1
                return None
            self.conn_port, self.conn_escape = port, m.group(2)
            return None
        head, _, arg = cmd.partition(" ")
        head, arg = head.upper(), arg.strip()
        if head == "*IDN?":
            return f"Stanford_Research_Systems,SIM900,{self.serial},ver3.6"
        if head in ("FLSH", "SRST"):
            targets = [int(arg)] if arg.isdigit() else list(self.modules)
            for p in targets:
                if p in self.modules:
                    self.modules[p].out.clear()
            return None
        if head == "CTCR?":
            return str(sum(1 << p for p in self.modules))
        if head == "*CLS":
            self.lcme = self.lexe = 0
            return None
        if head == "*RST":
            self.conn_port = None
            return None
        if head == "LEXE?":
            v, self.lexe = self.lexe, 0
            return str(v)
        if head == "LCME?":
            v, self.lcme = self.lcme, 0
            return str(v)
        self.lcme = 2
        return None
