"""Simulator of the serial Sercalo VP1 VOA, speaking the command set assumed in
``drivers/sercalo_vp1.py`` (``COMMANDS``, modelled on the Sercalo TF ASCII protocol):

* lines end with ``\\r\\n`` both ways (a bare ``\\n`` also ends a command; ``\\r`` is dropped);
* ``ID`` -> ``ID VP1|<serial>|<firmware>``;
* ``ATT`` -> ``ATT 12.345``; ``ATT 12.345`` sets and repeats ``ATT 12.345``;
* unknown command -> ``ERR 1``; malformed or out-of-range value -> ``ERR 2`` (nothing changes).

State for the digital twin: ``attenuation_db``. Options: ``min_db``/``max_db`` (range, default
0–40 dB), ``power_up_db`` (attenuation after power-up, default ``min_db``: an electrostatic MEMS
VOA without drive is at its minimum loss), ``serial``, ``firmware``.
"""
from __future__ import annotations

import math
import re
from typing import Any

from .base import DeviceModel

_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")

ERR_INVALID_COMMAND = "ERR 1"
ERR_INVALID_PARAMETER = "ERR 2"


class SercaloVP1Model(DeviceModel):
    in_terminator = b"\n"
    out_terminator = b"\r\n"

    def __init__(self, name: str = "", **options: Any) -> None:
        super().__init__(name, **options)
        self.min_db = float(options.get("min_db", 0.0))
        self.max_db = float(options.get("max_db", 40.0))
        if not 0.0 <= self.min_db < self.max_db:
            raise ValueError(f"bad attenuation range {self.min_db}..{self.max_db} dB")
        self.power_up_db = float(options.get("power_up_db", self.min_db))
        self.serial = str(options.get("serial", "SIM0001"))
        self.firmware = str(options.get("firmware", "1.0"))
        self.attenuation_db = self.power_up_db  #: what the twin reads (dB)

    def power_cycle(self) -> None:
        super().power_cycle()
        self.attenuation_db = self.power_up_db

    def handle(self, message: str) -> str:
        text = message.replace("\r", "").strip()
        word, _, arg = text.partition(" ")
        word = word.upper()
        arg = arg.strip()
        if word == "ID" and not arg:
            return f"ID VP1|{self.serial}|{self.firmware}"
        if word == "ATT":
            if not arg:
                return f"ATT {self.attenuation_db:.3f}"
            if not _NUMBER.fullmatch(arg):
                return ERR_INVALID_PARAMETER
            value = float(arg)
            if not math.isfinite(value) or not self.min_db <= value <= self.max_db:
                return ERR_INVALID_PARAMETER
            self.attenuation_db = value
            return f"ATT {value:.3f}"
        return ERR_INVALID_COMMAND
