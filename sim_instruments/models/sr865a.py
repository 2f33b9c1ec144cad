"""Simulator of a Stanford Research Systems SR865A lock-in amplifier.

Text settings (reference, input, filter, capture configuration, aux outputs) come from
``sim_instruments/visa/sr865a.yaml``; Python handlers add what YAML cannot express:

* the data-capture system: ``CAPTURELEN`` (2…4096 kB, even; odd → EXE), ``CAPTURECFG``,
  ``CAPTURERATE n`` (rate = max/2^n, n = 0…20) and ``CAPTURERATE?`` in Hz, ``CAPTURERATEMAX?``,
  ``CAPTURESTART ONE|CONT|0|1, IMM|TRIG|SAMP|0|1|2``, ``CAPTURESTOP``, ``CAPTURESTAT?`` (bit 0
  capturing, 1 triggered, 2 wrapped), ``CAPTUREBYTES?``, ``CAPTUREPROG?`` (2 kB steps; only when
  stopped), ``CAPTUREVAL? n`` and ``CAPTUREGET? i,j`` — j ≤ 64 kB from offset i kB as an
  IEEE-488.2 block of little-endian float32 with *no* terminator, EXE while capturing;
* data: capture samples come from ``trace_source(n, rate, settings) -> (n, 2)`` X, Y volts —
  the digital twin (``sim_instruments.twin.parametric.ParametricTwin``) sets it; by default
  white input noise (``noise_v`` rms per √Hz-equivalent sample, option) through the
  lock-in's RC filter. ``SNAP?``/``OUTP?`` answer the last captured sample (or a fresh one);
* ``ENBW?`` from the time constant and slope (1/4τ, 1/8τ, 3/32τ, 5/64τ), ``LIAS?``
  (``lia_status`` attribute, cleared on read; set it to inject overloads);
* the status model of the real instrument: ``*ESR?`` bits 2 QRY, 4 EXE (out-of-range value,
  odd CAPTURELEN, CAPTUREGET? while capturing), 5 CMD (unknown command); reading clears;
  ``*CLS`` clears; ``*RST`` and ``power_cycle()`` restore the defaults.

Capture timing: with ``realtime=False`` (default) a capture fills the buffer at once (the
simulated time jumps); with ``realtime=True`` ``CAPTUREBYTES?`` grows with the wall clock at the
capture rate. ``TRIG`` mode waits for :meth:`hardware_trigger` (the rear trigger input).

Assumption (not from the manual): CAPTURERATEMAX? = 1.25 MHz/2^k with the smallest k ≥ 0 that
makes it ≤ 2.5/τ; the driver never relies on this rule, it queries the instrument.

State for the twin: ``settings()`` (time constant, filter order, rate, frequency, phase),
``buffer`` (float32 array), ``capturing``, ``armed``.
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable

import numpy as np

from .base import SCPI_DATA_OUT_OF_RANGE, SCPI_UNDEFINED_HEADER, YamlScpiModel

TIME_CONSTANTS = tuple(float(f"{m}e{e}") for e in range(-6, 5) for m in (1, 3))
MAX_RATE = 1.25e6
ESR_QRY, ESR_EXE, ESR_CMD = 4, 16, 32
NVARS = {0: 1, 1: 2, 2: 2, 3: 4}
ACQ = {"ONE": 0, "0": 0, "CONT": 1, "CONTINUOUS": 1, "1": 1}
TRIG = {"IMM": 0, "IMMEDIATE": 0, "0": 0, "TRIG": 1, "TRIGSTART": 1, "1": 1,
        "SAMP": 2, "SAMPPERTRIG": 2, "2": 2}
OUT_NAMES = {"0": 0, "X": 0, "1": 1, "Y": 1, "2": 2, "R": 2, "3": 3, "THETA": 3, "TH": 3}


def max_capture_rate(time_constant: float) -> float:
    """The simulator's CAPTURERATEMAX? rule (see the module docstring)."""
    k = 0
    while MAX_RATE / 2 ** k > 2.5 / time_constant and k < 40:
        k += 1
    return MAX_RATE / 2 ** k


class SR865AModel(YamlScpiModel):
    yaml_file = "sr865a.yaml"
    yaml_resource = "TCPIP0::sr865a.sim::inst0::INSTR"
    error_query = "*ESR?"
    handlers = [
        (r"\*RST", "_rst"),
        (r"CAPTURELEN\s+(\S+)", "_caplen"),
        (r"CAPTURERATE\s+(\S+)", "_rate_set"),
        (r"CAPTURERATE\?", "_rate_get"),
        (r"CAPTURERATEMAX\?", "_rate_max"),
        (r"CAPTURESTART\s*(\S+?)\s*,\s*(\S+)", "_start"),
        (r"CAPTURESTART.*", "_bad_start"),
        (r"CAPTURESTOP", "_stop"),
        (r"CAPTURESTAT\?", "_stat"),
        (r"CAPTUREBYTES\?", "_bytes"),
        (r"CAPTUREPROG\?", "_prog"),
        (r"CAPTUREVAL\?\s*(\S+)", "_val"),
        (r"CAPTUREGET\?\s*(\S+?)\s*,\s*(\S+)", "_get"),
        (r"SNAP\?\s*(.+)", "_snap"),
        (r"OUTP\?\s*(\S+)", "_outp"),
        (r"ENBW\?", "_enbw"),
        (r"LIAS\?", "_lias"),
    ]

    def __init__(self, name: str = "", **options: Any) -> None:
        super().__init__(name, **options)
        self.esr = 0
        #: (n, rate, settings) -> (n, 2) X, Y volts; the digital twin sets it
        self.trace_source: Callable[[int, float, dict], np.ndarray] | None = None
        self.twin = None
        self.realtime = bool(options.get("realtime", False))
        self.noise_v = float(options.get("noise_v", 1e-6))
        self.oscillator = options.get("oscillator")
        self._rng = np.random.default_rng(options.get("seed"))
        self.clock: Callable[[], float] = time.monotonic
        self._reset_runtime()

    def _reset_runtime(self) -> None:
        self.esr = 0
        self.lia_status = 0
        self.rate_exponent = 0
        self.buffer = np.zeros(0, np.float32)
        self.captured = 0                # bytes
        self.capturing = False
        self.armed = False
        self.triggered = False
        self.wrapped = False
        self.mode = 0
        self._t0 = 0.0
        self._last = (0.0, 0.0)

    @property
    def rng(self) -> np.random.Generator:
        return self.lab.rng if self.lab is not None and getattr(self.lab, "rng", None) is not None else self._rng

    def power_cycle(self) -> None:
        super().power_cycle()
        self._reset_runtime()

    # -- status ---------------------------------------------------------------------------------
    def push_error(self, entry: str) -> None:
        """Base-class errors become *ESR? bits: undefined header → CMD, out of range → EXE."""
        if entry == SCPI_UNDEFINED_HEADER:
            self.esr |= ESR_CMD
        elif entry == SCPI_DATA_OUT_OF_RANGE:
            self.esr |= ESR_EXE
        else:
            self.esr |= ESR_EXE

    def handle_one(self, cmd: str) -> str | bytes | None:
        up = cmd.strip().upper()
        if up == "*ESR?":
            v, self.esr = self.esr, 0
            return str(v)
        if up == "*CLS":
            self.esr = 0
            self.lia_status = 0
            return None
        return super().handle_one(cmd)

    # -- settings the twin reads ------------------------------------------------------------------
    @property
    def time_constant(self) -> float:
        return TIME_CONSTANTS[int(self.prop("time_constant"))]

    @property
    def filter_order(self) -> int:
        return int(self.prop("filter_slope")) + 1

    @property
    def rate_max(self) -> float:
        return max_capture_rate(self.time_constant)

    @property
    def rate(self) -> float:
        return self.rate_max / 2 ** self.rate_exponent

    @property
    def nvars(self) -> int:
        return NVARS[int(self.prop("capture_config"))]

    def settings(self) -> dict:
        return dict(time_constant=self.time_constant, order=self.filter_order, rate=self.rate,
                    frequency=float(self.prop("frequency")), phase=float(self.prop("phase")),
                    oscillator=self.oscillator)

    # -- data -----------------------------------------------------------------------------------
    def default_trace(self, n: int, rate: float, settings: dict) -> np.ndarray:
        """White noise (``noise_v`` rms before the filter) through the RC stages."""
        from scipy.signal import lfilter

        tau, order = settings["time_constant"], settings["order"]
        a = math.exp(-1.0 / (rate * tau))
        x = self.rng.normal(0.0, self.noise_v, (n + 50 * order, 2))
        for _ in range(order):
            x = lfilter([1 - a], [1, -a], x, axis=0)
        return x[-n:]

    def _samples(self, n: int) -> np.ndarray:
        src = self.trace_source or self.default_trace
        xy = np.asarray(src(n, self.rate, self.settings()), dtype=float)
        if xy.shape != (n, 2):
            raise ValueError(f"trace_source returned shape {xy.shape}, ({n}, 2) requested")
        return xy

    def _fill(self) -> None:
        n_total = int(self.prop("capture_length")) * 1024 // 4
        n = n_total // self.nvars
        xy = self._samples(n)
        cfg = int(self.prop("capture_config"))
        x, y = xy[:, 0], xy[:, 1]
        r = np.hypot(x, y)
        th = np.degrees(np.arctan2(y, x))
        cols = {0: [x], 1: [x, y], 2: [r, th], 3: [x, y, r, th]}[cfg]
        self.buffer = np.stack(cols, axis=1).astype("<f4").ravel()
        self._last = (float(x[-1]), float(y[-1])) if n else (0.0, 0.0)
        self.triggered = True
        if self.realtime:
            self.capturing = True
            self._t0 = self.clock()
            self.captured = 0
        else:
            self.capturing = self.mode == 1
            self.captured = self.buffer.size * 4
            self.wrapped = True

    def _progress(self) -> None:
        if self.realtime and self.capturing and self.triggered:
            n = int((self.clock() - self._t0) * self.rate) * self.nvars * 4
            total = self.buffer.size * 4
            if n >= total:
                self.captured = total
                self.wrapped = True
                if self.mode == 0:
                    self.capturing = False
            else:
                self.captured = n

    def hardware_trigger(self) -> None:
        """A TTL edge on the rear trigger input: starts an armed ``TRIG`` capture."""
        if self.armed:
            self.armed = False
            self._fill()

    # -- handlers -------------------------------------------------------------------------------
    def _rst(self, m) -> None:
        self.device = self._load_device()
        self._reset_runtime()
        return None

    def _caplen(self, m) -> None:
        try:
            v = int(m.group(1))
        except ValueError:
            self.esr |= ESR_CMD
            return None
        if v % 2 or not 2 <= v <= 4096 or self.capturing:
            self.esr |= ESR_EXE
            return None
        self.set_prop("capture_length", v)
        self.buffer = np.zeros(0, np.float32)
        self.captured = 0
        self.triggered = self.wrapped = False
        return None

    def _rate_set(self, m) -> None:
        try:
            v = int(m.group(1))
        except ValueError:
            self.esr |= ESR_CMD
            return None
        if not 0 <= v <= 20:
            self.esr |= ESR_EXE
            return None
        self.rate_exponent = v
        return None

    def _rate_get(self, m) -> str:
        return f"{self.rate:.10g}"

    def _rate_max(self, m) -> str:
        return f"{self.rate_max:.10g}"

    def _start(self, m) -> None:
        a, t = ACQ.get(m.group(1).upper()), TRIG.get(m.group(2).upper())
        if a is None or t is None:
            self.esr |= ESR_EXE
            return None
        self.mode = a
        self.wrapped = self.triggered = False
        self.captured = 0
        if t == 0:
            self._fill()
        elif t == 1:
            self.armed = True
            self.capturing = True
        else:                                   # one sample per trigger: not simulated
            self.esr |= ESR_EXE
        return None

    def _bad_start(self, m) -> None:
        self.esr |= ESR_EXE
        return None

    def _stop(self, m) -> None:
        self._progress()
        self.capturing = False
        self.armed = False
        return None

    def _stat(self, m) -> str:
        self._progress()
        return str(int(self.capturing) | (int(self.triggered) << 1) | (int(self.wrapped) << 2))

    def _bytes(self, m) -> str:
        self._progress()
        return str(self.captured)

    def _prog(self, m) -> str | None:
        if self.capturing:
            self.esr |= ESR_EXE
            return None
        return str(2 * math.ceil(self.captured / 2048))

    def _val(self, m) -> str | None:
        try:
            n = int(m.group(1))
        except ValueError:
            self.esr |= ESR_CMD
            return None
        k = self.nvars
        if n < 0 or (n + 1) * k > self.buffer.size:
            return ",".join(["0"] * k)
        vals = self.buffer[n * k:(n + 1) * k]
        return ",".join(f"{float(v):.7g}" for v in vals)

    def _get(self, m) -> None:
        try:
            i, j = int(m.group(1)), int(m.group(2))
        except ValueError:
            self.esr |= ESR_CMD
            return None
        self._progress()
        length_kb = int(self.prop("capture_length"))
        if self.capturing or not (0 <= i <= length_kb) or not (1 <= j <= 64):
            self.esr |= ESR_EXE
            return None
        raw = np.zeros(length_kb * 256, "<f4")
        raw[: self.buffer.size] = self.buffer[: raw.size]
        byts = raw.tobytes()
        start = i * 1024
        want = j * 1024
        data = (byts[start:] + byts)[:want] if start + want > len(byts) else byts[start:start + want]
        digits = str(len(data))
        self._out.extend(b"#" + str(len(digits)).encode() + digits.encode() + data)
        return None

    def _live(self) -> tuple[float, float]:
        if self.buffer.size:
            return self._last
        xy = self._samples(1)
        return float(xy[0, 0]), float(xy[0, 1])

    def _value(self, token: str) -> float | None:
        i = OUT_NAMES.get(token.strip().upper())
        if i is None:
            return None
        x, y = self._live()
        return (x, y, math.hypot(x, y), math.degrees(math.atan2(y, x)))[i]

    def _snap(self, m) -> str | None:
        parts = [p for p in m.group(1).split(",")]
        vals = [self._value(p) for p in parts]
        if not 2 <= len(parts) <= 3 or any(v is None for v in vals):
            self.esr |= ESR_EXE
            return None
        return ",".join(f"{v:.7e}" for v in vals)

    def _outp(self, m) -> str | None:
        v = self._value(m.group(1))
        if v is None:
            self.esr |= ESR_EXE
            return None
        return f"{v:.7e}"

    def _enbw(self, m) -> str:
        n = self.filter_order
        enbw = math.sqrt(math.pi) * math.gamma(n - 0.5) / (2 * math.gamma(n)) / (2 * math.pi * self.time_constant)
        return f"{enbw:.6g}"

    def _lias(self, m) -> str:
        v, self.lia_status = self.lia_status, 0
        return str(v)
