"""A mock of PicoQuant's TimeHarp 260 programming library (TH260Lib) with C-level behaviour.

:class:`TH260MockLibrary` has the library's exported functions with their names and calling
convention: arguments are what ctypes passes (``c_int`` or Python ints for ``int``, ``byref()``/
pointers for ``int*`` and ``double*``, ``create_string_buffer`` arrays for ``char*``, a ``c_uint``
array / pointer / numpy array for the record buffer), results go into those objects, and every
function returns the library's return code (0 = ok, negative = ``TH260_ERROR_*``). Arguments of
the wrong C type raise ``ctypes.ArgumentError`` as ctypes would; a buffer smaller than the
library may write raises :class:`MockMemoryViolation` (the real library would corrupt memory).

Checked against PicoQuant's public demos (``PicoQuant/TH260-Demos``): ``th260lib.h`` (function
prototypes, v3.0.0.1), ``th260defin.h`` (constants, v3.0.0.1), ``errorcodes.h`` (error codes), and
the call sequence of ``tttrmode.c`` / ``tttrmode.py`` (Linux/Windows demos, TH260LIB 3.1/3.2).

State machine (per device index): ``OpenDevice`` -> ``Initialize(mode)`` -> settings ->
``StartMeas(tacq_ms)`` -> ``ReadFiFo`` … ``CTCStatus`` = 1 -> ``StopMeas`` -> ``CloseDevice``.
Functions called on a device that is not open return ``TH260_ERROR_DEVICE_NOT_OPEN``; functions
after ``Initialize`` in the header ("all functions below can only be used after
TH260_Initialize") return ``TH260_ERROR_NOT_INITIALIZED`` before it. PICO-only functions on a
NANO board (and the reverse) return ``TH260_ERROR_UNSUPPORTED_FUNCTION``.

What the header does not say and the mock chooses (documented in ``docs/instruments/th260.md``):
``ReadFiFo`` before any ``StartMeas`` since ``Initialize`` returns ``TH260_ERROR_INVALID_MODE``;
``count`` must be within ``TTREADMIN``..``TTREADMAX`` (128..131072) else
``TH260_ERROR_INVALID_ARGUMENT``; the sync divider must be 1, 2, 4 or 8; error texts are derived
from the constant names (the real library's wording is not public).

Time base: by default (``pacing="simulated"``) the acquisition time advances with the records
delivered (the source's sync count x period), not the wall clock, so a 10 s acquisition streams as
fast as the driver reads. ``pacing="wall"`` delivers records only once their time has passed on
the wall clock (times ``speed``); unread records pile up in a FIFO of ``fifo_depth`` records, and
``FLAG_FIFOFULL`` is raised when it overflows, as on the card.

Fault hooks: :meth:`inject_flags` (``FLAG_FIFOFULL``, ``FLAG_SYNC_LOST``, …), :meth:`inject_warnings`,
:meth:`fail` (one function returns an error code, once or always), :meth:`stop_answering` (every
device call returns an error code: a board that no longer responds), :meth:`power_cycle`.
"""
from __future__ import annotations

import ctypes
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from .record_sources import decode, make_source

# ---- th260defin.h ------------------------------------------------------------------------------
LIB_VERSION = "3.2"
# names shared with the driver's copy of th260defin.h (one table; the mock adds what only a
# library implementation needs: limits it enforces, warning bits it raises)
from drivers.picoquant_th260 import (  # noqa: E402
    EDGE_FALLING, EDGE_RISING, FEATURE_DLL, FEATURE_LOWRES, FEATURE_MARKERS, FEATURE_PROG_TD,
    FEATURE_TRIGOUT, FEATURE_TTTR, FLAG_EVTS_DROPPED, FLAG_FIFOFULL,
    FLAG_SYNC_LOST, HWIDENT_NANO, HWIDENT_PICO, MAXDEVNUM, MAXSTRLEN_ERRSTR,
    MAXSTRLEN_LIBVER, MAXSTRLEN_MODEL, MAXSTRLEN_PART, MAXSTRLEN_SERIAL, MAXSTRLEN_VERSION,
    MAXSTRLEN_WRNTXT, MODE_HIST, MODE_T2, MODE_T3, TTREADMAX, TTREADMIN)
MAXBINSTEPS = 22
SYNCDIVMIN, SYNCDIVMAX = 1, 8
TRGLVLMIN, TRGLVLMAX = -1200, 1200      # mV, NANO
CFDLVLMIN, CFDLVLMAX = -1200, 0         # mV, PICO
CFDZCMIN, CFDZCMAX = -40, 0             # mV, PICO
CHANOFFSMIN, CHANOFFSMAX = -99999, 99999  # ps
OFFSETMIN, OFFSETMAX = 0, 100000000     # ns
ACQTMIN, ACQTMAX = 1, 360000000         # ms
TRIGOUTMIN, TRIGOUTMAX = 0, 16777215    # 100 ns units
HOLDOFFMIN, HOLDOFFMAX = 0, 25500       # ns
TDCODEMIN, TDCODEMAX = 0, 7
WARNING_SYNC_RATE_ZERO = 0x0001
WARNING_SYNC_RATE_VERY_LOW = 0x0002
WARNING_SYNC_RATE_TOO_HIGH = 0x0004
WARNING_INPT_RATE_ZERO = 0x0010
WARNING_INPT_RATE_TOO_HIGH = 0x0040
WARNING_INPT_RATE_RATIO = 0x0100
WARNING_DIVIDER_GREATER_ONE = 0x0200
WARNING_TIME_SPAN_TOO_SMALL = 0x0400
WARNING_OFFSET_UNNECESSARY = 0x0800
WARNING_DIVIDER_TOO_SMALL = 0x1000
WARNING_COUNTS_DROPPED = 0x2000

# ---- errorcodes.h ------------------------------------------------------------------------------
# the codes are the vendor header's (errorcodes.h); the driver holds the one copy of the table
from drivers.picoquant_th260 import ERROR_NAMES  # noqa: E402
ERR = {v: k for k, v in ERROR_NAMES.items()}
OK = 0
E_OPEN_FAIL = ERR["TH260_ERROR_DEVICE_OPEN_FAIL"]
E_NOT_OPEN = ERR["TH260_ERROR_DEVICE_NOT_OPEN"]
E_ARG = ERR["TH260_ERROR_INVALID_ARGUMENT"]
E_MODE = ERR["TH260_ERROR_INVALID_MODE"]
E_NOT_INIT = ERR["TH260_ERROR_NOT_INITIALIZED"]
E_DMA = ERR["TH260_ERROR_DMA_FAIL"]
E_UNSUPPORTED = ERR["TH260_ERROR_UNSUPPORTED_FUNCTION"]

_WARNING_TEXT = {
    WARNING_SYNC_RATE_ZERO: "Sync rate is zero.",
    WARNING_SYNC_RATE_VERY_LOW: "Sync rate is very low.",
    WARNING_SYNC_RATE_TOO_HIGH: "Sync rate is too high for T3 mode.",
    WARNING_INPT_RATE_ZERO: "An enabled input channel has a count rate of zero.",
    WARNING_INPT_RATE_TOO_HIGH: "An input count rate is too high.",
    WARNING_INPT_RATE_RATIO: "Input rates are high compared to the sync rate (pile-up).",
    WARNING_DIVIDER_GREATER_ONE: "Sync divider > 1 with a low sync rate.",
    WARNING_TIME_SPAN_TOO_SMALL: "The T3 time span is smaller than the sync period.",
    WARNING_OFFSET_UNNECESSARY: "The offset is unnecessary.",
    WARNING_DIVIDER_TOO_SMALL: "The sync divider is too small for the sync rate.",
    WARNING_COUNTS_DROPPED: "Counts were dropped.",
}


def error_text(code: int) -> str:
    """The mock's text for an error code (derived from the constant name)."""
    name = ERROR_NAMES.get(code)
    if name is None:
        return "Unknown error"
    return name.replace("TH260_ERROR_", "").replace("_", " ").capitalize()


class MockMemoryViolation(RuntimeError):
    """The caller gave a buffer smaller than what the library writes: with the real library this
    is undefined behaviour (memory corruption), so the mock stops the caller here."""


# ---- ctypes argument handling -------------------------------------------------------------------
_CArgObject = type(ctypes.byref(ctypes.c_int()))


def _arg_int(x: Any, pos: int) -> int:
    """An ``int`` argument: a Python int or a ctypes integer (ctypes rejects floats)."""
    if isinstance(x, bool):
        return int(x)
    if isinstance(x, int):
        if not -(1 << 31) <= x < (1 << 31):
            raise ctypes.ArgumentError(f"argument {pos}: OverflowError: int too long to convert")
        return x
    if isinstance(x, ctypes._SimpleCData) and isinstance(x.value, int):
        return int(x.value)
    raise ctypes.ArgumentError(f"argument {pos}: TypeError: wrong type {type(x).__name__} for int")


def _target(x: Any, pos: int) -> Any:
    """The ctypes object a pointer argument points to."""
    if isinstance(x, _CArgObject):
        return x._obj
    if isinstance(x, ctypes._Pointer):
        return x.contents
    if isinstance(x, (ctypes._SimpleCData, ctypes.Array)):
        return x  # ctypes converts an instance to a pointer when argtypes say so
    raise ctypes.ArgumentError(f"argument {pos}: TypeError: expected a pointer (byref), got {type(x).__name__}")


def _out_int(x: Any, pos: int) -> Any:
    t = _target(x, pos)
    if not (isinstance(t, ctypes._SimpleCData) and ctypes.sizeof(t) == 4 and t._type_ in "ilIL"):
        raise ctypes.ArgumentError(f"argument {pos}: TypeError: int* must point to a 32-bit int, "
                                   f"got {type(t).__name__}")
    return t


def _out_double(x: Any, pos: int) -> Any:
    t = _target(x, pos)
    if not isinstance(t, ctypes.c_double):
        raise ctypes.ArgumentError(f"argument {pos}: TypeError: double* must point to a c_double, got {type(t).__name__}")
    return t


def _write_str(buf: Any, text: str, need: int, pos: int) -> None:
    """Write a NUL-terminated string into a ``char*`` buffer that must hold ``need`` bytes."""
    t = _target(buf, pos)
    if not (isinstance(t, ctypes.Array) and t._type_ is ctypes.c_char):
        raise ctypes.ArgumentError(f"argument {pos}: TypeError: char* buffer expected (create_string_buffer)")
    if ctypes.sizeof(t) < need:
        raise MockMemoryViolation(f"argument {pos}: the library writes up to {need} bytes into a "
                                  f"{ctypes.sizeof(t)}-byte buffer")
    data = text.encode("ascii", "replace")[: need - 1] + b"\0"
    ctypes.memmove(t, data, len(data))


def _record_buffer(buf: Any, pos: int) -> tuple[int, int | None]:
    """Address and size in bytes (None if unknown) of an ``unsigned int*`` buffer."""
    if isinstance(buf, np.ndarray):
        if buf.dtype.itemsize != 4 or not buf.flags.c_contiguous or not buf.flags.writeable:
            raise ctypes.ArgumentError(f"argument {pos}: numpy buffer must be contiguous, writable, 32-bit")
        return buf.ctypes.data, buf.nbytes
    if isinstance(buf, _CArgObject):
        obj = buf._obj
        return ctypes.addressof(obj), ctypes.sizeof(obj)
    if isinstance(buf, ctypes.Array):
        if ctypes.sizeof(buf._type_) != 4:
            raise ctypes.ArgumentError(f"argument {pos}: buffer elements must be 32-bit")
        return ctypes.addressof(buf), ctypes.sizeof(buf)
    if isinstance(buf, ctypes._Pointer):
        if ctypes.sizeof(buf._type_) != 4:
            raise ctypes.ArgumentError(f"argument {pos}: buffer elements must be 32-bit")
        return ctypes.cast(buf, ctypes.c_void_p).value or 0, None
    if isinstance(buf, ctypes.c_void_p):
        return buf.value or 0, None
    raise ctypes.ArgumentError(f"argument {pos}: TypeError: unsigned int* buffer expected, got {type(buf).__name__}")


# ---- device state ------------------------------------------------------------------------------
@dataclass
class MockDevice:
    """One TimeHarp 260 board. Plain attributes, read by tests and the digital twin."""

    index: int
    serial: str
    model: str                      #: HWIDENT_PICO or HWIDENT_NANO
    n_channels: int
    features: int
    is_open: bool = False
    mode: int | None = None         #: None until Initialize
    sync_divider: int = 1
    sync_level_mv: int = -50
    sync_edge: int = EDGE_FALLING
    sync_zc_mv: int = -10
    sync_offset_ps: int = 0
    input_level_mv: list[int] = field(default_factory=list)
    input_edge: list[int] = field(default_factory=list)
    input_zc_mv: list[int] = field(default_factory=list)
    input_offset_ps: list[int] = field(default_factory=list)
    input_enable: list[int] = field(default_factory=list)
    input_deadtime: list[int] = field(default_factory=list)
    binning: int = 0
    offset_ns: int = 0
    timing_mode: int = 0
    marker_edges: list[int] = field(default_factory=lambda: [EDGE_RISING] * 4)
    marker_enable: list[int] = field(default_factory=lambda: [0] * 4)
    marker_holdoff_ns: int = 0
    trigger_output: int = 0
    meas_control: tuple[int, int, int] = (0, EDGE_RISING, EDGE_RISING)
    measuring: bool = False
    started: bool = False           #: a StartMeas since the last Initialize
    tacq_ms: int = 0
    flags: int = 0                  #: sticky flag bits (injected or raised by the acquisition)
    warnings: int = 0               #: injected warning bits
    acq: "_Acquisition | None" = None

    def reset_settings(self) -> None:
        n = self.n_channels
        self.sync_divider, self.sync_level_mv, self.sync_edge, self.sync_zc_mv = 1, -50, EDGE_FALLING, -10
        self.sync_offset_ps = 0
        self.input_level_mv, self.input_edge = [-50] * n, [EDGE_FALLING] * n
        self.input_zc_mv, self.input_offset_ps = [-10] * n, [0] * n
        self.input_enable, self.input_deadtime = [1] * n, [0] * n
        self.binning, self.offset_ns, self.timing_mode = 0, 0, 0
        self.marker_edges, self.marker_enable, self.marker_holdoff_ns = [EDGE_RISING] * 4, [0] * 4, 0
        self.trigger_output = 0
        self.measuring = self.started = False
        self.flags = 0
        self.acq = None

    @property
    def is_pico(self) -> bool:
        return self.model == HWIDENT_PICO

    @property
    def base_resolution_ps(self) -> float:
        return 25.0 if self.is_pico else 250.0

    @property
    def resolution_ps(self) -> float:
        if self.mode == MODE_T2:
            return self.base_resolution_ps
        return self.base_resolution_ps * (1 << self.binning)


class _Acquisition:
    """One measurement: pulls records from the source, trims them at the acquisition time, and
    delivers them in time order (simulated or wall-clock pacing)."""

    def __init__(self, source: Any, dev: MockDevice, tacq_s: float, *, pacing: str, speed: float,
                 fifo_depth: int, default_sync_rate: float) -> None:
        self.source = source
        self.mode = "T3" if dev.mode == MODE_T3 else "T2"
        self.tacq_s = tacq_s
        self.pacing = pacing
        self.speed = speed
        self.fifo_depth = fifo_depth
        rate = float(getattr(source, "sync_rate_hz", 0.0) or default_sync_rate or 0.0)
        self.period_s = float(getattr(source, "sync_period_s", 0.0) or
                              (dev.sync_divider / rate if rate else 0.0))
        self.unit_s = float(getattr(source, "time_unit_s", 0.0) or dev.resolution_ps * 1e-12)
        self.wraps = 0
        self.pending = np.empty(0, np.uint32)
        self.pending_t = np.empty(0)
        self.generated_s = 0.0     # time up to which the source has been read
        self.delivered_s = 0.0     # time of the data delivered so far
        self.exhausted = False
        self.overrun = False
        self.t0 = time.monotonic()
        self.records_delivered = 0

    def _times(self, recs: np.ndarray) -> np.ndarray:
        d = decode(recs, self.mode, self.wraps)
        self.wraps = d.wraps
        scale = self.period_s if self.mode == "T3" else self.unit_s
        return d.abs_time * scale

    def _target(self) -> float:
        if self.pacing == "wall":
            return min(self.tacq_s, (time.monotonic() - self.t0) * self.speed)
        return self.tacq_s

    def elapsed_s(self) -> float:
        if self.pacing == "wall":
            return self._target()
        if self.pending.size == 0:
            return min(self.generated_s, self.tacq_s)
        return min(self.delivered_s, self.tacq_s)

    def done(self) -> bool:
        if self.pacing == "wall":
            return self._target() >= self.tacq_s
        return self.generated_s >= self.tacq_s and self.pending.size == 0

    def _fill(self, want: int, target: float) -> None:
        for _ in range(64):
            if self.pending.size >= want or self.exhausted or self.generated_s >= target:
                return
            chunk = np.asarray(self.source.next_records(max(want - self.pending.size, TTREADMIN)), dtype=np.uint32)
            src_time = getattr(self.source, "time_s", None)
            if chunk.size == 0 and src_time is None:
                self.exhausted = True            # a source without a clock that has run dry
                self.generated_s = self.tacq_s
                return
            t = self._times(chunk) if chunk.size else np.empty(0)
            late = np.flatnonzero(t >= self.tacq_s * (1 - 1e-12))   # the measurement covers [0, tacq)
            if late.size:                        # the acquisition time ends inside this chunk
                chunk, t = chunk[:late[0]], t[:late[0]]
                self.generated_s = self.tacq_s
            else:
                self.generated_s = max(self.generated_s, float(t[-1]) if t.size else 0.0,
                                       float(src_time) if src_time is not None else 0.0)
            self.pending = np.concatenate([self.pending, chunk])
            self.pending_t = np.concatenate([self.pending_t, t])

    def take(self, count: int) -> np.ndarray:
        if self.overrun:
            return np.empty(0, np.uint32)
        target = self._target()
        self._fill(count if self.pacing == "simulated" else self.fifo_depth + 1, target)
        n_avail = int(np.searchsorted(self.pending_t, target, side="right"))
        if self.pacing == "wall" and n_avail > self.fifo_depth:
            self.overrun = True                  # the card's FIFO overflowed: data is lost
            return np.empty(0, np.uint32)
        n = min(count, n_avail)
        out = self.pending[:n]
        if n:
            self.delivered_s = float(self.pending_t[n - 1])
        self.pending = self.pending[n:]
        self.pending_t = self.pending_t[n:]
        self.records_delivered += n
        return out


# ---- the library --------------------------------------------------------------------------------
class TH260MockLibrary:
    """Stand-in for ``th260lib64.dll`` / ``libth260.so``; see the module docstring.

    :param name: instrument name (the station passes it; ``make_model(spec, name, **options)``).
    :param model: ``"P"``/``"PICO"`` (CFD inputs, 25 ps) or ``"N"``/``"NANO"`` (edge triggers, 250 ps).
    :param n_channels: 1 (SINGLE) or 2 (DUAL) input channels.
    :param devices: device indices with a board (0..3).
    :param source: record source (object with ``next_records``, a path, or a mapping, see
        :func:`sim_instruments.record_sources.make_source`); default: the synthetic pulsed
        experiment seeded from ``seed`` (or the station's ``SimLab`` random generator).
    :param pacing: ``"simulated"`` (time advances with delivered records) or ``"wall"``.
    :param speed: wall-clock pacing speed-up factor.
    :param fifo_depth: records the card's FIFO holds (wall pacing only; an assumption, the
        hardware value is not in the public headers).
    :param options: the driver's options, passed on by the station (``device_index`` is used).
    """

    def __init__(self, name: str = "", *, model: str = "P", n_channels: int = 2,
                 devices: int | Sequence[int] = (0,), serial: str | None = None, source: Any = None,
                 seed: int | None = None, pacing: str = "simulated", speed: float = 1.0,
                 fifo_depth: int = 1 << 20, sync_rate_hz: float = 0.0, features: int | None = None,
                 partno: str = "MOCK", hw_version: str = "1.0", library_version: str = LIB_VERSION,
                 **options: Any) -> None:
        self.name = name or "th260-mock"
        #: the station also passes the driver's options (mode, device_index, serial, initial…);
        #: ``device_index`` places the simulated board there, the rest is kept for the twin
        self.options = options
        if "device_index" in options and devices == (0,):
            devices = (int(options["device_index"]),)
        m = str(model).strip().upper()
        if m in ("P", "PICO", HWIDENT_PICO.upper()):
            hw = HWIDENT_PICO
        elif m in ("N", "NANO", HWIDENT_NANO.upper()):
            hw = HWIDENT_NANO
        else:
            raise ValueError(f"unknown TimeHarp 260 model {model!r} (P/PICO or N/NANO)")
        if n_channels not in (1, 2):
            raise ValueError("a TimeHarp 260 has 1 or 2 input channels")
        if pacing not in ("simulated", "wall"):
            raise ValueError("pacing must be 'simulated' or 'wall'")
        idxs = [devices] if isinstance(devices, int) else list(devices)
        feats = features if features is not None else (
            FEATURE_DLL | FEATURE_TTTR | FEATURE_MARKERS | FEATURE_TRIGOUT
            | ((FEATURE_LOWRES | FEATURE_PROG_TD) if hw == HWIDENT_PICO else 0))
        self.devices: dict[int, MockDevice] = {}
        for i in idxs:
            if not 0 <= i < MAXDEVNUM:
                raise ValueError(f"device index {i} outside 0..{MAXDEVNUM - 1}")
            sn = serial if (serial and len(idxs) == 1) else f"{1000000 + i:07d}"
            d = MockDevice(i, sn[:MAXSTRLEN_SERIAL - 1], hw, n_channels, feats)
            d.reset_settings()
            self.devices[i] = d
        self.partno = partno[:MAXSTRLEN_PART - 1]
        self.hw_version = hw_version[:MAXSTRLEN_VERSION - 1]
        self.library_version = library_version[:MAXSTRLEN_LIBVER - 1]
        self.seed = seed
        self._source_spec = source
        self.source: Any = None if (source is None or isinstance(source, dict)) else make_source(source)
        self.pacing = pacing
        self.speed = float(speed)
        self.fifo_depth = int(fifo_depth)
        self.sync_rate_hz = float(sync_rate_hz)
        self.lab: Any = None                  #: set by SimLab.add
        self.disconnected = False             #: read by ModelTransport
        self.lock = threading.RLock()
        self.calls: deque[tuple[str, tuple]] = deque(maxlen=100000)  #: every call, for tests and the twin
        self._fail: dict[str, list[Any]] = {}  # function -> [code, remaining or None]
        self._unresponsive: int | None = None

    # ---- fault hooks ------------------------------------------------------------------------------
    def inject_flags(self, bits: int, devidx: int = 0) -> None:
        """Raise flag bits (e.g. ``FLAG_FIFOFULL``, ``FLAG_SYNC_LOST``) until the next StartMeas."""
        with self.lock:
            self.devices[devidx].flags |= int(bits)

    def inject_warnings(self, bits: int, devidx: int = 0) -> None:
        """Warning bits that ``TH260_GetWarnings`` reports in addition to the computed ones."""
        with self.lock:
            self.devices[devidx].warnings |= int(bits)

    def fail(self, function: str, code: int = E_ARG, *, times: int | None = 1) -> None:
        """Make ``function`` return ``code`` (``times`` calls, or always with None)."""
        if not hasattr(self, function):
            raise AttributeError(f"the TH260 library has no function {function}")
        with self.lock:
            self._fail[function] = [int(code), times]

    def stop_answering(self, code: int = E_DMA) -> None:
        """From now on every device call returns ``code`` (a board that stopped responding)."""
        self._unresponsive = int(code)

    def resume_answering(self) -> None:
        self._unresponsive = None

    def power_cycle(self) -> None:
        """All devices closed, all settings lost."""
        with self.lock:
            for d in self.devices.values():
                d.is_open = False
                d.mode = None
                d.reset_settings()
            self._unresponsive = None

    # ---- internals -----------------------------------------------------------------------------------
    def _log(self, fn: str, args: tuple) -> None:
        plain = tuple(a.value if isinstance(a, ctypes._SimpleCData) else
                      (a if isinstance(a, (int, float, str)) else type(a).__name__) for a in args)
        self.calls.append((fn, plain))

    def _injected(self, fn: str) -> int | None:
        f = self._fail.get(fn)
        if f is None:
            return None
        code, left = f
        if left is not None:
            left -= 1
            if left <= 0:
                del self._fail[fn]
            else:
                f[1] = left
        return code

    def _device(self, fn: str, devidx: Any, *, init: bool = True) -> tuple[MockDevice | None, int]:
        """(device, 0) if ``fn`` may run on it, else (None, error code)."""
        i = _arg_int(devidx, 1)
        if self._unresponsive is not None:
            return None, self._unresponsive
        code = self._injected(fn)
        if code is not None:
            return None, code
        d = self.devices.get(i)
        if not 0 <= i < MAXDEVNUM:
            return None, E_ARG
        if d is None or not d.is_open:
            return None, E_NOT_OPEN
        if init and d.mode is None:
            return None, E_NOT_INIT
        return d, OK

    def _channel(self, d: MockDevice, ch: Any, pos: int = 2) -> int | None:
        c = _arg_int(ch, pos)
        return c if 0 <= c < d.n_channels else None

    def _source_for_start(self) -> Any:
        if self.source is None:
            rng = None
            if self.seed is None and self.lab is not None and getattr(self.lab, "rng", None) is not None:
                rng = self.lab.rng
            spec = dict(self._source_spec) if isinstance(self._source_spec, dict) else {"kind": "synthetic"}
            if self.seed is not None and "seed" not in spec and spec.get("kind", "synthetic") == "synthetic":
                spec["seed"] = self.seed
            self.source = make_source(spec, rng=rng)
        return self.source

    def _settings(self, d: MockDevice, tacq_s: float) -> dict[str, Any]:
        return {"mode": "T3" if d.mode == MODE_T3 else "T2", "model": d.model,
                "resolution_s": d.resolution_ps * 1e-12, "base_resolution_s": d.base_resolution_ps * 1e-12,
                "sync_divider": d.sync_divider, "offset_s": d.offset_ns * 1e-9,
                "sync_offset_s": d.sync_offset_ps * 1e-12,
                "channel_offsets_s": {c: d.input_offset_ps[c] * 1e-12 for c in range(d.n_channels)},
                "enabled": {c: bool(d.input_enable[c]) for c in range(d.n_channels)},
                "acquisition_time_s": tacq_s}

    def _sync_rate(self) -> float:
        src = self.source if self.source is not None else self._source_for_start()
        return float(getattr(src, "sync_rate_hz", 0.0) or self.sync_rate_hz)

    def _count_rate(self, d: MockDevice, ch: int) -> float:
        if not d.input_enable[ch]:
            return 0.0
        src = self.source if self.source is not None else self._source_for_start()
        fn = getattr(src, "count_rates_hz", None)
        if fn is None:
            return 0.0
        rates = list(fn())
        return float(rates[ch]) if ch < len(rates) else 0.0

    # ---- library functions: general ---------------------------------------------------------------
    def TH260_GetLibraryVersion(self, version: Any) -> int:
        self._log("TH260_GetLibraryVersion", ())
        _write_str(version, self.library_version, MAXSTRLEN_LIBVER, 1)
        return OK

    def TH260_GetErrorString(self, errstring: Any, errcode: Any) -> int:
        code = _arg_int(errcode, 2)
        _write_str(errstring, error_text(code), MAXSTRLEN_ERRSTR, 1)
        return OK

    def TH260_OpenDevice(self, devidx: Any, serial: Any) -> int:
        with self.lock:
            self._log("TH260_OpenDevice", (devidx,))
            i = _arg_int(devidx, 1)
            if self._unresponsive is not None:
                return self._unresponsive
            code = self._injected("TH260_OpenDevice")
            if code is not None:
                return code
            if not 0 <= i < MAXDEVNUM:
                return E_ARG
            d = self.devices.get(i)
            if d is None:
                _write_str(serial, "", MAXSTRLEN_SERIAL, 2)
                return E_OPEN_FAIL
            _write_str(serial, d.serial, MAXSTRLEN_SERIAL, 2)
            d.is_open = True
            return OK

    def TH260_CloseDevice(self, devidx: Any) -> int:
        with self.lock:
            self._log("TH260_CloseDevice", (devidx,))
            i = _arg_int(devidx, 1)
            d = self.devices.get(i)
            if self._unresponsive is not None:
                return self._unresponsive
            if d is not None:
                d.is_open = False
                d.mode = None
                d.measuring = False
                d.acq = None
            return OK                           # "no harm to close all" (demos close 0..3)

    def TH260_Initialize(self, devidx: Any, mode: Any) -> int:
        with self.lock:
            self._log("TH260_Initialize", (devidx, mode))
            d, rc = self._device("TH260_Initialize", devidx, init=False)
            if rc:
                return rc
            m = _arg_int(mode, 2)
            if m not in (MODE_HIST, MODE_T2, MODE_T3):
                return E_MODE
            d.reset_settings()
            d.mode = m
            return OK

    def TH260_GetHardwareInfo(self, devidx: Any, model: Any, partno: Any, version: Any) -> int:
        with self.lock:
            d, rc = self._device("TH260_GetHardwareInfo", devidx)
            if rc:
                return rc
            _write_str(model, d.model, MAXSTRLEN_MODEL, 2)
            _write_str(partno, self.partno, MAXSTRLEN_PART, 3)
            _write_str(version, self.hw_version, MAXSTRLEN_VERSION, 4)
            return OK

    def TH260_GetSerialNumber(self, devidx: Any, serial: Any) -> int:
        with self.lock:
            d, rc = self._device("TH260_GetSerialNumber", devidx)
            if rc:
                return rc
            _write_str(serial, d.serial, MAXSTRLEN_SERIAL, 2)
            return OK

    def TH260_GetFeatures(self, devidx: Any, features: Any) -> int:
        with self.lock:
            d, rc = self._device("TH260_GetFeatures", devidx)
            if rc:
                return rc
            _out_int(features, 2).value = d.features
            return OK

    def TH260_GetBaseResolution(self, devidx: Any, resolution: Any, binsteps: Any) -> int:
        with self.lock:
            d, rc = self._device("TH260_GetBaseResolution", devidx)
            if rc:
                return rc
            _out_double(resolution, 2).value = d.base_resolution_ps
            _out_int(binsteps, 3).value = MAXBINSTEPS
            return OK

    def TH260_GetNumOfInputChannels(self, devidx: Any, nchannels: Any) -> int:
        with self.lock:
            d, rc = self._device("TH260_GetNumOfInputChannels", devidx)
            if rc:
                return rc
            _out_int(nchannels, 2).value = d.n_channels
            return OK

    # ---- settings ---------------------------------------------------------------------------------
    def _setter(self, fn: str, devidx: Any, args: tuple, apply: Callable[[MockDevice], int]) -> int:
        with self.lock:
            self._log(fn, (devidx,) + args)
            d, rc = self._device(fn, devidx)
            if rc:
                return rc
            return apply(d)

    def TH260_SetSyncDiv(self, devidx: Any, div: Any) -> int:
        def apply(d: MockDevice) -> int:
            v = _arg_int(div, 2)
            if v not in (1, 2, 4, 8):
                return E_ARG
            d.sync_divider = v
            return OK
        return self._setter("TH260_SetSyncDiv", devidx, (div,), apply)

    def TH260_SetSyncCFD(self, devidx: Any, level: Any, zc: Any) -> int:
        def apply(d: MockDevice) -> int:
            lv, z = _arg_int(level, 2), _arg_int(zc, 3)
            if not d.is_pico:
                return E_UNSUPPORTED
            if not (CFDLVLMIN <= lv <= CFDLVLMAX and CFDZCMIN <= z <= CFDZCMAX):
                return E_ARG
            d.sync_level_mv, d.sync_zc_mv = lv, z
            return OK
        return self._setter("TH260_SetSyncCFD", devidx, (level, zc), apply)

    def TH260_SetSyncEdgeTrg(self, devidx: Any, level: Any, edge: Any) -> int:
        def apply(d: MockDevice) -> int:
            lv, e = _arg_int(level, 2), _arg_int(edge, 3)
            if d.is_pico:
                return E_UNSUPPORTED
            if not (TRGLVLMIN <= lv <= TRGLVLMAX and e in (0, 1)):
                return E_ARG
            d.sync_level_mv, d.sync_edge = lv, e
            return OK
        return self._setter("TH260_SetSyncEdgeTrg", devidx, (level, edge), apply)

    def TH260_SetSyncChannelOffset(self, devidx: Any, value: Any) -> int:
        def apply(d: MockDevice) -> int:
            v = _arg_int(value, 2)
            if not CHANOFFSMIN <= v <= CHANOFFSMAX:
                return E_ARG
            d.sync_offset_ps = v
            return OK
        return self._setter("TH260_SetSyncChannelOffset", devidx, (value,), apply)

    def TH260_SetInputCFD(self, devidx: Any, channel: Any, level: Any, zc: Any) -> int:
        def apply(d: MockDevice) -> int:
            c, lv, z = self._channel(d, channel), _arg_int(level, 3), _arg_int(zc, 4)
            if not d.is_pico:
                return E_UNSUPPORTED
            if c is None or not (CFDLVLMIN <= lv <= CFDLVLMAX and CFDZCMIN <= z <= CFDZCMAX):
                return E_ARG
            d.input_level_mv[c], d.input_zc_mv[c] = lv, z
            return OK
        return self._setter("TH260_SetInputCFD", devidx, (channel, level, zc), apply)

    def TH260_SetInputEdgeTrg(self, devidx: Any, channel: Any, level: Any, edge: Any) -> int:
        def apply(d: MockDevice) -> int:
            c, lv, e = self._channel(d, channel), _arg_int(level, 3), _arg_int(edge, 4)
            if d.is_pico:
                return E_UNSUPPORTED
            if c is None or not (TRGLVLMIN <= lv <= TRGLVLMAX and e in (0, 1)):
                return E_ARG
            d.input_level_mv[c], d.input_edge[c] = lv, e
            return OK
        return self._setter("TH260_SetInputEdgeTrg", devidx, (channel, level, edge), apply)

    def TH260_SetInputChannelOffset(self, devidx: Any, channel: Any, value: Any) -> int:
        def apply(d: MockDevice) -> int:
            c, v = self._channel(d, channel), _arg_int(value, 3)
            if c is None or not CHANOFFSMIN <= v <= CHANOFFSMAX:
                return E_ARG
            d.input_offset_ps[c] = v
            return OK
        return self._setter("TH260_SetInputChannelOffset", devidx, (channel, value), apply)

    def TH260_SetInputChannelEnable(self, devidx: Any, channel: Any, enable: Any) -> int:
        def apply(d: MockDevice) -> int:
            c, v = self._channel(d, channel), _arg_int(enable, 3)
            if c is None or v not in (0, 1):
                return E_ARG
            d.input_enable[c] = v
            return OK
        return self._setter("TH260_SetInputChannelEnable", devidx, (channel, enable), apply)

    def TH260_SetInputDeadTime(self, devidx: Any, channel: Any, tdcode: Any) -> int:
        def apply(d: MockDevice) -> int:
            c, v = self._channel(d, channel), _arg_int(tdcode, 3)
            if not (d.is_pico and d.features & FEATURE_PROG_TD):
                return E_UNSUPPORTED
            if c is None or not TDCODEMIN <= v <= TDCODEMAX:
                return E_ARG
            d.input_deadtime[c] = v
            return OK
        return self._setter("TH260_SetInputDeadTime", devidx, (channel, tdcode), apply)

    def TH260_SetTimingMode(self, devidx: Any, mode: Any) -> int:
        def apply(d: MockDevice) -> int:
            v = _arg_int(mode, 2)
            if not d.is_pico:
                return E_UNSUPPORTED
            if v not in (0, 1):
                return E_ARG
            d.timing_mode = v
            return OK
        return self._setter("TH260_SetTimingMode", devidx, (mode,), apply)

    def TH260_SetBinning(self, devidx: Any, binning: Any) -> int:
        def apply(d: MockDevice) -> int:
            v = _arg_int(binning, 2)
            if not 0 <= v < MAXBINSTEPS:
                return E_ARG
            d.binning = v
            return OK
        return self._setter("TH260_SetBinning", devidx, (binning,), apply)

    def TH260_SetOffset(self, devidx: Any, offset: Any) -> int:
        def apply(d: MockDevice) -> int:
            v = _arg_int(offset, 2)
            if not OFFSETMIN <= v <= OFFSETMAX:
                return E_ARG
            d.offset_ns = v
            return OK
        return self._setter("TH260_SetOffset", devidx, (offset,), apply)

    def TH260_SetMeasControl(self, devidx: Any, control: Any, startedge: Any, stopedge: Any) -> int:
        def apply(d: MockDevice) -> int:
            c, a, b = _arg_int(control, 2), _arg_int(startedge, 3), _arg_int(stopedge, 4)
            if c not in (0, 1, 2, 3) or a not in (0, 1) or b not in (0, 1):
                return E_ARG
            d.meas_control = (c, a, b)
            return OK
        return self._setter("TH260_SetMeasControl", devidx, (control, startedge, stopedge), apply)

    def TH260_SetTriggerOutput(self, devidx: Any, period: Any) -> int:
        def apply(d: MockDevice) -> int:
            v = _arg_int(period, 2)
            if not d.features & FEATURE_TRIGOUT:
                return E_UNSUPPORTED
            if not TRIGOUTMIN <= v <= TRIGOUTMAX:
                return E_ARG
            d.trigger_output = v
            return OK
        return self._setter("TH260_SetTriggerOutput", devidx, (period,), apply)

    def TH260_SetMarkerEdges(self, devidx: Any, me1: Any, me2: Any, me3: Any, me4: Any) -> int:
        def apply(d: MockDevice) -> int:
            v = [_arg_int(x, i + 2) for i, x in enumerate((me1, me2, me3, me4))]
            if any(e not in (0, 1) for e in v):
                return E_ARG
            d.marker_edges = v
            return OK
        return self._setter("TH260_SetMarkerEdges", devidx, (me1, me2, me3, me4), apply)

    def TH260_SetMarkerEnable(self, devidx: Any, en1: Any, en2: Any, en3: Any, en4: Any) -> int:
        def apply(d: MockDevice) -> int:
            v = [_arg_int(x, i + 2) for i, x in enumerate((en1, en2, en3, en4))]
            if any(e not in (0, 1) for e in v):
                return E_ARG
            d.marker_enable = v
            return OK
        return self._setter("TH260_SetMarkerEnable", devidx, (en1, en2, en3, en4), apply)

    def TH260_SetMarkerHoldoffTime(self, devidx: Any, holdofftime: Any) -> int:
        def apply(d: MockDevice) -> int:
            v = _arg_int(holdofftime, 2)
            if not HOLDOFFMIN <= v <= HOLDOFFMAX:
                return E_ARG
            d.marker_holdoff_ns = v
            return OK
        return self._setter("TH260_SetMarkerHoldoffTime", devidx, (holdofftime,), apply)

    # ---- measurement ----------------------------------------------------------------------------
    def TH260_StartMeas(self, devidx: Any, tacq: Any) -> int:
        with self.lock:
            self._log("TH260_StartMeas", (devidx, tacq))
            d, rc = self._device("TH260_StartMeas", devidx)
            if rc:
                return rc
            ms = _arg_int(tacq, 2)
            if not ACQTMIN <= ms <= ACQTMAX:
                return E_ARG
            if d.mode not in (MODE_T2, MODE_T3):
                return E_MODE                   # histogramming is not simulated
            src = self._source_for_start()
            start = getattr(src, "start", None)
            if start is not None:
                start(self._settings(d, ms / 1000.0))
            d.flags &= ~(FLAG_FIFOFULL | FLAG_SYNC_LOST | FLAG_EVTS_DROPPED)
            d.acq = _Acquisition(src, d, ms / 1000.0, pacing=self.pacing, speed=self.speed,
                                 fifo_depth=self.fifo_depth, default_sync_rate=self.sync_rate_hz)
            d.tacq_ms = ms
            d.measuring = d.started = True
            return OK

    def TH260_StopMeas(self, devidx: Any) -> int:
        with self.lock:
            self._log("TH260_StopMeas", (devidx,))
            d, rc = self._device("TH260_StopMeas", devidx)
            if rc:
                return rc
            d.measuring = False
            return OK

    def TH260_CTCStatus(self, devidx: Any, ctcstatus: Any) -> int:
        with self.lock:
            d, rc = self._device("TH260_CTCStatus", devidx)
            if rc:
                return rc
            done = d.acq is None or not d.measuring or d.acq.done()
            _out_int(ctcstatus, 2).value = 1 if done else 0
            return OK

    def TH260_GetElapsedMeasTime(self, devidx: Any, elapsed: Any) -> int:
        with self.lock:
            d, rc = self._device("TH260_GetElapsedMeasTime", devidx)
            if rc:
                return rc
            _out_double(elapsed, 2).value = (d.acq.elapsed_s() * 1000.0) if d.acq else 0.0
            return OK

    def TH260_GetResolution(self, devidx: Any, resolution: Any) -> int:
        with self.lock:
            d, rc = self._device("TH260_GetResolution", devidx)
            if rc:
                return rc
            _out_double(resolution, 2).value = d.resolution_ps
            return OK

    def TH260_GetSyncRate(self, devidx: Any, syncrate: Any) -> int:
        with self.lock:
            d, rc = self._device("TH260_GetSyncRate", devidx)
            if rc:
                return rc
            _out_int(syncrate, 2).value = int(round(self._sync_rate()))
            return OK

    def TH260_GetSyncPeriod(self, devidx: Any, period: Any) -> int:
        with self.lock:
            d, rc = self._device("TH260_GetSyncPeriod", devidx)
            if rc:
                return rc
            r = self._sync_rate()
            _out_double(period, 2).value = (d.sync_divider / r) if r else 0.0
            return OK

    def TH260_GetCountRate(self, devidx: Any, channel: Any, cntrate: Any) -> int:
        with self.lock:
            d, rc = self._device("TH260_GetCountRate", devidx)
            if rc:
                return rc
            c = self._channel(d, channel)
            if c is None:
                return E_ARG
            _out_int(cntrate, 3).value = int(round(self._count_rate(d, c)))
            return OK

    def TH260_GetFlags(self, devidx: Any, flags: Any) -> int:
        with self.lock:
            d, rc = self._device("TH260_GetFlags", devidx)
            if rc:
                return rc
            f = d.flags
            if d.acq is not None and d.acq.overrun:
                f |= FLAG_FIFOFULL
            _out_int(flags, 2).value = f
            return OK

    def TH260_GetWarnings(self, devidx: Any, warnings: Any) -> int:
        with self.lock:
            d, rc = self._device("TH260_GetWarnings", devidx)
            if rc:
                return rc
            w = d.warnings
            if self._sync_rate() == 0 and d.mode == MODE_T3:
                w |= WARNING_SYNC_RATE_ZERO
            if any(d.input_enable[c] and self._count_rate(d, c) == 0 for c in range(d.n_channels)):
                w |= WARNING_INPT_RATE_ZERO
            _out_int(warnings, 2).value = w
            return OK

    def TH260_GetWarningsText(self, devidx: Any, text: Any, warnings: Any) -> int:
        with self.lock:
            d, rc = self._device("TH260_GetWarningsText", devidx)
            if rc:
                return rc
            w = _arg_int(warnings, 3)
            lines = [t for bit, t in _WARNING_TEXT.items() if w & bit]
            _write_str(text, "\n".join(lines), MAXSTRLEN_WRNTXT, 2)
            return OK

    def TH260_ReadFiFo(self, devidx: Any, buffer: Any, count: Any, nactual: Any) -> int:
        with self.lock:
            self._log("TH260_ReadFiFo", (devidx, count))
            d, rc = self._device("TH260_ReadFiFo", devidx)
            if rc:
                return rc
            n_req = _arg_int(count, 3)
            out = _out_int(nactual, 4)
            addr, size = _record_buffer(buffer, 2)
            if d.mode not in (MODE_T2, MODE_T3):
                return E_MODE
            if not TTREADMIN <= n_req <= TTREADMAX:
                return E_ARG
            if size is not None and size < 4 * n_req:
                raise MockMemoryViolation(f"TH260_ReadFiFo may write {n_req} records ({4 * n_req} bytes) "
                                          f"into a {size}-byte buffer")
            if not d.started or d.acq is None:
                return E_MODE
            recs = d.acq.take(n_req) if d.measuring else np.empty(0, np.uint32)
            recs = np.ascontiguousarray(recs, dtype=np.uint32)
            if recs.size:
                ctypes.memmove(addr, recs.ctypes.data, recs.nbytes)
            out.value = int(recs.size)
            return OK

    # ---- not a byte-stream device ---------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        raise TypeError("the TimeHarp 260 mock is a library, not a byte-stream device: "
                        "use drivers.picoquant_th260.TimeHarp260, which calls its functions")

    def take(self, max_bytes: int | None = None) -> bytes:
        return b""

    def __repr__(self) -> str:
        return f"<TH260MockLibrary {self.name!r} devices={sorted(self.devices)}>"


__all__ = ["TH260MockLibrary", "MockDevice", "MockMemoryViolation", "error_text", "ERROR_NAMES"]
