"""Tektronix AFG3152C dual-channel arbitrary/function generator: the AOM pulse generator of the
DLCZ setup (seed: riedinger2018, Supplementary "Experimental setup": "we generate the actual pump
and read pulses by driving acousto-optic modulators ... with an arbitrary function generator
(Tektronic AFG3152C)").

Command syntax: *AFG3000 Series Arbitrary/Function Generators Programmer Manual*
(download.tek.com/manual/AFG3000-Series-Arbitrary-Function-Generator-Programmer-EN.pdf; the same
command set covers the AFG3000C models), chapter "Command Descriptions". Every command below was
checked against public drivers written from that manual:

* QCoDeS contrib ``qcodes_contrib_drivers/drivers/Tektronix/AFG3000.py`` (``SOURce{n}:PULSe:*``,
  ``SOURce{n}:BURSt:*``, ``SOURce{n}:VOLTage:LEVel:IMMediate:*``, ``OUTPut{n}:IMPedance``,
  ``OUTPut{n}:STATe``, ``TRIGger:SEQuence:SOURce|TIMer|SLOPe``, ``SOURce{n}:FUNCtion:SHAPe``);
* NSLS2 ``TektronixAFG3K/protocol/afg3k.proto`` (EPICS StreamDevice, "developed with the
  programmer's manual"): short forms of the same commands, ``SOUR{n}:FREQ:FIX``;
* arbitrary upload ``DATA:DEFine EMEMory,<points>`` / ``DATA:DATA EMEMory,<block>`` /
  ``DATA:COPY USER<m>,EMEMory`` as used by several public AFG3000 scripts; Tektronix's own
  AFG31000 example ("Send Waveform") documents the block payload: unsigned 16-bit, most
  significant byte first, 14 bits used, **0 = minimum, 16382 = maximum output**.

Limits (AFG3000C Series data sheet / "Specifications and Performance Verification" technical
reference, AFG315xC column) — recalled, **not re-checked against the PDF in this session; verify
on the instrument before trusting the edges of these ranges**:

=======================  ========================================================================
pulse frequency          1 mHz … 100 MHz (period 10 ns … 1000 s)
sine / square / ramp     1 µHz … 150 MHz / 100 MHz / 1.5 MHz; arbitrary 1 mHz … 75 MHz
pulse width              5 ns … 999.99 s; 0.625·(lead + trail) ≤ width ≤ period − 0.8·(lead + trail)
leading / trailing edge  2.5 ns … 625 s
pulse delay              0 … period (continuous), 0 … period − [width + 0.8·(lead + trail)] (burst)
amplitude                20 mVpp … 10 Vpp into 50 Ω; 40 mVpp … 20 Vpp into an open circuit
levels                   |high|, |low| ≤ 5 V into 50 Ω (10 V open circuit)
burst                    1 … 1 000 000 cycles, trigger delay 0 … 85 s
trigger timer            1 µs … 500 s (QCoDeS contrib validator)
arbitrary waveform       2 … 131 072 points, codes 0 … 16382 (14 bit)
output load setting      1 Ω … 10 kΩ or INFinity (high-Z)
=======================  ========================================================================

Assumptions, stated once:

* The displayed amplitude depends on the load set with ``OUTPut{n}:IMPedance``: the generator is a
  50 Ω source whose open-circuit EMF spans 40 mVpp … 20 Vpp, so into a load R the limits scale by
  R/(R + 50). The driver takes R from the last value it wrote or read (``connect()`` reads both
  channels); before that it assumes 50 Ω, the power-on default, which is the conservative side for
  every load ≥ 50 Ω.
* Amplitudes are in Vpp (``SOURce{n}:VOLTage:UNIT VPP``, the default).
* ``configure_pulse`` reads the present period, width, edges, delay, burst state and levels of the
  channel (once; afterwards it remembers what it wrote, and forgets the settings the instrument
  changes as a side effect) and orders its writes so that no intermediate state violates the
  width/period/edge/delay and level rules above. Assumed: the instrument refuses a conflicting
  value ("Settings conflict", as the simulator does) rather than adjusting the others; if it
  adjusts instead, the ordering is harmless.
* The trigger (``TRIGger:SEQuence:*``) is shared by both channels.
"""
from __future__ import annotations

import itertools
import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from labctl import units as _units
from labctl.errors import InputError, SettingError
from labctl.instrument.base import Component, Instrument, on_off
from labctl.instrument.base import Setting

# --- model limits (see the module docstring) ---------------------------------------------------
PULSE_PERIOD = (10e-9, 1000.0)          #: s (1 mHz … 100 MHz)
PULSE_WIDTH = (5e-9, 999.99)            #: s
EDGE_TIME = (2.5e-9, 625.0)             #: s, leading and trailing (10 %–90 %)
DUTY_PCT = (0.001, 99.999)              #: percent
BURST_CYCLES = (1, 1_000_000)
BURST_DELAY = (0.0, 85.0)               #: s
TRIGGER_TIMER = (1e-6, 500.0)           #: s
FREQUENCY_MAX = {"sine": 150e6, "square": 100e6, "pulse": 100e6, "ramp": 1.5e6}
FREQUENCY_MIN = {"pulse": 1e-3}
ARB_FREQUENCY = (1e-3, 75e6)
FREQUENCY_ANY = (1e-6, 150e6)
EMF_VPP = (0.04, 20.0)                  #: open-circuit amplitude range, Vpp
SOURCE_OHMS = 50.0
LOAD_OHMS = (1.0, 10_000.0)
ARB_POINTS = (2, 131_072)
ARB_CODE_MAX = 16382                    #: 14-bit code of the maximum output (0 = minimum)
USER_SLOTS = (1, 2, 3, 4)
HIGH_Z_REPLY = 9.9e37                   #: what ``OUTPut{n}:IMPedance?`` answers for INFinity

_TOL = 1e-9                             #: relative tolerance of the timing rules


def load_gain(load_ohms: float) -> float:
    """Fraction of the open-circuit EMF that reaches a load of ``load_ohms`` (1 for high-Z)."""
    if math.isinf(load_ohms):
        return 1.0
    return load_ohms / (load_ohms + SOURCE_OHMS)


def amplitude_limits(load_ohms: float) -> tuple[float, float]:
    """Allowed amplitude (Vpp) into ``load_ohms``: 20 mVpp … 10 Vpp at 50 Ω."""
    g = load_gain(load_ohms)
    return EMF_VPP[0] * g, EMF_VPP[1] * g


def level_window(load_ohms: float) -> float:
    """Largest |level| (V) into ``load_ohms``: 5 V at 50 Ω, 10 V high-Z."""
    return EMF_VPP[1] / 2.0 * load_gain(load_ohms)


def timing_ok(period: float, width: float, lead: float, trail: float, delay: float,
              burst: bool) -> str | None:
    """None if the pulse timing is allowed, else which rule it breaks (AFG3000 pulse rules)."""
    e = lead + trail
    tol = _TOL * period
    if width > period - 0.8 * e + tol:
        return (f"width {width:g} s exceeds period − 0.8·(lead + trail) = "
                f"{period - 0.8 * e:g} s")
    if width < 0.625 * e - _TOL * width:
        return f"width {width:g} s is shorter than 0.625·(lead + trail) = {0.625 * e:g} s"
    dmax = period - width - 0.8 * e if burst else period
    if delay > dmax + tol or delay < 0:
        where = "in burst mode " if burst else ""
        return f"delay {delay:g} s is outside 0 … {max(dmax, 0):g} s {where}".rstrip()
    return None


def levels_ok(high: float, low: float, load_ohms: float) -> str | None:
    """None if high/low levels are allowed into ``load_ohms``, else why not."""
    w = level_window(load_ohms)
    amin, amax = amplitude_limits(load_ohms)
    tol = 1e-12 * max(w, 1.0)
    if high > w + tol or low < -w - tol:
        return f"levels must stay within ±{w:g} V into {load_ohms:g} Ω"
    if not (amin - tol <= high - low <= amax + tol):
        return f"high − low = {high - low:g} V is outside {amin:g} … {amax:g} Vpp"
    return None


def _parse_impedance(text: str) -> float:
    v = float(text)
    return math.inf if v >= HIGH_Z_REPLY * 0.99 else v


def _parse_int(text: str) -> int:
    return int(round(float(text)))


class _LoadSetting(Setting):
    """``OUTPut{n}:IMPedance``: ohms (1 Ω … 10 kΩ) or ``math.inf`` / ``"INF"`` for high-Z."""

    def validate(self, comp: Component, value: Any) -> Any:
        where = comp.full_name
        if isinstance(value, str):
            t = value.strip().lower()
            if t in ("inf", "infinity", "high-z", "highz", "hiz"):
                value = math.inf
            else:
                value = _units.parse_as(value, "Ohm", where=f"{where}.{self.name}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise SettingError(where, self.name, value, "numbers (ohms) or 'INF'", "Ohm")
        if math.isinf(value) and value > 0:
            return math.inf
        if not (LOAD_OHMS[0] <= value <= LOAD_OHMS[1]):
            raise SettingError(where, self.name, value,
                               f"range {LOAD_OHMS[0]:g} Ohm to {LOAD_OHMS[1]:g} Ohm or INF", "Ohm")
        return float(value)

    def format_value(self, value: Any) -> str:
        return "INFinity" if math.isinf(value) else self.fmt.format(value)


def _level_limits(comp: "AFGChannel") -> tuple[float, float]:
    w = level_window(comp.load_ohms)
    return -w, w


def _amplitude_limits(comp: "AFGChannel") -> tuple[float, float]:
    return amplitude_limits(comp.load_ohms)


def _frequency_limits(comp: "AFGChannel") -> tuple[float, float]:
    shape = comp._cache.get("shape")
    if shape is None:
        return FREQUENCY_ANY
    if shape.startswith("user") or shape == "ememory":
        return ARB_FREQUENCY
    return FREQUENCY_MIN.get(shape, 1e-6), FREQUENCY_MAX.get(shape, FREQUENCY_ANY[1])


_LEVELS = ("amplitude", "offset", "high", "low")

SHAPES = {"pulse": "PULSe", "square": "SQUare", "sine": "SINusoid", "ramp": "RAMP", "dc": "DC",
          "user1": "USER1", "user2": "USER2", "user3": "USER3", "user4": "USER4",
          "ememory": "EMEMory"}


class AFGChannel(Component):
    """One output of the AFG3152C (``SOURce{ch}``/``OUTPut{ch}``)."""

    shape = Setting("SOURce{ch}:FUNCtion:SHAPe?", "SOURce{ch}:FUNCtion:SHAPe {value}",
                    mapping=SHAPES, doc="waveform shape (pulse for AOM gating, user1..4 for "
                                        "uploaded waveforms)")
    frequency = Setting("SOURce{ch}:FREQuency:FIXed?", "SOURce{ch}:FREQuency:FIXed {value}",
                        unit="Hz", limits=_frequency_limits, invalidates=("period", "duty_cycle_pct"),
                        doc="output frequency (pulse repetition frequency in pulse mode)")
    period = Setting("SOURce{ch}:PULSe:PERiod?", "SOURce{ch}:PULSe:PERiod {value}", unit="s",
                     limits=PULSE_PERIOD, invalidates=("frequency", "duty_cycle_pct"),
                     doc="pulse period")
    width = Setting("SOURce{ch}:PULSe:WIDTh?", "SOURce{ch}:PULSe:WIDTh {value}", unit="s",
                    limits=PULSE_WIDTH, invalidates=("duty_cycle_pct",),
                    doc="pulse width (50 % to 50 %)")
    delay = Setting("SOURce{ch}:PULSe:DELay?", "SOURce{ch}:PULSe:DELay {value}", unit="s",
                    limits=(0.0, PULSE_PERIOD[1]), doc="pulse lead delay after the trigger / period start")
    lead = Setting("SOURce{ch}:PULSe:TRANsition:LEADing?", "SOURce{ch}:PULSe:TRANsition:LEADing {value}",
                   unit="s", limits=EDGE_TIME, doc="leading edge time (10 % to 90 %)")
    trail = Setting("SOURce{ch}:PULSe:TRANsition:TRAiling?", "SOURce{ch}:PULSe:TRANsition:TRAiling {value}",
                    unit="s", limits=EDGE_TIME, doc="trailing edge time (90 % to 10 %)")
    duty_cycle_pct = Setting("SOURce{ch}:PULSe:DCYCle?", "SOURce{ch}:PULSe:DCYCle {value}",
                             limits=DUTY_PCT, invalidates=("width",),
                             doc="pulse duty cycle in percent (sets the width)")
    burst = Setting("SOURce{ch}:BURSt:STATe?", "SOURce{ch}:BURSt:STATe {value}", mapping=on_off(),
                    doc="burst mode on/off")
    burst_mode = Setting("SOURce{ch}:BURSt:MODE?", "SOURce{ch}:BURSt:MODE {value}",
                         mapping={"triggered": "TRIGgered", "gated": "GATed"}, doc="burst mode")
    burst_cycles = Setting("SOURce{ch}:BURSt:NCYCles?", "SOURce{ch}:BURSt:NCYCles {value}",
                           limits=BURST_CYCLES, step=1, parse=_parse_int,
                           doc="cycles (pulses) per trigger")
    burst_delay = Setting("SOURce{ch}:BURSt:TDELay?", "SOURce{ch}:BURSt:TDELay {value}", unit="s",
                          limits=BURST_DELAY, doc="delay from trigger to burst start")
    amplitude = Setting("SOURce{ch}:VOLTage:LEVel:IMMediate:AMPLitude?",
                        "SOURce{ch}:VOLTage:LEVel:IMMediate:AMPLitude {value}", unit="V",
                        limits=_amplitude_limits, invalidates=("high", "low"),
                        doc="amplitude (Vpp) into the set load")
    offset = Setting("SOURce{ch}:VOLTage:LEVel:IMMediate:OFFSet?",
                     "SOURce{ch}:VOLTage:LEVel:IMMediate:OFFSet {value}", unit="V",
                     limits=_level_limits, invalidates=("high", "low"),
                     doc="DC offset into the set load")
    high = Setting("SOURce{ch}:VOLTage:LEVel:IMMediate:HIGH?",
                   "SOURce{ch}:VOLTage:LEVel:IMMediate:HIGH {value}", unit="V",
                   limits=_level_limits, invalidates=("amplitude", "offset"),
                   doc="high level into the set load")
    low = Setting("SOURce{ch}:VOLTage:LEVel:IMMediate:LOW?",
                  "SOURce{ch}:VOLTage:LEVel:IMMediate:LOW {value}", unit="V",
                  limits=_level_limits, invalidates=("amplitude", "offset"),
                  doc="low level into the set load")
    load = _LoadSetting("OUTPut{ch}:IMPedance?", "OUTPut{ch}:IMPedance {value}", unit="Ohm",
                        parse=_parse_impedance, invalidates=_LEVELS,
                        doc="load impedance the levels refer to (ohms, or inf for high-Z)")
    output = Setting("OUTPut{ch}:STATe?", "OUTPut{ch}:STATe {value}", mapping=on_off(),
                     doc="output on/off")

    @property
    def load_ohms(self) -> float:
        """Load the level limits refer to: the last value written or read, else 50 Ω."""
        v = self._cache.get("load")
        return SOURCE_OHMS if v is None else float(v)

    def forget(self) -> None:
        """Drop the remembered state (after ``*RST``, a power cycle or front-panel changes)."""
        self._cache.clear()

    def known(self, name: str) -> Any:
        """The value of a setting as last written or read; read (and remember) it if unknown."""
        if name not in self._cache:
            self._cache[name] = type(self).settings()[name].read(self)
        return self._cache[name]


class AFG3152C(Instrument):
    """Tektronix AFG3152C: two pulse outputs gating the pump (CH1) and read (CH2) AOMs.

    Roles: ``pulse_generator`` (:meth:`configure_pulse`, :meth:`set_output`). Outputs are numbered
    1 and 2 as on the front panel (components ``ch1``, ``ch2``).
    """

    model = "Tektronix AFG3152C"
    roles = ("pulse_generator",)
    timeout = 5.0
    simulator = "sim_instruments.models.afg3152c:AFG3152CModel"
    components = {"ch1": (AFGChannel, {"ch": 1}), "ch2": (AFGChannel, {"ch": 2})}

    trigger_source = Setting("TRIGger:SEQuence:SOURce?", "TRIGger:SEQuence:SOURce {value}",
                             mapping={"timer": "TIMer", "external": "EXTernal"},
                             doc="burst trigger: internal timer or the rear TRIGGER INPUT")
    trigger_timer = Setting("TRIGger:SEQuence:TIMer?", "TRIGger:SEQuence:TIMer {value}", unit="s",
                            limits=TRIGGER_TIMER, doc="internal trigger period (50 us = 20 kHz)")
    trigger_slope = Setting("TRIGger:SEQuence:SLOPe?", "TRIGger:SEQuence:SLOPe {value}",
                            mapping={"positive": "POSitive", "negative": "NEGative"},
                            doc="edge of the external trigger")

    # -- helpers ------------------------------------------------------------------------------
    def channel(self, output: int) -> AFGChannel:
        """The component of output 1 or 2 (InputError otherwise)."""
        if isinstance(output, bool) or output not in (1, 2):
            raise InputError(f"{self.name}: output {output!r} does not exist",
                             fix="the AFG3152C has outputs 1 and 2")
        return self.ch1 if output == 1 else self.ch2  # type: ignore[attr-defined]

    def connect(self) -> None:
        """Read both outputs' load setting, which the level limits depend on."""
        for ch in (self.ch1, self.ch2):  # type: ignore[attr-defined]
            ch.known("load")

    def opc(self) -> bool:
        """``*OPC?``: True once all pending operations are complete."""
        return self.query("*OPC?").strip() == "1"

    # -- PulseGenerator ---------------------------------------------------------------------------
    def configure_pulse(self, output: int, *, period_s: float, width_s: float, delay_s: float,
                        high_v: float, low_v: float, edge_s: float | None = None) -> None:
        """Pulse shape on ``output``: period, width, delay, high/low levels, both edge times.

        ``edge_s`` sets leading and trailing edge (None leaves them). Everything is checked
        before the first write (ranges, the station's limits, and the width/period/edge/delay
        and level rules); the writes are ordered so no intermediate state breaks those rules.
        """
        ch = self.channel(output)
        spec = AFGChannel.settings()
        target: dict[str, float] = {
            "period": spec["period"].validate(ch, period_s),
            "width": spec["width"].validate(ch, width_s),
            "delay": spec["delay"].validate(ch, delay_s),
        }
        if edge_s is not None:
            target["lead"] = spec["lead"].validate(ch, edge_s)
            target["trail"] = spec["trail"].validate(ch, edge_s)
        levels = {"high": spec["high"].validate(ch, high_v), "low": spec["low"].validate(ch, low_v)}
        # rules that hold whatever the edges and burst state are: check before any I/O
        e_min = 2 * (target["lead"] if edge_s is not None else EDGE_TIME[0])
        why = timing_ok(target["period"], target["width"], e_min / 2, e_min / 2,
                        min(target["delay"], 0.0), False)
        if why is None and target["delay"] > target["period"] * (1 + _TOL):
            why = f"delay {target['delay']:g} s exceeds the period {target['period']:g} s"
        why = why or levels_ok(levels["high"], levels["low"], ch.load_ohms)
        if why:
            raise SettingError(ch.full_name, "pulse", {"period": period_s, "width": width_s,
                               "delay": delay_s, "edge": edge_s, "high": high_v, "low": low_v},
                               f"pulse timings and levels ({why})")
        # the rest depends on the present edges / burst state (read once, then remembered)
        current = {k: float(ch.known(k)) for k in ("period", "width", "lead", "trail", "delay")}
        burst = bool(ch.known("burst"))
        final = dict(current, **target)
        why = timing_ok(final["period"], final["width"], final["lead"], final["trail"],
                        final["delay"], burst)
        if why:
            raise SettingError(ch.full_name, "pulse", {"period": period_s, "width": width_s,
                               "delay": delay_s, "edge": edge_s}, f"pulse timings ({why})")
        if ch._cache.get("shape") != "pulse":
            ch.shape = "pulse"

        def t_ok(s: Mapping[str, float]) -> bool:
            return timing_ok(s["period"], s["width"], s["lead"], s["trail"], s["delay"], burst) is None

        self._apply_in_order(ch, current, target, t_ok, fallback=self._timing_fallback(ch, target))
        cur_levels = {k: float(ch.known(k)) for k in ("high", "low")}
        load = ch.load_ohms
        self._apply_in_order(ch, cur_levels, levels,
                             lambda s: levels_ok(s["high"], s["low"], load) is None, fallback=None)

    def _timing_fallback(self, ch: AFGChannel, target: Mapping[str, float]) -> list[tuple[str, float]]:
        """A write order that is always allowed: edges and width to their minimum, delay 0,
        then the targets (used when no direct ordering of the changes is)."""
        spec = AFGChannel.settings()
        lo = {k: (spec[k].limits_for(ch) or (0.0, 0.0))[0] for k in ("lead", "trail", "width", "delay")}
        steps = [("delay", lo["delay"]), ("lead", lo["lead"]), ("trail", lo["trail"]),
                 ("width", lo["width"])]
        steps += [(k, target[k]) for k in ("period", "width", "lead", "trail", "delay") if k in target]
        return steps

    @staticmethod
    def _apply_in_order(ch: AFGChannel, current: Mapping[str, float], target: Mapping[str, float],
                        ok: Callable[[Mapping[str, float]], bool],
                        fallback: Sequence[tuple[str, float]] | None) -> None:
        """Write the changed values of ``target`` in the first order whose every intermediate
        state satisfies ``ok`` (tried over all permutations; a handful of keys)."""
        changed = [k for k in target
                   if not math.isclose(current[k], target[k], rel_tol=1e-12, abs_tol=1e-15)]
        for order in itertools.permutations(changed):
            state = dict(current)
            good = True
            for k in order:
                state[k] = target[k]
                if not ok(state):
                    good = False
                    break
            if good:
                for k in order:
                    setattr(ch, k, target[k])
                return
        steps = list(fallback or [(k, target[k]) for k in changed])
        for k, v in steps:
            setattr(ch, k, v)

    def set_output(self, output: int, on: bool) -> None:
        """Switch ``output`` (1 or 2) on or off."""
        self.channel(output).output = bool(on)

    def configure_burst(self, output: int, *, cycles: int = 1, mode: str = "triggered",
                        source: str = "external", timer_s: float | None = None,
                        slope: str = "positive", delay_s: float | None = None) -> None:
        """Triggered (or gated) burst on ``output``: ``cycles`` pulses per trigger.

        ``source`` "external" (rear TRIGGER INPUT, e.g. the 20 kHz master clock, edge ``slope``)
        or "timer" (internal, period ``timer_s`` — 50e-6 for 20 kHz). The trigger source, timer
        and slope are shared by both outputs. Checked completely before the first write.
        """
        ch = self.channel(output)
        spec = AFGChannel.settings()
        n = spec["burst_cycles"].validate(ch, cycles)
        m = spec["burst_mode"].validate(ch, mode)
        src = type(self).settings()["trigger_source"].validate(self, source)
        slp = type(self).settings()["trigger_slope"].validate(self, slope)
        tmr = None
        if src == "timer":
            if timer_s is None:
                raise InputError(f"{self.name}: a timer trigger needs timer_s",
                                 fix="give the trigger period, e.g. timer_s=50e-6 for 20 kHz")
            tmr = type(self).settings()["trigger_timer"].validate(self, timer_s)
        dly = spec["burst_delay"].validate(ch, delay_s) if delay_s is not None else None
        ch.burst_mode = m
        ch.burst_cycles = n
        if dly is not None:
            ch.burst_delay = dly
        ch.burst = True
        self.trigger_source = src
        if tmr is not None:
            self.trigger_timer = tmr
        if src == "external":
            self.trigger_slope = slp

    # -- arbitrary waveforms ------------------------------------------------------------------
    @staticmethod
    def to_codes(samples: Any) -> np.ndarray:
        """Samples → 14-bit codes (uint16, 0 … 16382, big-endian on the wire).

        Floating-point samples are in −1 … 1 (−1 → 0, 0 → 8191, +1 → 16382); integer arrays are
        taken as codes. Raises InputError for anything outside these ranges.
        """
        a = np.asarray(samples)
        if a.ndim != 1:
            raise InputError(f"arbitrary waveform must be one-dimensional, got shape {a.shape}",
                             fix="pass a 1-D array of samples")
        if a.dtype.kind in "iu":
            if a.size and (a.min() < 0 or a.max() > ARB_CODE_MAX):
                raise InputError(f"code {int(a.max() if a.max() > ARB_CODE_MAX else a.min())} "
                                 f"is outside 0 … {ARB_CODE_MAX}",
                                 fix="codes are 14 bit, 0 (minimum) to 16382 (maximum)")
            return a.astype(np.uint16)
        if a.dtype.kind != "f":
            raise InputError(f"arbitrary waveform of dtype {a.dtype} is neither samples nor codes",
                             fix="pass floats in −1 … 1 or integer codes 0 … 16382")
        if not np.all(np.isfinite(a)):
            raise InputError("arbitrary waveform contains NaN or infinite samples",
                             fix="pass finite samples in −1 … 1")
        if a.size and (a.min() < -1.0 - 1e-9 or a.max() > 1.0 + 1e-9):
            bad = float(a[np.argmax(np.abs(a))])
            raise InputError(f"sample {bad:g} is outside −1 … 1",
                             fix="normalise the waveform to −1 … 1 (amplitude and offset scale it)")
        half = ARB_CODE_MAX / 2.0
        return np.clip(np.rint((a + 1.0) * half), 0, ARB_CODE_MAX).astype(np.uint16)

    @staticmethod
    def data_block(codes: np.ndarray) -> bytes:
        """IEEE-488.2 definite-length block of big-endian 16-bit codes: ``#<n><len><data>``."""
        payload = np.asarray(codes, dtype=">u2").tobytes()
        length = str(len(payload))
        return f"#{len(length)}{length}".encode("ascii") + payload

    def upload_arbitrary(self, samples: Any, user_slot: int) -> None:
        """Load a waveform into edit memory and copy it to ``USER<user_slot>`` (1–4).

        ``samples``: floats in −1 … 1 or integer codes 0 … 16382; 2 … 131 072 points, checked
        before anything is written. Select it on an output with ``ch1.shape = "user1"``.
        """
        if isinstance(user_slot, bool) or user_slot not in USER_SLOTS:
            raise InputError(f"{self.name}: user memory {user_slot!r} does not exist",
                             fix="use user_slot 1, 2, 3 or 4")
        codes = self.to_codes(samples)
        n = int(codes.size)
        if not (ARB_POINTS[0] <= n <= ARB_POINTS[1]):
            raise InputError(f"{self.name}: arbitrary waveform of {n} points is outside "
                             f"{ARB_POINTS[0]} … {ARB_POINTS[1]} points",
                             fix="resample the waveform to 2 … 131072 points")
        cmd = f"DATA:DEFine EMEMory,{n}"
        self.write(cmd)
        self.check_errors(cmd)
        head = "DATA:DATA EMEMory,"
        block = self.data_block(codes)
        self.transport.write_raw(head.encode("ascii") + block
                                 + self.write_termination.encode("ascii"))
        self.check_errors(f"{head}#… ({n} points)")
        cmd = f"DATA:COPY USER{user_slot},EMEMory"
        self.write(cmd)
        self.check_errors(cmd)

    # -- safety -------------------------------------------------------------------------------
    def safe_state(self) -> None:
        """Both outputs off (the AOMs then pass no light). Tries both even if one fails."""
        try:
            self.ch1.output = False  # type: ignore[attr-defined]
        finally:
            self.ch2.output = False  # type: ignore[attr-defined]
