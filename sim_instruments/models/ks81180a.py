"""Simulator of the Agilent/Keysight 81180A AWG (the serrodyne source).

The text command set lives in ``sim_instruments/visa/ks81180a.yaml`` (pyvisa-sim, usable on its
own with one bank of settings). This model runs that definition once per channel — the bank in
use is chosen by ``INSTrument:SELect 1|2`` exactly as on the instrument — and adds in Python:

* segment memory per channel: ``TRACe:DEFine <seg>,<len>`` (segments 1 … 16384, length ≥ 320
  in steps of 32, total ≤ the memory, 16 000 000 points unless ``memory_points`` is given),
  ``TRACe:SELect``, ``TRACe:DELete <seg>`` / ``TRACe:DELete:ALL``, ``TRACe:POINts?``;
* the binary ``TRACe[:DATA] #<n><len><data>`` block into the selected segment: little-endian
  16-bit words, D0–D11 code, D12/D13 markers (taken from words 24 … 31 of each 32-word group,
  4-sample resolution), D14 stop bit, D15 must be 0. A malformed header gives
  ``-160,"Block data error"``; a byte count that is not 2 × the defined length, or D15 set,
  ``-161,"Invalid block data"``; no segment defined/selected ``-221,"Settings conflict"``;
* sequence tables per channel (1 … 1000): ``SEQuence:SELect``, ``SEQuence:DEFine <step>,<seg>,
  <loops>,<jump>`` (steps in order, no gaps), ``SEQuence:DELete <n>`` / ``:ALL``;
  ``FUNCtion:MODE SEQuence`` needs a non-empty table whose segments exist (else -221), and
  ``FUNCtion:MODE USER`` a defined, loaded segment.

Out-of-range values give ``-222,"Data out of range"``, unknown commands ``-113``.

State for the digital twin: :meth:`channel` (settings of one channel as a dict),
:attr:`segments` ``{ch: {seg: uint16 codes}}``, :attr:`markers` ``{ch: {seg: bool (2, n)}}``,
:meth:`segment_volts` (codes → volts with that channel's amplitude and offset),
:meth:`playing` (what the channel plays now), :attr:`sequences` ``{ch: {n: [(seg, loops, jump)]}}``.
Waveform memory is volatile: :meth:`power_cycle` loses it; ``*RST`` resets the settings only.
"""
from __future__ import annotations

import re
from typing import Any

import numpy as np

from .base import (SCPI_BLOCK_DATA_ERROR, SCPI_DATA_OUT_OF_RANGE, SCPI_SETTINGS_CONFLICT,
                   YamlScpiModel, parse_block)

SCPI_INVALID_BLOCK = '-161,"Invalid block data"'
SCPI_OUT_OF_MEMORY = '-225,"Out of memory"'
SEGMENTS = (1, 16_384)
SEGMENT_MIN, SEGMENT_STEP = 320, 32
SEQUENCES = (1, 1000)
STEPS = (1, 16_384)
LOOPS = (1, 1_048_575)
DAC_MID, DAC_HALF = 2048, 2047


def _ints(text: str, count: int) -> list[int] | None:
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != count:
        return None
    try:
        return [int(p) for p in parts]
    except ValueError:
        return None


class Keysight81180AModel(YamlScpiModel):
    yaml_file = "ks81180a.yaml"
    yaml_resource = "TCPIP0::ks81180a.sim::5025::SOCKET"
    handlers = [
        (r":?INSTrument(?::SELect)? (.+)", "_select_channel"),
        (r":?INSTrument(?::SELect)?\?", "_query_channel"),
        (r":?TRACe:DEFine (.+)", "_define"),
        (r":?TRACe(?::DATA)?\s*(#.*)", "_data"),
        (r":?TRACe:DELete:ALL", "_delete_all"),
        (r":?TRACe:DELete(?::NAME)? (.+)", "_delete"),
        (r":?TRACe:SELect (.+)", "_select_segment"),
        (r":?TRACe:POINts\?", "_points"),
        (r":?SEQuence:DEFine (.+)", "_seq_define"),
        (r":?SEQuence:DELete:ALL", "_seq_delete_all"),
        (r":?SEQuence:DELete(?::NAME)? (.+)", "_seq_delete"),
        (r":?SEQuence:SELect (.+)", "_seq_select"),
        (r":?FUNCtion:MODE (.+)", "_mode"),
        (r"\*RST", "_reset"),
    ]

    def __init__(self, name: str = "", **options: Any) -> None:
        super().__init__(name, **options)
        self.memory_points = int(options.get("memory_points", 16_000_000))
        self._fresh_state()

    def _fresh_state(self) -> None:
        self.banks = {1: self.device, 2: self._load_device()}
        self.selected = 1
        self.device = self.banks[1]
        #: waveform memory: channel -> segment -> DAC codes (uint16, 0..4095)
        self.segments: dict[int, dict[int, np.ndarray]] = {1: {}, 2: {}}
        #: channel -> segment -> markers (bool array of shape (2, n): marker 1, marker 2)
        self.markers: dict[int, dict[int, np.ndarray]] = {1: {}, 2: {}}
        #: segments defined but never loaded (content undefined)
        self._empty: dict[int, set[int]] = {1: set(), 2: set()}
        #: channel -> sequence number -> [(segment, loops, jump)]
        self.sequences: dict[int, dict[int, list[tuple[int, int, bool]]]] = {1: {}, 2: {}}

    def power_cycle(self) -> None:
        super().power_cycle()
        self._fresh_state()

    def _reset(self, m) -> None:
        self.banks = {1: self._load_device(), 2: self._load_device()}
        self.selected = 1
        self.device = self.banks[1]
        return None

    # -- YAML commands carry the leading colon of "INSTrument:SELect n;:<command>" ------------
    def yaml_dispatch(self, cmd: str) -> str | None:
        if not cmd.startswith(("*", ":")):
            cmd = ":" + cmd
        return super().yaml_dispatch(cmd)

    # -- twin access ------------------------------------------------------------------------------
    def chprop(self, ch: int, name: str) -> Any:
        return self.banks[ch]._properties[name].get_value()

    def channel(self, ch: int) -> dict[str, Any]:
        """Settings of channel ``ch`` (SI units; output as bool)."""
        keys = ("mode", "sample_rate", "amplitude", "offset", "coupling", "output", "continuous",
                "trigger_source", "trigger_level", "trigger_count", "segment", "sequence",
                "sequence_advance")
        out = {k: self.chprop(ch, k) for k in keys}
        out["output"] = out["output"] == "ON"
        out["continuous"] = out["continuous"] == "ON"
        return out

    def segment_codes(self, ch: int, segment: int) -> np.ndarray:
        return self.segments[ch][segment]

    def segment_volts(self, ch: int, segment: int) -> np.ndarray:
        """The segment as volts at the output with channel ``ch``'s present amplitude/offset."""
        codes = self.segments[ch][segment].astype(np.float64)
        amp, off = float(self.chprop(ch, "amplitude")), float(self.chprop(ch, "offset"))
        return off + (codes - DAC_MID) * (amp / (2.0 * DAC_HALF))

    def playing(self, ch: int) -> list[tuple[int, int]]:
        """What channel ``ch`` plays: ``[(segment, loops), …]`` (one entry in user mode, the
        sequence table in sequence mode, empty in fixed mode or when nothing is loaded)."""
        mode = str(self.chprop(ch, "mode")).upper()
        if mode.startswith("USER"):
            seg = int(self.chprop(ch, "segment"))
            return [(seg, 1)] if seg in self.segments[ch] else []
        if mode.startswith("SEQ"):
            return [(s, n) for s, n, _j in self.sequences[ch].get(int(self.chprop(ch, "sequence")), [])]
        return []

    # -- channel selection ------------------------------------------------------------------------
    def _select_channel(self, m) -> None:
        t = m.group(1).strip().upper()
        ch = {"1": 1, "CH1": 1, "2": 2, "CH2": 2}.get(t)
        if ch is None:
            self.push_error(SCPI_DATA_OUT_OF_RANGE)
            return None
        self.selected = ch
        self.device = self.banks[ch]
        return None

    def _query_channel(self, m) -> str:
        return str(self.selected)

    # -- segments ---------------------------------------------------------------------------------
    def _used(self, ch: int, excluding: int | None = None) -> int:
        return sum(len(v) for k, v in self.segments[ch].items() if k != excluding)

    def _define(self, m) -> None:
        ch = self.selected
        v = _ints(m.group(1), 2)
        if v is None:
            self.push_error(SCPI_DATA_OUT_OF_RANGE)
            return None
        seg, n = v
        if not (SEGMENTS[0] <= seg <= SEGMENTS[1]) or n < SEGMENT_MIN or n % SEGMENT_STEP:
            self.push_error(SCPI_DATA_OUT_OF_RANGE)
            return None
        if self._used(ch, excluding=seg) + n > self.memory_points:
            self.push_error(SCPI_OUT_OF_MEMORY)
            return None
        self.segments[ch][seg] = np.full(n, DAC_MID, dtype=np.uint16)
        self.markers[ch][seg] = np.zeros((2, n), dtype=bool)
        self._empty[ch].add(seg)
        return None

    def _data(self, m) -> None:
        ch = self.selected
        block = m.group(1)
        try:
            payload = parse_block(block)
        except ValueError:
            self.push_error(SCPI_BLOCK_DATA_ERROR)
            return None
        seg = int(self.prop("segment"))
        if seg not in self.segments[ch]:
            self.push_error(SCPI_SETTINGS_CONFLICT)
            return None
        n = len(self.segments[ch][seg])
        head = 2 + int(block[1])
        if len(block) != head + len(payload) or len(payload) != 2 * n:
            self.push_error(SCPI_INVALID_BLOCK)
            return None
        words = np.frombuffer(payload, dtype="<u2")
        if np.any(words & 0x8000):
            self.push_error(SCPI_INVALID_BLOCK)
            return None
        groups = words.reshape(-1, SEGMENT_STEP)
        mk = np.empty((2, n), dtype=bool)
        for i, bit in enumerate((12, 13)):
            slots = (groups[:, 24:32] >> bit) & 1                      # (groups, 8)
            mk[i] = np.repeat(slots, 4, axis=1).reshape(-1).astype(bool)
        self.segments[ch][seg] = (words & 0x0FFF).astype(np.uint16)
        self.markers[ch][seg] = mk
        self._empty[ch].discard(seg)
        return None

    def _delete_all(self, m) -> None:
        ch = self.selected
        self.segments[ch].clear()
        self.markers[ch].clear()
        self._empty[ch].clear()
        return None

    def _delete(self, m) -> None:
        ch = self.selected
        v = _ints(m.group(1), 1)
        if v is None or not (SEGMENTS[0] <= v[0] <= SEGMENTS[1]):
            self.push_error(SCPI_DATA_OUT_OF_RANGE)
            return None
        self.segments[ch].pop(v[0], None)
        self.markers[ch].pop(v[0], None)
        self._empty[ch].discard(v[0])
        return None

    def _select_segment(self, m) -> None:
        v = _ints(m.group(1), 1)
        if v is None or not (SEGMENTS[0] <= v[0] <= SEGMENTS[1]):
            self.push_error(SCPI_DATA_OUT_OF_RANGE)
            return None
        self.set_prop("segment", str(v[0]))
        return None

    def _points(self, m) -> str:
        seg = int(self.prop("segment"))
        return str(len(self.segments[self.selected].get(seg, ())))

    # -- sequences --------------------------------------------------------------------------------
    def _seq_define(self, m) -> None:
        ch = self.selected
        v = _ints(m.group(1), 4)
        if v is None:
            self.push_error(SCPI_DATA_OUT_OF_RANGE)
            return None
        step, seg, loops, jump = v
        table = self.sequences[ch].setdefault(int(self.prop("sequence")), [])
        if not (STEPS[0] <= step <= min(STEPS[1], len(table) + 1)) or \
                not (SEGMENTS[0] <= seg <= SEGMENTS[1]) or not (LOOPS[0] <= loops <= LOOPS[1]) \
                or jump not in (0, 1):
            self.push_error(SCPI_DATA_OUT_OF_RANGE)
            return None
        entry = (seg, loops, bool(jump))
        if step == len(table) + 1:
            table.append(entry)
        else:
            table[step - 1] = entry
        return None

    def _seq_delete_all(self, m) -> None:
        self.sequences[self.selected].clear()
        return None

    def _seq_delete(self, m) -> None:
        v = _ints(m.group(1), 1)
        if v is None or not (SEQUENCES[0] <= v[0] <= SEQUENCES[1]):
            self.push_error(SCPI_DATA_OUT_OF_RANGE)
            return None
        self.sequences[self.selected].pop(v[0], None)
        return None

    def _seq_select(self, m) -> None:
        v = _ints(m.group(1), 1)
        if v is None or not (SEQUENCES[0] <= v[0] <= SEQUENCES[1]):
            self.push_error(SCPI_DATA_OUT_OF_RANGE)
            return None
        self.set_prop("sequence", str(v[0]))
        return None

    def _mode(self, m) -> None:
        ch = self.selected
        token = m.group(1).strip()
        t = token.upper()
        if re.fullmatch(r"SEQ(UENCE)?", t):
            table = self.sequences[ch].get(int(self.prop("sequence")), [])
            if not table or any(s not in self.segments[ch] or s in self._empty[ch] for s, _l, _j in table):
                self.push_error(SCPI_SETTINGS_CONFLICT)
                return None
        elif t == "USER":
            seg = int(self.prop("segment"))
            if seg not in self.segments[ch] or seg in self._empty[ch]:
                self.push_error(SCPI_SETTINGS_CONFLICT)
                return None
        return self.yaml_dispatch(f"FUNCtion:MODE {token}")
