"""Agilent/Keysight 81180A arbitrary waveform generator (4.2 GSa/s, 12 bit): the serrodyne AWG of
the DLCZ setup (seed: riedinger2018, Supplementary "Serrodyne frequency shifting": "We use an
arbitrary waveform generator (Agilent 81180A, bandwidth DC to 600 MHz) to generate the sawtooth
voltage signal ... We also apply an additional DC-bias to the serrodyne signal").

Command syntax: *Agilent 81180A Arbitrary Waveform Generator User's Guide*, chapter 4 "Remote
Programming Reference" — 4.12.1 channel control (``INSTrument[:SELect] 1|2``), 4.12.2 run mode
(``INITiate:CONTinuous``, ``TRIGger:SOURce:ADVance``, ``TRIGger:LEVel|SLOPe|COUNt|TIMer:TIME``),
4.12.3 analog output (``OUTPut[:STATe]``, ``OUTPut:COUPling DC|DAC|AC``, ``FREQuency:RASTer``,
``FUNCtion:MODE FIXed|USER|SEQuence``, ``VOLTage``, ``VOLTage:OFFSet``), 4.12.6 arbitrary
waveforms (``TRACe:DEFine``, ``TRACe:SELect``, ``TRACe[:DATA]#…``, ``TRACe:DELete[:ALL]``),
4.13 programming considerations (terminate with LF; do not mix control commands into a binary
transfer). Checked against public code written from that guide: the SchusterLab ``slab`` driver
``AWG81180A`` (``INSTrument:SELect``, ``FREQuency:RASTer``, ``TRACe:DEFine/SELect/DATA``,
``SEQuence:SELect``, ``SEQuence:DEFine <step>,<seg>,<loops>,<jump>``, ``SEQuence:ADVance``,
marker bits 12/13 with 4-sample resolution) and a public excerpt of the User's Guide (tables
4-2 … 4-7, the C# download example). The sequencer commands are not in the excerpts; their
ranges follow the Tabor WX2184C manual (the 81180A is a Tabor design with the same sequencer).

Waveform words (User's Guide 4.12.6, "16-bit data point format"): little-endian 16-bit, D0–D11
the DAC code (0 … 4095; 2048 = offset, 4095 = offset + Vpp/2, code = round(2048 +
2047·(v − offset)/(Vpp/2)) as in the guide's C# example), D12 marker 1, D13 marker 2, D14 the
stop bit (0 here), D15 0. Data come in groups of 32 words; markers have a resolution of 4 sample
clocks and only the last 8 words of each group carry them: word 24+k holds the marker state of
samples 4k … 4k+3 of the group. The driver takes per-sample marker arrays, uses the state at the
first sample of every 4-sample slot, and writes it into words k, 8+k, 16+k and 24+k (the first 24
are don't-care; writing them too is what the slab driver does). The guide's note that marker
placement is "offset by 24 points" (DAC multiplexing) is *not* compensated: calibrate a marker
delay on the scope if it matters.

Channels: each command acts on the channel chosen by ``INSTrument:SELect``. Every setting here is
sent as one message ``INSTrument:SELect <n>;:<command>`` so it never depends on what was selected
before. Channel 1 — the serrodyne output — is the instrument's own settings (``awg.amplitude``,
``awg.offset``: what the station file limits); channel 2 is ``awg.ch2`` (option ``channels: 1``
removes it for a one-channel unit).

Limits: sample clock 10 MSa/s … 4.2 GSa/s; DC-coupled path 50 mVpp … 2 Vpp into 50 Ω, offset
±1.5 V (the guide also says |offset| + amplitude/2 must stay inside "the specified voltage
window", whose value is not in the sources checked: the station should narrow ``offset``);
segments 1 … 16384 (TRACe:DEFine; TRACe:SELect accepts up to 32000, the smaller is used),
length ≥ 320 points in steps of 32, at most the installed memory (16 M points standard,
"16(64)e6" in the guide: 16 000 000 here, ``memory_points`` option for the 64 M option);
sequences 1 … 1000, steps 1 … 16384, loops 1 … 1 048 575 (assumed, WX2184C-like), jump flag 0/1.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from labctl.errors import InputError, SettingError
from labctl.instrument.base import Component, Instrument, on_off
from labctl.instrument.base import Setting

SAMPLE_RATE = (10e6, 4.2e9)          #: Sa/s, FREQuency:RASTer
AMPLITUDE_DC = (0.05, 2.0)           #: Vpp into 50 Ω, DC-coupled path (VOLTage)
OFFSET = (-1.5, 1.5)                 #: V (VOLTage:OFFSet)
TRIGGER_LEVEL = (-5.0, 5.0)          #: V
TRIGGER_COUNT = (1, 1_048_576)
TRIGGER_TIMER = (100e-9, 20.0)       #: s, TRIGger:TIMer:TIME
SEGMENTS = (1, 16_384)
SEGMENT_MIN = 320                    #: points
SEGMENT_STEP = 32                    #: points
MEMORY_POINTS = 16_000_000           #: standard waveform memory (64_000_000 with the option)
SEQUENCES = (1, 1000)
SEQUENCE_STEPS = (1, 16_384)
LOOPS = (1, 1_048_575)
DAC_MID = 2048
DAC_HALF = 2047
DAC_MAX = 4095
MARKER_BITS = (12, 13)               #: D12 marker 1, D13 marker 2


def _parse_int(text: str) -> int:
    return int(round(float(text)))


class AWGSettings:
    """The settings of one 81180A channel (used by the instrument for channel 1 and by ``ch2``).

    Every command is prefixed with ``INSTrument:SELect {ch};:`` (one message, one channel)."""

    mode = Setting("INSTrument:SELect {ch};:FUNCtion:MODE?", "INSTrument:SELect {ch};:FUNCtion:MODE {value}",
                   mapping={"fixed": "FIXed", "user": "USER", "sequence": "SEQuence"},
                   doc="fixed (standard shapes), user (one arbitrary segment) or sequence")
    sample_rate = Setting("INSTrument:SELect {ch};:FREQuency:RASTer?",
                          "INSTrument:SELect {ch};:FREQuency:RASTer {value}", unit="Sa/s",
                          limits=SAMPLE_RATE, doc="arbitrary-waveform sample clock")
    amplitude = Setting("INSTrument:SELect {ch};:VOLTage?", "INSTrument:SELect {ch};:VOLTage {value}",
                        unit="V", limits=AMPLITUDE_DC, doc="amplitude (Vpp into 50 Ω, DC path)")
    offset = Setting("INSTrument:SELect {ch};:VOLTage:OFFSet?",
                     "INSTrument:SELect {ch};:VOLTage:OFFSet {value}", unit="V", limits=OFFSET,
                     doc="DC offset (the serrodyne phase bias)")
    coupling = Setting("INSTrument:SELect {ch};:OUTPut:COUPling?",
                       "INSTrument:SELect {ch};:OUTPut:COUPling {value}",
                       mapping={"dc": "DC", "dac": "DAC", "ac": "AC"},
                       doc="output path; amplitude limits here are the DC path's")
    output = Setting("INSTrument:SELect {ch};:OUTPut?", "INSTrument:SELect {ch};:OUTPut {value}",
                     mapping=on_off(), doc="output on/off")
    continuous = Setting("INSTrument:SELect {ch};:INITiate:CONTinuous?",
                         "INSTrument:SELect {ch};:INITiate:CONTinuous {value}", mapping=on_off(),
                         doc="continuous (on) or triggered (off) run mode")
    trigger_source = Setting("INSTrument:SELect {ch};:TRIGger:SOURce:ADVance?",
                             "INSTrument:SELect {ch};:TRIGger:SOURce:ADVance {value}",
                             mapping={"external": "EXTernal", "bus": "BUS", "timer": "TIMer",
                                      "event": "EVENt"}, doc="trigger source (triggered mode)")
    trigger_level = Setting("INSTrument:SELect {ch};:TRIGger:LEVel?",
                            "INSTrument:SELect {ch};:TRIGger:LEVel {value}", unit="V",
                            limits=TRIGGER_LEVEL, doc="TRIG IN threshold")
    trigger_slope = Setting("INSTrument:SELect {ch};:TRIGger:SLOPe?",
                            "INSTrument:SELect {ch};:TRIGger:SLOPe {value}",
                            mapping={"positive": "POSitive", "negative": "NEGative", "either": "EITHer"},
                            doc="TRIG IN edge")
    trigger_count = Setting("INSTrument:SELect {ch};:TRIGger:COUNt?",
                            "INSTrument:SELect {ch};:TRIGger:COUNt {value}", limits=TRIGGER_COUNT,
                            step=1, parse=_parse_int, doc="waveform cycles per trigger (burst)")
    trigger_timer = Setting("INSTrument:SELect {ch};:TRIGger:TIMer:TIME?",
                            "INSTrument:SELect {ch};:TRIGger:TIMer:TIME {value}", unit="s",
                            limits=TRIGGER_TIMER, doc="internal trigger period")
    segment = Setting("INSTrument:SELect {ch};:TRACe:SELect?", "INSTrument:SELect {ch};:TRACe:SELect {value}",
                      limits=SEGMENTS, step=1, parse=_parse_int,
                      doc="active segment (played in user mode, target of TRACe:DATA)")
    sequence = Setting("INSTrument:SELect {ch};:SEQuence:SELect?",
                       "INSTrument:SELect {ch};:SEQuence:SELect {value}", limits=SEQUENCES, step=1,
                       parse=_parse_int, doc="active sequence table")
    sequence_advance = Setting("INSTrument:SELect {ch};:SEQuence:ADVance?",
                               "INSTrument:SELect {ch};:SEQuence:ADVance {value}",
                               mapping={"auto": "AUTOmatic", "once": "ONCE", "stepped": "STEPped"},
                               doc="how the sequencer advances")


class AWGChannel(AWGSettings, Component):
    """Channel 2 of a two-channel 81180A (``awg.ch2``)."""


def check_segment_length(n: Any, memory_points: int = MEMORY_POINTS) -> int:
    """The 81180A segment-length rule: an integer ≥ 320, a multiple of 32, ≤ the memory.

    Returns ``n``; raises :class:`InputError` saying which part of the rule fails."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise InputError(f"segment length {n!r} is not a whole number of points",
                         fix="segments hold an integer number of samples")
    n = int(n)
    if n < SEGMENT_MIN:
        raise InputError(f"segment of {n} points is shorter than the 81180A minimum of {SEGMENT_MIN}",
                         fix=f"use at least {SEGMENT_MIN} points (repeat the waveform)")
    if n % SEGMENT_STEP:
        lo = n - n % SEGMENT_STEP
        raise InputError(f"segment of {n} points is not a multiple of {SEGMENT_STEP}",
                         fix=f"use {lo} or {lo + SEGMENT_STEP} points")
    if n > memory_points:
        raise InputError(f"segment of {n} points exceeds the waveform memory of {memory_points} points",
                         fix="shorten the segment (or install the 64 M option and set memory_points)")
    return n


def volts_to_codes(samples_v: Any, amplitude_vpp: float, offset_v: float) -> np.ndarray:
    """Volts at the output → 12-bit DAC codes (uint16 0 … 4095), User's Guide scaling.

    ``code = round(2048 + 2047·(v − offset)/(Vpp/2))``; a sample more than half a code outside
    ``offset ± Vpp/2`` raises :class:`InputError` naming it (nothing is clipped silently)."""
    v = np.asarray(samples_v, dtype=np.float64)
    if v.ndim != 1:
        raise InputError(f"segment samples must be one-dimensional, got shape {v.shape}",
                         fix="pass a 1-D array of volts")
    if not np.all(np.isfinite(v)):
        raise InputError("segment contains NaN or infinite samples", fix="pass finite volts")
    x = (v - offset_v) * (2.0 * DAC_HALF / amplitude_vpp)
    codes = np.rint(x) + DAC_MID
    if codes.size and (codes.min() < 0 or codes.max() > DAC_MAX):
        i = int(np.argmax(np.abs(x)))
        raise InputError(f"sample {i} = {v[i]:g} V is outside the output window "
                         f"{offset_v:g} V ± {amplitude_vpp / 2:g} V",
                         fix="raise the amplitude, re-centre the offset or scale the waveform")
    return codes.astype(np.uint16)


def marker_bits(markers: Any, n: int) -> np.ndarray:
    """Per-sample markers → the marker bits (D12, D13) of ``n`` waveform words.

    ``markers``: one array (marker 1), a pair ``(m1, m2)`` (either may be None) or an array of
    shape ``(2, n)``; each of ``n`` truthy/falsy samples. Resolution is 4 samples: the state at the
    first sample of each 4-sample slot is used (see the module docstring for the word layout)."""
    if markers is None:
        return np.zeros(n, dtype=np.uint16)
    if isinstance(markers, np.ndarray) and markers.ndim == 2:
        pair: Sequence[Any] = list(markers)
    elif isinstance(markers, (tuple, list)) and len(markers) == 2 and not np.isscalar(markers[0]):
        pair = list(markers)
    else:
        pair = [markers]
    if len(pair) > 2:
        raise InputError(f"{len(pair)} marker arrays given; the 81180A has two markers per channel",
                         fix="pass (marker1, marker2)")
    out = np.zeros(n, dtype=np.uint16)
    for bit, m in zip(MARKER_BITS, pair):
        if m is None:
            continue
        a = np.asarray(m)
        if a.shape != (n,):
            raise InputError(f"marker array of shape {a.shape} does not match the {n} samples",
                             fix="give one marker state per sample")
        slots = (a.reshape(-1, SEGMENT_STEP)[:, ::4] != 0).astype(np.uint16)   # (groups, 8)
        out |= (np.tile(slots, (1, 4)).reshape(-1) << bit).astype(np.uint16)
    return out


def trace_block(words: np.ndarray) -> bytes:
    """IEEE-488.2 definite-length block of little-endian 16-bit words: ``#<n><len><data>``."""
    payload = np.asarray(words, dtype="<u2").tobytes()
    length = str(len(payload))
    return f"#{len(length)}{length}".encode("ascii") + payload


class Keysight81180A(AWGSettings, Instrument):
    """Agilent/Keysight 81180A AWG playing the serrodyne sawtooth (channel 1) into the EOM chain.

    Role ``waveform_generator``: :meth:`set_sample_rate`, :meth:`upload_segment`,
    :meth:`set_output`; plus :meth:`define_sequence`. Options: ``channels`` (1 or 2, default 2),
    ``memory_points`` (16 000 000, or 64 000 000 with the memory option).
    """

    model = "Agilent/Keysight 81180A"
    roles = ("waveform_generator",)
    timeout = 10.0                     # large segment uploads
    simulator = "sim_instruments.models.ks81180a:Keysight81180AModel"
    components = {"ch2": (AWGChannel, {"ch": 2})}

    def __init__(self, name: str, transport: Any, **options: Any) -> None:
        super().__init__(name, transport, **options)
        self.variables["ch"] = 1
        channels = options.get("channels", 2)
        if channels not in (1, 2):
            raise InputError(f"{name}: channels={channels!r}; the 81180A has 1 or 2 channels",
                             fix="set the option channels to 1 or 2")
        self.channels = channels
        if channels == 1:
            del self._components["ch2"]
            del self.ch2  # type: ignore[attr-defined]
        mem = options.get("memory_points", MEMORY_POINTS)
        if mem not in (MEMORY_POINTS, 64_000_000):
            raise InputError(f"{name}: memory_points={mem!r} is not an 81180A memory size",
                             fix="use 16000000 (standard) or 64000000 (memory option)")
        self.memory_points = int(mem)

    # -- helpers ------------------------------------------------------------------------------
    def channel(self, output: int) -> Component:
        """Channel 1 (the instrument itself) or channel 2 (``ch2``); InputError otherwise."""
        outputs = range(1, self.channels + 1)
        if isinstance(output, bool) or output not in outputs:
            raise InputError(f"{self.name}: output {output!r} does not exist",
                             fix=f"this 81180A has output(s) {', '.join(map(str, outputs))}")
        return self if output == 1 else self.ch2  # type: ignore[attr-defined]

    def _send(self, ch: int, command: str) -> None:
        cmd = f"INSTrument:SELect {ch};:{command}"
        self.write(cmd)
        self.check_errors(cmd)

    def opc(self) -> bool:
        """``*OPC?``: True once all pending operations are complete."""
        return self.query("*OPC?").strip() == "1"

    # -- WaveformGenerator ------------------------------------------------------------------------
    def set_sample_rate(self, rate_hz: float, output: int = 1) -> None:
        """Sample clock of ``output`` (10 MSa/s … 4.2 GSa/s)."""
        self.channel(output).sample_rate = rate_hz  # type: ignore[attr-defined]

    def set_output(self, output: int, on: bool) -> None:
        """Switch ``output`` on or off."""
        self.channel(output).output = bool(on)  # type: ignore[attr-defined]

    def upload_segment(self, segment: int, samples_v: Any, *, amplitude_vpp: float, offset_v: float,
                       markers: Any = None, output: int = 1) -> None:
        """Define segment ``segment`` on ``output`` and load it; set amplitude and offset.

        ``samples_v``: volts at the output (float array, within ``offset_v ± amplitude_vpp/2``)
        or 12-bit DAC codes (integer array, 0 … 4095). Amplitude and offset are written too,
        because they give the codes their meaning. ``markers``: see :func:`marker_bits`.
        Everything (segment number and length rule, levels against the model's and the
        station's limits, clipping, markers) is checked before the first write.
        """
        ch = self.channel(output)
        spec = type(ch).settings()
        if isinstance(segment, bool) or not isinstance(segment, (int, np.integer)) \
                or not SEGMENTS[0] <= segment <= SEGMENTS[1]:
            raise SettingError(ch.full_name, "segment", segment, f"segments {SEGMENTS[0]} to {SEGMENTS[1]}")
        segment = int(segment)
        amp = spec["amplitude"].validate(ch, amplitude_vpp)
        off = spec["offset"].validate(ch, offset_v)
        a = np.asarray(samples_v)
        if a.ndim != 1:
            raise InputError(f"segment samples must be one-dimensional, got shape {a.shape}",
                             fix="pass a 1-D array of volts or DAC codes")
        n = check_segment_length(a.shape[0], self.memory_points)
        if a.dtype.kind in "iu":
            if a.min() < 0 or a.max() > DAC_MAX:
                bad = int(a.min() if a.min() < 0 else a.max())
                raise InputError(f"DAC code {bad} is outside 0 … {DAC_MAX}",
                                 fix="codes are 12 bit; pass volts as floats instead")
            codes = a.astype(np.uint16)
        else:
            codes = volts_to_codes(a, amp, off)
        words = codes | marker_bits(markers, n)
        c = 1 if output == 1 else 2
        ch.amplitude = amp  # type: ignore[attr-defined]
        ch.offset = off  # type: ignore[attr-defined]
        self._send(c, f"TRACe:DEFine {segment},{n}")
        ch.segment = segment  # type: ignore[attr-defined]
        head = b"TRACe:DATA "
        self.transport.write_raw(head + trace_block(words) + self.write_termination.encode("ascii"))
        self.check_errors(f"TRACe:DATA #… ({n} points, segment {segment})")

    def delete_segments(self, output: int = 1) -> None:
        """``TRACe:DELete:ALL``: clear the whole waveform memory of ``output`` (defragments)."""
        self.channel(output)
        self._send(output, "TRACe:DELete:ALL")

    def define_sequence(self, steps: Iterable[Any], *, sequence: int = 1, advance: str = "auto",
                        output: int = 1, activate: bool = True) -> None:
        """Write sequence table ``sequence`` of ``output``: one step per ``(segment, loops)``,
        ``(segment, loops, jump)`` or ``{"segment":, "loops":, "jump":}``.

        The old table of that number is deleted first (``SEQuence:DELete <n>``, assumed by analogy
        with ``TRACe:DELete`` — see the docs), then ``SEQuence:DEFine <step>,<segment>,<loops>,
        <jump>`` for steps 1 … n and ``SEQuence:ADVance``. With ``activate`` the channel switches
        to ``FUNCtion:MODE SEQuence``. All steps are checked before the first write."""
        ch = self.channel(output)
        spec = type(ch).settings()
        seq = spec["sequence"].validate(ch, sequence)
        adv = spec["sequence_advance"].validate(ch, advance)
        table = [self._step(i, s) for i, s in enumerate(list(steps), start=1)]
        if not (SEQUENCE_STEPS[0] <= len(table) <= SEQUENCE_STEPS[1]):
            raise InputError(f"{self.name}: a sequence of {len(table)} steps is outside "
                             f"{SEQUENCE_STEPS[0]} … {SEQUENCE_STEPS[1]} steps",
                             fix="give at least one (segment, loops) step")
        c = 1 if output == 1 else 2
        ch.sequence = seq  # type: ignore[attr-defined]
        self._send(c, f"SEQuence:DELete {seq}")
        for i, (seg, loops, jump) in enumerate(table, start=1):
            self._send(c, f"SEQuence:DEFine {i},{seg},{loops},{int(jump)}")
        ch.sequence_advance = adv  # type: ignore[attr-defined]
        if activate:
            ch.mode = "sequence"  # type: ignore[attr-defined]

    def _step(self, i: int, step: Any) -> tuple[int, int, bool]:
        if isinstance(step, Mapping):
            seg, loops, jump = step.get("segment"), step.get("loops", 1), step.get("jump", False)
        elif isinstance(step, (tuple, list)) and len(step) in (2, 3):
            seg, loops = step[0], step[1]
            jump = step[2] if len(step) == 3 else False
        else:
            raise InputError(f"{self.name}: sequence step {i} = {step!r} is not (segment, loops[, jump])",
                             fix="write each step as (segment, loops) or (segment, loops, jump)")
        for what, v, (lo, hi) in (("segment", seg, SEGMENTS), ("loops", loops, LOOPS)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not lo <= v <= hi:
                raise InputError(f"{self.name}: sequence step {i}: {what} {v!r} is outside {lo} … {hi}",
                                 fix=f"use an integer {what} in {lo} … {hi}")
        if not isinstance(jump, (bool, np.bool_)) and jump not in (0, 1):
            raise InputError(f"{self.name}: sequence step {i}: jump flag {jump!r} is not 0/1",
                             fix="use True/False")
        return int(seg), int(loops), bool(jump)

    # -- safety -------------------------------------------------------------------------------
    def safe_state(self) -> None:
        """Every output off, then offset 0 V (no DC bias on the EOM; the allowed value nearest
        0 V if the station's limits exclude 0). Tries every step even if one fails and
        re-raises the first failure."""
        first: BaseException | None = None
        for out in range(1, self.channels + 1):
            ch = self.channel(out)
            lo, hi = type(ch).settings()["offset"].limits_for(ch) or OFFSET
            for name, value in (("output", False), ("offset", min(max(0.0, lo), hi))):
                try:
                    setattr(ch, name, value)
                except Exception as e:  # keep going: the other output must still go off
                    first = first or e
        if first is not None:
            raise first
