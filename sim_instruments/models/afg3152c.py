"""Simulator of the Tektronix AFG3152C (the AOM pulse generator).

The text command set lives in ``sim_instruments/visa/afg3152c.yaml`` (pyvisa-sim, usable on its
own); this model adds what YAML cannot express, as the instrument behaves:

* pulse timing rules between settings (AFG3000 pulse specifications):
  ``0.625·(lead + trail) ≤ width ≤ period − 0.8·(lead + trail)``, delay ``0 … period``
  (continuous) or ``0 … period − [width + 0.8·(lead + trail)]`` (burst). A value that breaks them
  is refused with ``-221,"Settings conflict"`` and nothing changes; a value outside a setting's own
  range gives ``-222,"Data out of range"``. Period and frequency are one quantity (period = 1/f);
  the width is held when the period changes (``PULSe:HOLD WIDTh``, the default) and the duty
  cycle follows.
* levels: amplitude/offset and high/low describe the same two levels; into a load R the levels
  must stay within ±10 V·R/(R + 50 Ω) and the amplitude within 40 mVpp … 20 Vpp times
  R/(R + 50 Ω) (50 Ω source). Changing ``OUTPut{n}:IMPedance`` rescales the displayed levels
  (the EMF stays), as on the instrument.
* arbitrary upload: ``DATA:DEFine EMEMory,<n>`` (2 … 131072 points), ``DATA:DATA
  EMEMory,#<n><len><big-endian 16-bit words>`` (the byte count must be 2·n; a malformed block or
  a wrong length gives ``-160,"Block data error"``; bits 14–15 are ignored, codes above 16382
  give ``-222``), ``DATA:COPY USER<m>,EMEMory``.

State for the digital twin: :meth:`pulse` / :attr:`ch1` / :attr:`ch2` (a :class:`PulseState`
per output), :attr:`user_waveforms` (codes per USER slot), :attr:`ememory`,
:meth:`trigger`. USER1–4 are non-volatile on the instrument and survive ``*RST`` and
:meth:`power_cycle`; everything else is lost.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .base import (SCPI_BLOCK_DATA_ERROR, SCPI_DATA_OUT_OF_RANGE, SCPI_SETTINGS_CONFLICT,
                   YamlScpiModel, parse_block)

HIGH_Z = 9.9e37
EMF_MAX_VPP = 20.0
EMF_MIN_VPP = 0.04
CODE_MAX = 16382
CODE_MID = 8191
ARB_POINTS = (2, 131_072)
_TIMING_KEYS = {"PERIOD": "period", "WIDTH": "width", "DELAY": "delay", "TRANSITION:LEADING": "lead",
                "TRANSITION:TRAILING": "trail", "DCYCLE": "duty"}
_LEVEL_KEYS = {"AMPLITUDE": "amplitude", "OFFSET": "offset", "HIGH": "high", "LOW": "low"}
_SHAPE_FMAX = {"SINUSOID": 150e6, "SQUARE": 100e6, "PULSE": 100e6, "RAMP": 1.5e6}


@dataclass(frozen=True)
class PulseState:
    """One output as the twin sees it (SI units; ``load`` in ohms, ``inf`` for high-Z)."""

    shape: str
    output: bool
    period: float
    width: float
    delay: float
    lead: float
    trail: float
    high: float
    low: float
    load: float
    burst: bool
    burst_mode: str
    burst_cycles: int
    burst_delay: float


def _gain(load: float) -> float:
    return 1.0 if math.isinf(load) else load / (load + 50.0)


class AFG3152CModel(YamlScpiModel):
    yaml_file = "afg3152c.yaml"
    yaml_resource = "TCPIP0::afg3152c.sim::inst0::INSTR"
    handlers = [
        (r"SOURce([12]):PULSe:(PERiod|WIDTh|DELay|TRANsition:LEADing|TRANsition:TRAiling|DCYCle) (.+)",
         "_set_timing"),
        (r"SOURce([12]):FREQuency(?::FIXed)? (.+)", "_set_frequency"),
        (r"SOURce([12]):VOLTage:LEVel:IMMediate:(AMPLitude|OFFSet|HIGH|LOW) (.+)", "_set_level"),
        (r"OUTPut([12]):IMPedance (.+)", "_set_load"),
        (r"DATA:DEFine EMEMory,\s*(.+)", "_define"),
        (r"DATA(?::DATA)? EMEMory,\s*(.*)", "_data"),
        (r"DATA:COPY (.+?),\s*EMEMory", "_copy"),
        (r"DATA:POINts\? EMEMory", "_points"),
        (r"\*RST", "_reset"),
    ]

    def __init__(self, name: str = "", **options: Any) -> None:
        super().__init__(name, **options)
        self.user_waveforms: dict[int, np.ndarray] = {}
        self._reset_volatile()

    def _reset_volatile(self) -> None:
        #: edit memory (codes), as after power-on: 1000 points at mid scale
        self.ememory = np.full(int(self.prop("ememory_points")), CODE_MID, dtype=np.uint16)

    def power_cycle(self) -> None:
        super().power_cycle()
        self._reset_volatile()

    def _reset(self, m) -> None:
        self.device = self._load_device()
        self._reset_volatile()
        return None

    # -- twin access ------------------------------------------------------------------------------
    def load(self, ch: int) -> float:
        v = float(self.prop(f"ch{ch}_load"))
        return math.inf if v >= HIGH_Z * 0.99 else v

    def pulse(self, ch: int) -> PulseState:
        p = lambda k: self.prop(f"ch{ch}_{k}")  # noqa: E731
        return PulseState(shape=str(p("shape")).upper(), output=p("output") == "ON",
                          period=float(p("period")), width=float(p("width")),
                          delay=float(p("delay")), lead=float(p("lead")), trail=float(p("trail")),
                          high=float(p("high")), low=float(p("low")), load=self.load(ch),
                          burst=p("burst") == "ON", burst_mode=str(p("burst_mode")),
                          burst_cycles=int(p("burst_cycles")), burst_delay=float(p("burst_delay")))

    @property
    def ch1(self) -> PulseState:
        return self.pulse(1)

    @property
    def ch2(self) -> PulseState:
        return self.pulse(2)

    def trigger(self) -> dict[str, Any]:
        """Shared trigger: source (TIMer/EXTernal), timer period (s), slope."""
        return {"source": self.prop("trigger_source"), "timer": float(self.prop("trigger_timer")),
                "slope": self.prop("trigger_slope")}

    # -- helpers ----------------------------------------------------------------------------------
    def _number(self, text: str) -> float | None:
        try:
            v = float(text.strip())
        except ValueError:
            self.push_error(SCPI_DATA_OUT_OF_RANGE)
            return None
        if not math.isfinite(v):
            self.push_error(SCPI_DATA_OUT_OF_RANGE)
            return None
        return v

    def _in_spec(self, prop: str, value: float) -> bool:
        try:
            self.device._properties[prop].validate_value(repr(value))
        except ValueError:
            self.push_error(SCPI_DATA_OUT_OF_RANGE)
            return False
        return True

    @staticmethod
    def _timing_conflict(s: dict[str, float], burst: bool) -> bool:
        e = s["lead"] + s["trail"]
        tol = 1e-9 * s["period"]
        if s["width"] > s["period"] - 0.8 * e + tol or s["width"] < 0.625 * e * (1 - 1e-9):
            return True
        dmax = s["period"] - s["width"] - 0.8 * e if burst else s["period"]
        return s["delay"] > dmax + tol

    # -- pulse timing -----------------------------------------------------------------------------
    def _set_timing(self, m) -> None:
        ch, key = int(m.group(1)), _TIMING_KEYS[m.group(2).upper()]
        v = self._number(m.group(3))
        if v is None or not self._in_spec(f"ch{ch}_{key}", v):
            return None
        pre = f"ch{ch}_"
        s = {k: float(self.prop(pre + k)) for k in ("period", "width", "delay", "lead", "trail")}
        if key == "duty":
            s["width"] = v / 100.0 * s["period"]
        else:
            s[key] = v
        self._apply_timing(ch, s)
        return None

    def _apply_timing(self, ch: int, s: dict[str, float]) -> bool:
        pre = f"ch{ch}_"
        if s["width"] < 5e-9 * (1 - 1e-9) or self._timing_conflict(s, self.prop(pre + "burst") == "ON"):
            self.push_error(SCPI_SETTINGS_CONFLICT)
            return False
        for k, v in s.items():
            self.set_prop(pre + k, repr(v))
        self.set_prop(pre + "duty", repr(min(max(100.0 * s["width"] / s["period"], 0.001), 99.999)))
        self.set_prop(pre + "frequency", repr(1.0 / s["period"]))
        return True

    def _set_frequency(self, m) -> None:
        ch = int(m.group(1))
        f = self._number(m.group(2))
        if f is None or not self._in_spec(f"ch{ch}_frequency", f):
            return None
        shape = str(self.prop(f"ch{ch}_shape")).upper()
        fmax = _SHAPE_FMAX.get(shape, 75e6 if shape.startswith(("USER", "EMEM")) else 150e6)
        fmin = 1e-3 if shape == "PULSE" or shape.startswith(("USER", "EMEM")) else 1e-6
        if not (fmin <= f <= fmax):
            self.push_error(SCPI_DATA_OUT_OF_RANGE)
            return None
        pre = f"ch{ch}_"
        if 10e-9 <= 1.0 / f <= 1000.0:
            s = {k: float(self.prop(pre + k)) for k in ("period", "width", "delay", "lead", "trail")}
            s["period"] = 1.0 / f
            if not self._apply_timing(ch, s):
                return None
        self.set_prop(pre + "frequency", repr(f))
        return None

    # -- levels -----------------------------------------------------------------------------------
    def _set_level(self, m) -> None:
        ch, key = int(m.group(1)), _LEVEL_KEYS[m.group(2).upper()]
        v = self._number(m.group(3))
        if v is None or not self._in_spec(f"ch{ch}_{key}", v):
            return None
        pre = f"ch{ch}_"
        g = _gain(self.load(ch))
        w, amin, amax = EMF_MAX_VPP / 2 * g, EMF_MIN_VPP * g, EMF_MAX_VPP * g
        hi, lo = float(self.prop(pre + "high")), float(self.prop(pre + "low"))
        amp, off = hi - lo, (hi + lo) / 2
        tol = 1e-9 * max(w, 1.0)
        if key == "amplitude":
            if not (amin - tol <= v <= amax + tol):
                self.push_error(SCPI_DATA_OUT_OF_RANGE)
                return None
            hi, lo = off + v / 2, off - v / 2
        elif key == "offset":
            if abs(v) > w - amin / 2 + tol:
                self.push_error(SCPI_DATA_OUT_OF_RANGE)
                return None
            hi, lo = v + amp / 2, v - amp / 2
        else:
            if abs(v) > w + tol:
                self.push_error(SCPI_DATA_OUT_OF_RANGE)
                return None
            if key == "high":
                hi = v
            else:
                lo = v
        if hi > w + tol or lo < -w - tol or not (amin - tol <= hi - lo <= amax + tol):
            self.push_error(SCPI_SETTINGS_CONFLICT)
            return None
        self._store_levels(ch, hi, lo)
        return None

    def _store_levels(self, ch: int, hi: float, lo: float) -> None:
        pre = f"ch{ch}_"
        self.set_prop(pre + "high", repr(hi))
        self.set_prop(pre + "low", repr(lo))
        self.set_prop(pre + "amplitude", repr(hi - lo))
        self.set_prop(pre + "offset", repr((hi + lo) / 2))

    def _set_load(self, m) -> None:
        ch, text = int(m.group(1)), m.group(2).strip().upper()
        if text in ("INF", "INFINITY"):
            r = math.inf
        elif text in ("MIN", "MINIMUM"):
            r = 1.0
        elif text in ("MAX", "MAXIMUM"):
            r = 10_000.0
        else:
            r = self._number(text)
            if r is None:
                return None
            if r >= HIGH_Z * 0.99:
                r = math.inf
            elif not (1.0 <= r <= 10_000.0):
                self.push_error(SCPI_DATA_OUT_OF_RANGE)
                return None
        k = _gain(r) / _gain(self.load(ch))
        pre = f"ch{ch}_"
        self._store_levels(ch, float(self.prop(pre + "high")) * k, float(self.prop(pre + "low")) * k)
        self.set_prop(pre + "load", "9.9E+37" if math.isinf(r) else repr(r))
        return None

    # -- arbitrary waveform memory ---------------------------------------------------------------
    def _define(self, m) -> None:
        try:
            n = int(m.group(1).strip())
        except ValueError:
            self.push_error(SCPI_DATA_OUT_OF_RANGE)
            return None
        if not (ARB_POINTS[0] <= n <= ARB_POINTS[1]):
            self.push_error(SCPI_DATA_OUT_OF_RANGE)
            return None
        self.set_prop("ememory_points", str(n))
        self.ememory = np.full(n, CODE_MID, dtype=np.uint16)
        return None

    def _data(self, m) -> None:
        try:
            payload = parse_block(m.group(1))
        except ValueError:
            self.push_error(SCPI_BLOCK_DATA_ERROR)
            return None
        n = self.ememory.size
        head = 2 + int(m.group(1)[1])
        if len(m.group(1)) != head + len(payload) or len(payload) != 2 * n:
            self.push_error(SCPI_BLOCK_DATA_ERROR)
            return None
        codes = np.frombuffer(payload, dtype=">u2").astype(np.uint16) & 0x3FFF
        if codes.size and int(codes.max()) > CODE_MAX:
            self.push_error(SCPI_DATA_OUT_OF_RANGE)
            return None
        self.ememory = codes
        return None

    def _copy(self, m) -> None:
        target = m.group(1).strip().upper()
        slot = int(target[4:]) if target.startswith("USER") and target[4:].isdigit() else 0
        if slot not in (1, 2, 3, 4):
            self.push_error(SCPI_DATA_OUT_OF_RANGE)
            return None
        self.user_waveforms[slot] = self.ememory.copy()
        return None

    def _points(self, m) -> str:
        return str(self.ememory.size)

    def waveform(self, slot: int) -> np.ndarray:
        """USER<slot> as samples in −1 … 1 (empty if never written)."""
        codes = self.user_waveforms.get(slot)
        if codes is None:
            return np.zeros(0)
        return codes.astype(np.float64) / (CODE_MAX / 2.0) - 1.0
