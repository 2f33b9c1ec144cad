"""PicoQuant TimeHarp 260 (PICO and NANO) time tagger through PicoQuant's TH260Lib (ctypes).

Sources checked (public, PicoQuant GitHub ``PicoQuant/TH260-Demos``):

- ``64 bit/C/histomode/th260lib.h`` (v3.0.0.1): every prototype used here, e.g.
  ``int TH260_ReadFiFo(int devidx, unsigned int* buffer, int count, int* nactual)``;
- ``64 bit/C/histomode_extcontrol/th260defin.h`` (v3.0.0.1): ``TTREADMAX`` = 131072,
  ``TTREADMIN`` = 128, ``MODE_T2`` = 2, ``MODE_T3`` = 3, ``SYNCDIVMIN/MAX`` = 1/8, trigger and CFD
  level ranges (mV), ``CHANOFFSMIN/MAX`` = ±99999 ps, ``OFFSETMAX`` = 1e8 ns, ``ACQTMIN/MAX`` =
  1 ms / 360000000 ms, ``FLAG_*``, ``WARNING_*``, ``FEATURE_*``, string buffer sizes,
  ``HWIDENT_PICO/NANO`` = "TimeHarp 260 P" / "TimeHarp 260 N";
- ``32 bit/C/tttrmode/errorcodes.h`` (v3.0.0.1): the ``TH260_ERROR_*`` codes;
- ``Linux/demos64/C/tttrmode/tttrmode.c`` and ``Windows/demos/64 bit/Python/tttrmode.py``
  (TH260LIB 3.1/3.2): the call order (Open -> Initialize -> GetHardwareInfo ->
  GetNumOfInputChannels -> SetSyncDiv -> SetSyncCFD (P) / SetSyncEdgeTrg (N) -> input triggers ->
  offsets -> SetBinning -> SetOffset -> GetResolution -> rates -> GetWarnings -> StartMeas ->
  loop {GetFlags (FIFO full -> stop), ReadFiFo(TTREADMAX), CTCStatus when nothing came} ->
  StopMeas -> CloseDevice), the library file names (``th260lib64.dll``; ``libth260.so`` in the
  Python demo, ``/usr/local/lib64/th260/th260lib.so`` in the Linux C makefile).
- Record layout (TimeHarp 260 = HydraHarp V2): ``PTU/Python/Read_PTU.py`` in
  ``PicoQuant/PicoQuant-Time-Tagged-File-Format-Demos``.

Assumed (not in the headers): the sync divider takes powers of two (1, 2, 4, 8); the library is
thread-safe enough for one reader thread when calls are serialised (the driver holds a lock
around every call).

Settings are declared as :class:`labctl.instrument.base.Setting` so the station's ``limits:``,
``check()`` and the sequence compiler work as for every driver. Their "commands" are the
driver's own pseudo-commands (``sync_divider 4``, ``input_level 0 -0.05``) that
:meth:`TimeHarp260.write` turns into library calls; their readback comes from the driver's shadow
of the values it set, because TH260Lib has no getters for them. Values are SI (V, s); the library
gets mV, ps and ns integers.
"""
from __future__ import annotations

import ctypes
import logging
import math
import os
import sys
import threading
import time
import warnings
from collections import deque
from ctypes import POINTER, byref, c_char, c_double, c_int, c_uint
from typing import Any, Callable

import numpy as np

from labctl.errors import ConnectionLost, InputError, InstrumentError, SettingError
from labctl.instrument.base import Component, Instrument, Setting
from labctl.instrument.transport import TransportBase

log = logging.getLogger("labctl.drivers.th260")

# ---- th260defin.h ------------------------------------------------------------------------------
MAXSTRLEN_LIBVER = 8
MAXSTRLEN_ERRSTR = 40
MAXSTRLEN_SERIAL = 8
MAXSTRLEN_MODEL = 16
MAXSTRLEN_PART = 8
MAXSTRLEN_VERSION = 16
MAXSTRLEN_WRNTXT = 16384
HWIDENT_PICO = "TimeHarp 260 P"
HWIDENT_NANO = "TimeHarp 260 N"
MAXDEVNUM = 4
MAXINPCHAN = 2
TTREADMAX = 131072
TTREADMIN = 128
MODE_HIST, MODE_T2, MODE_T3 = 0, 2, 3
EDGE_RISING, EDGE_FALLING = 1, 0
FEATURE_DLL, FEATURE_TTTR, FEATURE_MARKERS, FEATURE_LOWRES, FEATURE_TRIGOUT, FEATURE_PROG_TD = (
    0x0001, 0x0002, 0x0004, 0x0008, 0x0010, 0x0020)
FLAG_OVERFLOW = 0x0001
FLAG_FIFOFULL = 0x0002
FLAG_SYNC_LOST = 0x0004
FLAG_EVTS_DROPPED = 0x0008
FLAG_SYSERROR = 0x0010
FLAG_SOFTERROR = 0x0020
SYNC_DIVIDERS = (1, 2, 4, 8)
TRGLVL_MV = (-1200, 1200)     # NANO edge trigger
CFDLVL_MV = (-1200, 0)        # PICO CFD level
CFDZC_MV = (-40, 0)           # PICO CFD zero cross
CHANOFFS_PS = (-99999, 99999)
OFFSET_NS = (0, 100000000)
ACQT_MS = (1, 360000000)
TRIGOUT_MAX = 16777215        # 100 ns units
HOLDOFF_NS = (0, 25500)

#: errorcodes.h
ERROR_NAMES: dict[int, str] = {
    0: "TH260_ERROR_NONE",
    -1: "TH260_ERROR_DEVICE_OPEN_FAIL", -2: "TH260_ERROR_DEVICE_BUSY",
    -3: "TH260_ERROR_DEVICE_HEVENT_FAIL", -4: "TH260_ERROR_DEVICE_CALLBSET_FAIL",
    -5: "TH260_ERROR_DEVICE_BARMAP_FAIL", -6: "TH260_ERROR_DEVICE_CLOSE_FAIL",
    -7: "TH260_ERROR_DEVICE_RESET_FAIL", -8: "TH260_ERROR_DEVICE_GETVERSION_FAIL",
    -9: "TH260_ERROR_DEVICE_VERSION_MISMATCH", -10: "TH260_ERROR_DEVICE_NOT_OPEN",
    -11: "TH260_ERROR_DEVICE_LOCKED", -12: "TH260_ERROR_DEVICE_DRIVERVER_MISMATCH",
    -16: "TH260_ERROR_INSTANCE_RUNNING", -17: "TH260_ERROR_INVALID_ARGUMENT",
    -18: "TH260_ERROR_INVALID_MODE", -19: "TH260_ERROR_INVALID_OPTION",
    -20: "TH260_ERROR_INVALID_MEMORY", -21: "TH260_ERROR_INVALID_RDATA",
    -22: "TH260_ERROR_NOT_INITIALIZED", -23: "TH260_ERROR_NOT_CALIBRATED",
    -24: "TH260_ERROR_DMA_FAIL", -25: "TH260_ERROR_XTDEVICE_FAIL", -26: "TH260_ERROR_FPGACONF_FAIL",
    -27: "TH260_ERROR_IFCONF_FAIL", -28: "TH260_ERROR_FIFORESET_FAIL",
    -29: "TH260_ERROR_THREADSTATE_FAIL", -30: "TH260_ERROR_THREADLOCK_FAIL",
    -32: "TH260_ERROR_USB_GETDRIVERVER_FAIL", -33: "TH260_ERROR_USB_DRIVERVER_MISMATCH",
    -34: "TH260_ERROR_USB_GETIFINFO_FAIL", -35: "TH260_ERROR_USB_HISPEED_FAIL",
    -36: "TH260_ERROR_USB_VCMD_FAIL", -37: "TH260_ERROR_USB_BULKRD_FAIL",
    -40: "TH260_ERROR_LANEUP_TIMEOUT", -41: "TH260_ERROR_DONEALL_TIMEOUT",
    -42: "TH260_ERROR_MB_ACK_TIMEOUT", -43: "TH260_ERROR_MACTIVE_TIMEOUT",
    -44: "TH260_ERROR_MEMCLEAR_FAIL", -45: "TH260_ERROR_MEMTEST_FAIL", -46: "TH260_ERROR_CALIB_FAIL",
    -47: "TH260_ERROR_REFSEL_FAIL", -48: "TH260_ERROR_STATUS_FAIL", -49: "TH260_ERROR_MODNUM_FAIL",
    -50: "TH260_ERROR_DIGMUX_FAIL", -51: "TH260_ERROR_MODMUX_FAIL",
    -52: "TH260_ERROR_MODFWPCB_MISMATCH", -53: "TH260_ERROR_MODFWVER_MISMATCH",
    -54: "TH260_ERROR_MODPROPERTY_MISMATCH", -55: "TH260_ERROR_INVALID_MAGIC",
    -56: "TH260_ERROR_INVALID_LENGTH",
    -64: "TH260_ERROR_EEPROM_F01", -65: "TH260_ERROR_EEPROM_F02", -66: "TH260_ERROR_EEPROM_F03",
    -67: "TH260_ERROR_EEPROM_F04", -68: "TH260_ERROR_EEPROM_F05", -69: "TH260_ERROR_EEPROM_F06",
    -70: "TH260_ERROR_EEPROM_F07", -71: "TH260_ERROR_EEPROM_F08", -72: "TH260_ERROR_EEPROM_F09",
    -73: "TH260_ERROR_EEPROM_F10", -74: "TH260_ERROR_EEPROM_F11",
    -80: "TH260_ERROR_UNSUPPORTED_FUNCTION",
}
#: codes meaning the link to the board failed (raised as ConnectionLost)
LINK_ERRORS = frozenset({-10, -24, -25, -28, -32, -33, -34, -35, -36, -37, -40, -41, -42, -43, -48})

_FLAG_ERRORS = {
    FLAG_FIFOFULL: "FIFO overrun (FLAG_FIFOFULL): the card's FIFO filled up because records were "
                   "not read fast enough; the records after the overrun are lost",
    FLAG_SYNC_LOST: "sync lost (FLAG_SYNC_LOST): the sync signal stopped or became irregular "
                    "during a T3 measurement; check the laser trigger and the sync level",
    FLAG_SYSERROR: "hardware error (FLAG_SYSERROR): contact PicoQuant support",
    FLAG_SOFTERROR: "software error (FLAG_SOFTERROR): contact PicoQuant support",
}

# ---- ctypes prototypes (th260lib.h) -------------------------------------------------------------
_I, _PI, _PD, _PC, _PU = c_int, POINTER(c_int), POINTER(c_double), POINTER(c_char), POINTER(c_uint)
PROTOTYPES: dict[str, tuple] = {
    "TH260_GetLibraryVersion": (_PC,),
    "TH260_GetErrorString": (_PC, _I),
    "TH260_OpenDevice": (_I, _PC),
    "TH260_CloseDevice": (_I,),
    "TH260_Initialize": (_I, _I),
    "TH260_GetHardwareInfo": (_I, _PC, _PC, _PC),
    "TH260_GetSerialNumber": (_I, _PC),
    "TH260_GetFeatures": (_I, _PI),
    "TH260_GetBaseResolution": (_I, _PD, _PI),
    "TH260_GetNumOfInputChannels": (_I, _PI),
    "TH260_SetSyncDiv": (_I, _I),
    "TH260_SetSyncCFD": (_I, _I, _I),
    "TH260_SetSyncEdgeTrg": (_I, _I, _I),
    "TH260_SetSyncChannelOffset": (_I, _I),
    "TH260_SetInputCFD": (_I, _I, _I, _I),
    "TH260_SetInputEdgeTrg": (_I, _I, _I, _I),
    "TH260_SetInputChannelOffset": (_I, _I, _I),
    "TH260_SetInputChannelEnable": (_I, _I, _I),
    "TH260_SetBinning": (_I, _I),
    "TH260_SetOffset": (_I, _I),
    "TH260_SetTriggerOutput": (_I, _I),
    "TH260_StartMeas": (_I, _I),
    "TH260_StopMeas": (_I,),
    "TH260_CTCStatus": (_I, _PI),
    "TH260_GetResolution": (_I, _PD),
    "TH260_GetSyncRate": (_I, _PI),
    "TH260_GetCountRate": (_I, _I, _PI),
    "TH260_GetFlags": (_I, _PI),
    "TH260_GetElapsedMeasTime": (_I, _PD),
    "TH260_GetWarnings": (_I, _PI),
    "TH260_GetWarningsText": (_I, _PC, _I),
    "TH260_SetMarkerEdges": (_I, _I, _I, _I, _I),
    "TH260_SetMarkerEnable": (_I, _I, _I, _I, _I),
    "TH260_SetMarkerHoldoffTime": (_I, _I),
    "TH260_ReadFiFo": (_I, _PU, _I, _PI),
}

ENV_LIBRARY = "LABCTL_TH260_LIB"
INSTALL_HINT = ("install PicoQuant's TimeHarp 260 software with its programming library TH260Lib "
                "(Windows: th260lib64.dll from the TH260Lib installer; Linux: the TH260 Linux library "
                "package, installed as /usr/local/lib64/th260/th260lib.so, plus its kernel driver), "
                f"or point {ENV_LIBRARY} at the library file, or run with --sim")


# ---- errors and warnings ------------------------------------------------------------------------
class TH260Error(InstrumentError):
    """A TH260Lib function returned an error code."""

    def __init__(self, instrument: str, function: str, code: int, text: str) -> None:
        self.function = function
        self.code = code
        self.code_name = ERROR_NAMES.get(code, "unknown error code")
        self.text = text
        super().__init__(instrument, function,
                         f"{function} returned {code} ({self.code_name}): {text or 'no description'}")


class TH260LinkError(TH260Error, ConnectionLost):
    """A TH260Lib error meaning the board no longer answers (DMA, FIFO reset, timeouts…)."""


class TH260LibraryNotFound(ConnectionLost):
    """The vendor library could not be loaded."""


class TH260StreamError(InstrumentError):
    """The card reported an error flag during a measurement (FIFO overrun, sync lost…)."""

    def __init__(self, instrument: str, flags: int, message: str) -> None:
        self.flags = flags
        super().__init__(instrument, "TH260_GetFlags", message)


class TH260Warning(UserWarning):
    """A TimeHarp warning (GetWarnings, dropped events): the data may be incomplete."""


class RecordsDroppedWarning(TH260Warning):
    """The driver's bounded record buffer was full: records were dropped (counted)."""


# ---- library loading ----------------------------------------------------------------------------
def library_candidates(platform: str | None = None) -> list[str]:
    """File names / paths tried for the vendor library, in order."""
    platform = platform or sys.platform
    if platform.startswith("win"):
        return ["th260lib64.dll"] if sys.maxsize > 2 ** 32 else ["th260lib.dll"]
    return ["libth260.so", "/usr/local/lib64/th260/th260lib.so", "/usr/local/lib/th260/th260lib.so",
            "th260lib.so"]


def declare_prototypes(lib: Any) -> None:
    """Set ``argtypes``/``restype`` of every function the driver uses (real ctypes libraries)."""
    for fname, argtypes in PROTOTYPES.items():
        fn = getattr(lib, fname, None)
        if fn is None:
            continue  # an older library without this function: the driver raises when it is used
        fn.argtypes = list(argtypes)
        fn.restype = c_int


def load_library(path: str | None = None, *, instrument: str = "th260") -> Any:
    """Load TH260Lib through ctypes. ``path`` (or the ``LABCTL_TH260_LIB`` environment variable)
    names the file; otherwise the usual names are tried. Raises :class:`TH260LibraryNotFound`
    naming every file tried and how to install the library."""
    explicit = path or os.environ.get(ENV_LIBRARY)
    candidates = [explicit] if explicit else library_candidates()
    loader: Callable[[str], Any] = getattr(ctypes, "WinDLL", ctypes.CDLL) if sys.platform.startswith("win") else ctypes.CDLL
    tried = []
    for cand in candidates:
        try:
            lib = loader(cand)
        except OSError as e:
            tried.append(f"{cand} ({e})")
            continue
        declare_prototypes(lib)
        log.info("%s: loaded TimeHarp 260 library %s", instrument, cand)
        return lib
    raise TH260LibraryNotFound(instrument, None, "cannot load the TimeHarp 260 library TH260Lib; tried "
                               + "; ".join(tried) + " — " + INSTALL_HINT)


def parse_resource(resource: str) -> int:
    """``TH260::0`` -> device index 0 (0..3)."""
    parts = resource.split("::")
    if len(parts) == 2 and parts[0].upper() == "TH260":
        try:
            idx = int(parts[1])
        except ValueError:
            idx = -1
        if 0 <= idx < MAXDEVNUM:
            return idx
    raise InputError(f"TimeHarp 260 resource {resource!r} is not of the form TH260::<device index>",
                     fix=f"write e.g. 'TH260::0' (device index 0..{MAXDEVNUM - 1}, as TH260_OpenDevice counts them)")


class TH260Transport(TransportBase):
    """Carries the loaded library and the device index to the driver. The TimeHarp is not a
    byte-stream device: text I/O on this transport is a programming error."""

    def __init__(self, resource: str = "TH260::0", *, lib: Any = None, library_path: str | None = None,
                 device_index: int | None = None, **kw: Any) -> None:
        super().__init__(resource, **kw)
        self.device_index = device_index if device_index is not None else parse_resource(resource)
        self.lib = lib if lib is not None else load_library(library_path, instrument=self.name)

    def _send(self, data: bytes) -> None:
        raise InstrumentError(self.name, self._last_command,
                              "the TimeHarp 260 is driven through its library, not a text protocol")

    _receive_until = _send  # type: ignore[assignment]
    _receive = _send        # type: ignore[assignment]


# ---- bounded record buffer ----------------------------------------------------------------------
def _overflow_words(chunk: np.ndarray) -> np.ndarray:
    """Overflow records carrying the same number of wraps as the overflow records in ``chunk``
    (TimeHarp 260 V2 layout: special bit 31, channel 63; the count field is 0..1023 (T3) or
    25 bits (T2); 0 means 1). Used to keep the time base when a chunk is dropped."""
    r = chunk.astype(np.int64)
    ovf = ((r >> 31) == 1) & (((r >> 25) & 0x3F) == 63)
    if not ovf.any():
        return np.empty(0, np.uint32)
    return r[ovf].astype(np.uint32)


class RecordBuffer:
    """Chunks of records between the reader thread and the caller, bounded in bytes.

    ``put`` never blocks: a chunk that does not fit is dropped and counted; its overflow records
    are kept (a few bytes) so the absolute time of every later record stays right.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self._chunks: deque[np.ndarray] = deque()
        self.nbytes = 0
        self.dropped_records = 0
        self.dropped_chunks = 0
        self.records_in = 0
        self.cond = threading.Condition()

    def put(self, chunk: np.ndarray) -> bool:
        with self.cond:
            self.records_in += chunk.size
            if self.nbytes + chunk.nbytes > self.max_bytes:
                keep = _overflow_words(chunk)
                self.dropped_records += chunk.size - keep.size
                self.dropped_chunks += 1
                if keep.size:
                    self._chunks.append(keep)
                    self.nbytes += keep.nbytes
                self.cond.notify_all()
                return False
            self._chunks.append(chunk)
            self.nbytes += chunk.nbytes
            self.cond.notify_all()
            return True

    def take_all(self, timeout: float, done: threading.Event) -> list[np.ndarray]:
        deadline = time.monotonic() + max(0.0, timeout)
        with self.cond:
            while not self._chunks and not done.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            out = list(self._chunks)
            self._chunks.clear()
            self.nbytes = 0
            return out

    def notify(self) -> None:
        with self.cond:
            self.cond.notify_all()


class _Stream:
    def __init__(self, acquisition_time_s: float, max_bytes: int) -> None:
        self.acquisition_time_s = acquisition_time_s
        self.buffer = RecordBuffer(max_bytes)
        self.stop = threading.Event()
        self.done = threading.Event()
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.error_reported = False
        self.finished = False           # the acquisition time elapsed (CTCStatus)
        self.reads = 0
        self.records_read = 0
        self.flags_seen = 0
        self.started_at = time.monotonic()
        self.ended_at: float | None = None
        self.warnings: deque[tuple[type, str]] = deque()
        self.reported_drops = 0


# ---- components ---------------------------------------------------------------------------------
def _level_limits(comp: Component) -> tuple[float, float]:
    inst = comp.instrument
    lo, hi = CFDLVL_MV if getattr(inst, "is_pico", None) is True else TRGLVL_MV
    return lo * 1e-3, hi * 1e-3


def _binning_limits(comp: Component) -> tuple[float, float]:
    steps = getattr(comp.instrument, "_binsteps", None) or 22
    return 0, steps - 1


class Channel(Component):
    """One detector input (0-based, as TH260Lib counts them)."""

    input_level = Setting("? input_level {ch}", "input_level {ch} {value}", unit="V", limits=_level_limits,
                          step=1e-3, doc="trigger level (NANO edge trigger) or CFD level (PICO)")
    input_edge = Setting("? input_edge {ch}", "input_edge {ch} {value}",
                         mapping={"rising": str(EDGE_RISING), "falling": str(EDGE_FALLING)},
                         doc="trigger edge (NANO only)")
    input_zero_cross = Setting("? input_zero_cross {ch}", "input_zero_cross {ch} {value}", unit="V",
                               limits=(CFDZC_MV[0] * 1e-3, CFDZC_MV[1] * 1e-3), step=1e-3,
                               doc="CFD zero-cross level (PICO only)")
    input_offset = Setting("? input_offset {ch}", "input_offset {ch} {value}", unit="s",
                           limits=(CHANOFFS_PS[0] * 1e-12, CHANOFFS_PS[1] * 1e-12), step=1e-12,
                           doc="channel delay (TH260_SetInputChannelOffset)")
    enabled = Setting("? input_enable {ch}", "input_enable {ch} {value}", mapping={True: "1", False: "0"},
                      doc="channel enabled (TH260_SetInputChannelEnable)")


# ---- the driver ---------------------------------------------------------------------------------
class TimeHarp260(Instrument):
    """PicoQuant TimeHarp 260 PICO / NANO in T2 or T3 mode, streaming raw 32-bit records.

    Construct with a :class:`TH260Transport` (real library; ``open_transport("TH260::0")``) or a
    ``ModelTransport`` whose model is a library object (the mock,
    ``sim_instruments.th260_mock.TH260MockLibrary``). Options (station ``options:``):

    - ``mode``: ``"T3"`` (default) or ``"T2"``;
    - ``device_index``: overrides the resource's index; ``serial``: refuse a board with another
      serial number;
    - ``buffer_bytes``: bound of the record buffer between the reader thread and the caller
      (default 256 MiB);
    - ``poll_interval_s``: reader-thread sleep when the FIFO is empty (default 5 ms);
    - ``initial``: ``{setting path: value}`` applied at connect after the defaults.
    """

    model = "PicoQuant TimeHarp 260"
    roles = ("time_tagger",)
    error_query = None
    idn_query = None
    timeout = 5.0
    simulator = "sim_instruments.th260_mock:TH260MockLibrary"
    transport_kind = "th260"
    components = {"ch0": (Channel, {"ch": 0}), "ch1": (Channel, {"ch": 1})}

    mode = Setting("? mode", "mode {value}", mapping={"T2": str(MODE_T2), "T3": str(MODE_T3)},
                   doc="measurement mode (TH260_Initialize; re-initialises and re-applies settings)")
    sync_divider = Setting("? sync_divider", "sync_divider {value}", choices=SYNC_DIVIDERS, fmt="{:g}",
                           parse=lambda t: int(float(t)),
                           doc="sync rate divider (TH260_SetSyncDiv)")
    sync_level = Setting("? sync_level", "sync_level {value}", unit="V", limits=_level_limits, step=1e-3,
                         doc="sync trigger level (NANO) or CFD level (PICO)")
    sync_edge = Setting("? sync_edge", "sync_edge {value}",
                        mapping={"rising": str(EDGE_RISING), "falling": str(EDGE_FALLING)},
                        doc="sync trigger edge (NANO only)")
    sync_zero_cross = Setting("? sync_zero_cross", "sync_zero_cross {value}", unit="V",
                              limits=(CFDZC_MV[0] * 1e-3, CFDZC_MV[1] * 1e-3), step=1e-3,
                              doc="sync CFD zero-cross level (PICO only)")
    sync_offset = Setting("? sync_offset", "sync_offset {value}", unit="s",
                          limits=(CHANOFFS_PS[0] * 1e-12, CHANOFFS_PS[1] * 1e-12), step=1e-12,
                          doc="sync channel delay (TH260_SetSyncChannelOffset)")
    binning = Setting("? binning", "binning {value}", limits=_binning_limits, step=1, fmt="{:.0f}",
                      parse=lambda t: int(float(t)),
                      doc="T3 bin = base resolution x 2**binning (TH260_SetBinning)")
    offset = Setting("? offset", "offset {value}", unit="s", limits=(OFFSET_NS[0] * 1e-9, OFFSET_NS[1] * 1e-9),
                     step=1e-9, doc="T3 micro-time offset (TH260_SetOffset)")

    #: settings that exist on one model only ("P" = PICO CFD inputs, "N" = NANO edge triggers)
    MODEL_ONLY = {"sync_edge": "N", "input_edge": "N", "sync_zero_cross": "P", "input_zero_cross": "P"}
    DEFAULT_BUFFER_BYTES = 256 * 1024 * 1024

    def __init__(self, name: str, transport: Any, **options: Any) -> None:
        super().__init__(name, transport, **options)
        lib = getattr(transport, "lib", None)
        if lib is None:
            model = getattr(transport, "model", None)
            lib = model if hasattr(model, "TH260_ReadFiFo") else None
        if lib is None:
            raise InputError(f"{name}: the TimeHarp 260 driver needs its vendor library, but the transport "
                             f"{transport!r} carries none",
                             fix="use resource 'TH260::<index>' (TH260Transport), or ModelTransport with "
                                 "sim_instruments.th260_mock.TH260MockLibrary in --sim")
        self.lib = lib
        idx = options.get("device_index", getattr(transport, "device_index", None))
        self.device_index = int(idx) if idx is not None else 0
        mode = str(options.get("mode", "T3")).upper()
        if mode not in ("T2", "T3"):
            raise InputError(f"{name}: mode {options.get('mode')!r} is not supported",
                             fix="use mode: T3 or mode: T2 (histogramming is not part of this driver)")
        self._mode_option = mode
        self.buffer_bytes = int(options.get("buffer_bytes", self.DEFAULT_BUFFER_BYTES))
        self.poll_interval_s = float(options.get("poll_interval_s", 0.005))
        self.warning_interval_s = float(options.get("warning_interval_s", 1.0))
        self._lock = threading.RLock()
        self._open = False
        self._shadow: dict[tuple[str, int | None], str] = {}
        self._stream: _Stream | None = None
        self._binsteps: int | None = None
        self.hardware: dict[str, Any] = {}
        self.library_version = ""
        self.n_channels = 0
        self.base_resolution_s = float("nan")
        self.features = 0
        self.is_pico: bool | None = None
        self.markers = {"enable": [False] * 4, "edges": ["rising"] * 4, "holdoff_s": 0.0}

    # ---- transport ---------------------------------------------------------------------------------
    @classmethod
    def open_transport(cls, resource: str, **kw: Any) -> TH260Transport:
        """``TH260::<index>`` -> the vendor library loaded through ctypes, with the device index.
        The library file can be named with the ``LABCTL_TH260_LIB`` environment variable."""
        return TH260Transport(resource, **kw)

    # ---- library calls ---------------------------------------------------------------------------
    def _error_text(self, code: int) -> str:
        buf = ctypes.create_string_buffer(MAXSTRLEN_ERRSTR)
        try:
            with self._lock:
                self.lib.TH260_GetErrorString(buf, c_int(code))
            return buf.value.decode("ascii", "replace")
        except Exception:  # the error text must never hide the error
            return ""

    def _call(self, fname: str, *args: Any) -> None:
        """Call a library function; any non-zero return code raises TH260Error naming the
        function, the code, its symbolic name and the library's text."""
        fn = getattr(self.lib, fname, None)
        if fn is None:
            raise InstrumentError(self.name, fname, f"the loaded TH260Lib has no function {fname} "
                                  f"(library version {self.library_version or '?'}; update TH260Lib)")
        with self._lock:
            rc = fn(*args)
        if rc != 0:
            rc = int(rc)
            cls = TH260LinkError if rc in LINK_ERRORS else TH260Error
            raise cls(self.name, fname, rc, self._error_text(rc))

    def _dev(self) -> c_int:
        return c_int(self.device_index)

    def _get_int(self, fname: str, *args: Any) -> int:
        out = c_int()
        self._call(fname, self._dev(), *args, byref(out))
        return int(out.value)

    def _get_double(self, fname: str, *args: Any) -> float:
        out = c_double()
        self._call(fname, self._dev(), *args, byref(out))
        return float(out.value)

    # ---- connection --------------------------------------------------------------------------------
    def connect(self) -> None:
        """Open the board, initialise it in the configured mode, read its identity and apply the
        default settings (so the driver's shadow matches the hardware)."""
        if self._open:
            return
        ver = ctypes.create_string_buffer(MAXSTRLEN_LIBVER)
        self._call("TH260_GetLibraryVersion", ver)
        self.library_version = ver.value.decode("ascii", "replace")
        serial = ctypes.create_string_buffer(MAXSTRLEN_SERIAL)
        self._call("TH260_OpenDevice", self._dev(), serial)
        try:
            want = self.options.get("serial")
            got = serial.value.decode("ascii", "replace")
            if want and str(want) != got:
                raise InstrumentError(self.name, "TH260_OpenDevice",
                                      f"device {self.device_index} has serial {got}, the station expects {want}")
            self._initialize(MODE_T3 if self._mode_option == "T3" else MODE_T2)
            self._open = True
            self._apply_defaults()
            for path, value in dict(self.options.get("initial") or {}).items():
                self.set(path, value)
        except BaseException:
            self._open = False
            try:
                with self._lock:
                    self.lib.TH260_CloseDevice(self._dev())
            except Exception:
                pass
            raise

    def _initialize(self, mode: int) -> None:
        self._call("TH260_Initialize", self._dev(), c_int(mode))
        model = ctypes.create_string_buffer(MAXSTRLEN_MODEL)
        part = ctypes.create_string_buffer(MAXSTRLEN_PART)
        version = ctypes.create_string_buffer(MAXSTRLEN_VERSION)
        self._call("TH260_GetHardwareInfo", self._dev(), model, part, version)
        serial = ctypes.create_string_buffer(MAXSTRLEN_SERIAL)
        self._call("TH260_GetSerialNumber", self._dev(), serial)
        hw_model = model.value.decode("ascii", "replace")
        if hw_model == HWIDENT_PICO:
            self.is_pico = True
        elif hw_model == HWIDENT_NANO:
            self.is_pico = False
        else:
            raise InstrumentError(self.name, "TH260_GetHardwareInfo",
                                  f"unknown hardware model {hw_model!r} (expected {HWIDENT_PICO!r} or {HWIDENT_NANO!r})")
        self.features = self._get_int("TH260_GetFeatures")
        self.n_channels = self._get_int("TH260_GetNumOfInputChannels")
        res = c_double()
        steps = c_int()
        self._call("TH260_GetBaseResolution", self._dev(), byref(res), byref(steps))
        self.base_resolution_s = res.value * 1e-12
        self._binsteps = int(steps.value)
        self.hardware = {"model": hw_model, "partno": part.value.decode("ascii", "replace"),
                         "version": version.value.decode("ascii", "replace"),
                         "serial": serial.value.decode("ascii", "replace"),
                         "features": self.features, "channels": self.n_channels,
                         "base_resolution_s": self.base_resolution_s, "binsteps": self._binsteps,
                         "library_version": self.library_version}
        self._shadow[("mode", None)] = str(mode)
        self._idn = None

    def _ensure_open(self) -> None:
        if not self._open:
            self.connect()

    def _apply_defaults(self) -> None:
        """The demo's settings: divider 1, -50 mV levels (falling edge / CFD zero cross -10 mV),
        offsets 0, every channel on, binning 0, offset 0, markers off."""
        self.write("sync_divider 1")
        self.write("sync_level -0.05")
        if self.is_pico:
            self.write("sync_zero_cross -0.01")
        else:
            self.write("sync_edge 0")
        self.write("sync_offset 0")
        for ch in range(self.n_channels):
            self.write(f"input_level {ch} -0.05")
            if self.is_pico:
                self.write(f"input_zero_cross {ch} -0.01")
            else:
                self.write(f"input_edge {ch} 0")
            self.write(f"input_offset {ch} 0")
            self.write(f"input_enable {ch} 1")
        self.write("binning 0")
        self.write("offset 0")
        self.configure_markers(enable=(False,) * 4, edges=("rising",) * 4)

    # ---- pseudo-commands: settings -> library calls ------------------------------------------------
    def write(self, command: str) -> None:
        """Execute one settings pseudo-command (``key [channel] value``) as library calls."""
        key, *args = command.split()
        if key == "mode":
            self._set_mode(args[0])
            return
        self._ensure_open()
        if self.streaming:
            raise InstrumentError(self.name, command, "settings cannot change while a measurement streams; "
                                  "call stop() first")
        ch: int | None = None
        if key.startswith("input_"):
            ch = int(args[0])
            if not 0 <= ch < self.n_channels:
                raise SettingError(self.name, f"ch{ch}.{key}", args[-1],
                                   f"channels 0..{self.n_channels - 1} of this board")
        token = args[-1]
        need = self.MODEL_ONLY.get(key)
        if need is not None and (need == "P") != bool(self.is_pico):
            which = "PICO (CFD inputs)" if need == "P" else "NANO (edge triggers)"
            raise SettingError(self.name, key if ch is None else f"ch{ch}.{key}", token,
                               f"settings of a TimeHarp 260 {which}; this board is a {self.hardware.get('model')}")
        handler = getattr(self, f"_cmd_{key}", None)
        if handler is None:
            raise InstrumentError(self.name, command, f"unknown TimeHarp 260 setting command {key!r}")
        handler(ch, token)
        self._shadow[(key, ch)] = token

    def query(self, command: str) -> str:
        """Answer a ``? key [channel]`` readback from the driver's shadow of what it set."""
        self._ensure_open()
        _, key, *rest = command.split()
        ch = int(rest[0]) if rest else None
        try:
            return self._shadow[(key, ch)]
        except KeyError:
            raise InstrumentError(self.name, command,
                                  f"{key} has not been set on this board (it may not exist on a "
                                  f"{self.hardware.get('model')} or on channel {ch})") from None

    def read(self) -> str:
        raise InstrumentError(self.name, None, "the TimeHarp 260 has no text protocol")

    @staticmethod
    def _mv(token: str) -> int:
        return int(round(float(token) * 1e3))

    @staticmethod
    def _ps(token: str) -> int:
        return int(round(float(token) * 1e12))

    def _level(self, key: str, ch: int | None, default: str) -> str:
        return self._shadow.get((key, ch), default)

    def _cmd_sync_divider(self, ch: int | None, token: str) -> None:
        self._call("TH260_SetSyncDiv", self._dev(), c_int(int(float(token))))

    def _sync_trigger(self, level: str, other: str) -> None:
        if self.is_pico:
            self._call("TH260_SetSyncCFD", self._dev(), c_int(self._mv(level)), c_int(self._mv(other)))
        else:
            self._call("TH260_SetSyncEdgeTrg", self._dev(), c_int(self._mv(level)), c_int(int(other)))

    def _cmd_sync_level(self, ch: int | None, token: str) -> None:
        other = self._level("sync_zero_cross", None, "-0.01") if self.is_pico else self._level("sync_edge", None, "0")
        self._sync_trigger(token, other)

    def _cmd_sync_edge(self, ch: int | None, token: str) -> None:
        self._sync_trigger(self._level("sync_level", None, "-0.05"), token)

    def _cmd_sync_zero_cross(self, ch: int | None, token: str) -> None:
        self._sync_trigger(self._level("sync_level", None, "-0.05"), token)

    def _cmd_sync_offset(self, ch: int | None, token: str) -> None:
        self._call("TH260_SetSyncChannelOffset", self._dev(), c_int(self._ps(token)))

    def _input_trigger(self, ch: int, level: str, other: str) -> None:
        if self.is_pico:
            self._call("TH260_SetInputCFD", self._dev(), c_int(ch), c_int(self._mv(level)), c_int(self._mv(other)))
        else:
            self._call("TH260_SetInputEdgeTrg", self._dev(), c_int(ch), c_int(self._mv(level)), c_int(int(other)))

    def _cmd_input_level(self, ch: int | None, token: str) -> None:
        assert ch is not None
        other = (self._level("input_zero_cross", ch, "-0.01") if self.is_pico
                 else self._level("input_edge", ch, "0"))
        self._input_trigger(ch, token, other)

    def _cmd_input_edge(self, ch: int | None, token: str) -> None:
        assert ch is not None
        self._input_trigger(ch, self._level("input_level", ch, "-0.05"), token)

    def _cmd_input_zero_cross(self, ch: int | None, token: str) -> None:
        assert ch is not None
        self._input_trigger(ch, self._level("input_level", ch, "-0.05"), token)

    def _cmd_input_offset(self, ch: int | None, token: str) -> None:
        self._call("TH260_SetInputChannelOffset", self._dev(), c_int(ch), c_int(self._ps(token)))

    def _cmd_input_enable(self, ch: int | None, token: str) -> None:
        self._call("TH260_SetInputChannelEnable", self._dev(), c_int(ch), c_int(int(token)))

    def _cmd_binning(self, ch: int | None, token: str) -> None:
        self._call("TH260_SetBinning", self._dev(), c_int(int(round(float(token)))))

    def _cmd_offset(self, ch: int | None, token: str) -> None:
        self._call("TH260_SetOffset", self._dev(), c_int(int(round(float(token) * 1e9))))

    def _set_mode(self, token: str) -> None:
        """TH260_Initialize in another mode resets the board: re-apply every setting."""
        if self.streaming:
            raise InstrumentError(self.name, f"mode {token}", "the mode cannot change while a measurement "
                                  "streams; call stop() first")
        if not self._open:
            self._mode_option = "T3" if int(token) == MODE_T3 else "T2"
            self.connect()
            return
        self._initialize(int(token))
        self._mode_option = "T3" if int(token) == MODE_T3 else "T2"
        saved = dict(self._shadow)
        order = ["sync_divider", "sync_level", "sync_edge", "sync_zero_cross", "sync_offset",
                 "input_level", "input_edge", "input_zero_cross", "input_offset", "input_enable",
                 "binning", "offset"]
        for key in order:
            for ch in (range(self.n_channels) if key.startswith("input_") else (None,)):
                tok = saved.get((key, ch))
                if tok is not None:
                    self.write(f"{key} {tok}" if ch is None else f"{key} {ch} {tok}")
        m = self.markers
        self.configure_markers(enable=m["enable"], edges=m["edges"], holdoff_s=m["holdoff_s"])

    # ---- other configuration ----------------------------------------------------------------------
    def configure_markers(self, *, enable: Any = None, edges: Any = None, holdoff_s: float | None = None) -> None:
        """Marker inputs 1–4 (T2/T3 records with special bit and channel 1..15 as bit mask).
        ``enable``: four booleans; ``edges``: four of ``"rising"``/``"falling"``; ``holdoff_s``:
        0..25.5 µs (TH260_SetMarkerHoldoffTime, ns resolution)."""
        en = list(self.markers["enable"] if enable is None else enable)
        ed = list(self.markers["edges"] if edges is None else edges)
        if len(en) != 4 or len(ed) != 4 or any(e not in ("rising", "falling") for e in ed):
            raise SettingError(self.name, "markers", (enable, edges), "four enables and four edges 'rising'/'falling'")
        hold = holdoff_s
        if hold is not None:
            ns = int(round(hold * 1e9))
            if not HOLDOFF_NS[0] <= ns <= HOLDOFF_NS[1]:
                raise SettingError(self.name, "marker_holdoff", hold, "range 0 s to 25.5 us", "s")
        self._ensure_open()
        if self.streaming:
            raise InstrumentError(self.name, "markers", "markers cannot change while a measurement streams")
        self._call("TH260_SetMarkerEdges", self._dev(),
                   *[c_int(EDGE_RISING if e == "rising" else EDGE_FALLING) for e in ed])
        self._call("TH260_SetMarkerEnable", self._dev(), *[c_int(1 if x else 0) for x in en])
        if hold is not None:
            self._call("TH260_SetMarkerHoldoffTime", self._dev(), c_int(int(round(hold * 1e9))))
            self.markers["holdoff_s"] = hold
        self.markers["enable"] = [bool(x) for x in en]
        self.markers["edges"] = ed

    # ---- read-outs -----------------------------------------------------------------------------------
    def resolution(self) -> float:
        """Time bin (s): T3 dtime bin (base x 2**binning) or the T2 time-tag unit."""
        self._ensure_open()
        return self._get_double("TH260_GetResolution") * 1e-12

    def sync_rate(self) -> float:
        """Sync input rate (Hz). After Initialize or a divider change allow 150 ms (manual)."""
        self._ensure_open()
        return float(self._get_int("TH260_GetSyncRate"))

    def count_rate(self, channel: int) -> float:
        self._ensure_open()
        if not 0 <= channel < self.n_channels:
            raise SettingError(self.name, "count_rate", channel, f"channels 0..{self.n_channels - 1}")
        return float(self._get_int("TH260_GetCountRate", c_int(channel)))

    def count_rates(self) -> list[float]:
        return [self.count_rate(c) for c in range(self.n_channels)]

    def flags(self) -> int:
        self._ensure_open()
        return self._get_int("TH260_GetFlags")

    def elapsed_time(self) -> float:
        """Elapsed time (s) of the running or last measurement (TH260_GetElapsedMeasTime, ms)."""
        self._ensure_open()
        return self._get_double("TH260_GetElapsedMeasTime") * 1e-3

    def check_warnings(self, *, emit: bool = True) -> list[str]:
        """Read the rates (the library derives its warnings from them), then the warnings; return
        their texts and, with ``emit``, issue each as a :class:`TH260Warning`."""
        self._ensure_open()
        self.sync_rate()
        self.count_rates()
        bits = self._get_int("TH260_GetWarnings")
        if not bits:
            return []
        text = ctypes.create_string_buffer(MAXSTRLEN_WRNTXT)
        self._call("TH260_GetWarningsText", self._dev(), text, c_int(bits))
        lines = [ln.strip() for ln in text.value.decode("ascii", "replace").splitlines() if ln.strip()]
        lines = lines or [f"warning bits 0x{bits:04x}"]
        for ln in lines:
            log.warning("%s: %s", self.name, ln)
            if emit:
                warnings.warn(TH260Warning(f"{self.name}: {ln}"), stacklevel=2)
        return lines

    # ---- streaming ---------------------------------------------------------------------------------
    @property
    def streaming(self) -> bool:
        """A reader thread is running."""
        s = self._stream
        return bool(s and s.thread and s.thread.is_alive())

    def start(self, acquisition_time_s: float) -> None:
        """TimeTagger protocol: :meth:`start_stream`."""
        self.start_stream(acquisition_time_s)

    def start_stream(self, acquisition_time_s: float, *, buffer_bytes: int | None = None) -> None:
        """Start a measurement of ``acquisition_time_s`` (1 ms .. 100 h) and a background thread
        that reads the FIFO into a bounded buffer. Returns at once; get the records with
        :meth:`read_records`."""
        t = acquisition_time_s
        if isinstance(t, str):
            from labctl.units import parse_as

            t = parse_as(t, "s", where=f"{self.name}.acquisition_time")
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
            raise SettingError(self.name, "acquisition_time", acquisition_time_s, "numbers", "s")
        ms = int(round(t * 1e3))
        if not ACQT_MS[0] <= ms <= ACQT_MS[1]:
            raise SettingError(self.name, "acquisition_time", acquisition_time_s,
                               "range 1 ms to 360000 s (TH260 ACQTMIN..ACQTMAX)", "s")
        max_bytes = int(buffer_bytes if buffer_bytes is not None else self.buffer_bytes)
        if max_bytes < TTREADMAX * 4:
            raise SettingError(self.name, "buffer_bytes", max_bytes, f"at least {TTREADMAX * 4} bytes (one FIFO read)")
        if self.streaming:
            raise InstrumentError(self.name, "TH260_StartMeas", "a measurement is already streaming; call stop() first")
        self._ensure_open()
        old = self._stream
        if old is not None and old.error is not None and not old.error_reported:
            log.warning("%s: discarding the unreported error of the previous stream: %s", self.name, old.error)
        stream = _Stream(t, max_bytes)
        self._call("TH260_StartMeas", self._dev(), c_int(ms))
        stream.thread = threading.Thread(target=self._reader, args=(stream,), daemon=True,
                                         name=f"{self.name}-th260-reader")
        self._stream = stream
        stream.thread.start()

    def _reader(self, s: _Stream) -> None:
        """Reader thread: GetFlags, ReadFiFo(TTREADMAX) into the bounded buffer, CTCStatus when the
        FIFO is empty; StopMeas at the end (as in PicoQuant's tttrmode demo)."""
        buf = np.zeros(TTREADMAX, dtype=np.uint32)
        cbuf = (c_uint * TTREADMAX).from_buffer(buf)
        n = c_int()
        t3 = self._mode_option == "T3"
        fatal = FLAG_FIFOFULL | FLAG_SYSERROR | FLAG_SOFTERROR | (FLAG_SYNC_LOST if t3 else 0)
        next_warn = time.monotonic() + self.warning_interval_s
        warned_dropped_events = False
        warned_bits = 0
        try:
            while not s.stop.is_set():
                flags = self._get_int("TH260_GetFlags")
                s.flags_seen |= flags
                bad = flags & fatal
                if bad:
                    msgs = [m for bit, m in _FLAG_ERRORS.items() if bad & bit]
                    raise TH260StreamError(self.name, flags, "; ".join(msgs))
                if flags & FLAG_EVTS_DROPPED and not warned_dropped_events:
                    warned_dropped_events = True
                    self._stream_warning(s, TH260Warning, "the card dropped events at a high input rate "
                                         "(FLAG_EVTS_DROPPED)")
                self._call("TH260_ReadFiFo", self._dev(), cbuf, c_int(TTREADMAX), byref(n))
                k = int(n.value)
                if not 0 <= k <= TTREADMAX:
                    raise InstrumentError(self.name, "TH260_ReadFiFo", f"returned an impossible record count {k}")
                s.reads += 1
                if k:
                    s.records_read += k
                    if not s.buffer.put(buf[:k].copy()):
                        log.warning("%s: record buffer full (%d bytes): dropped %d records so far",
                                    self.name, s.buffer.max_bytes, s.buffer.dropped_records)
                elif self._get_int("TH260_CTCStatus"):
                    # the acquisition time is over: drain what reached the FIFO meanwhile
                    for _ in range(1000):
                        self._call("TH260_ReadFiFo", self._dev(), cbuf, c_int(TTREADMAX), byref(n))
                        k = int(n.value)
                        if k <= 0:
                            break
                        s.records_read += k
                        s.buffer.put(buf[:k].copy())
                    s.finished = True
                    break
                now = time.monotonic()
                if now >= next_warn:
                    # the library derives its warnings from the last rate readings (demo order)
                    next_warn = now + self.warning_interval_s
                    self._get_int("TH260_GetSyncRate")
                    for c in range(self.n_channels):
                        self._get_int("TH260_GetCountRate", c_int(c))
                    bits = self._get_int("TH260_GetWarnings")
                    new_bits = bits & ~warned_bits
                    warned_bits |= bits
                    if new_bits:
                        text = ctypes.create_string_buffer(MAXSTRLEN_WRNTXT)
                        self._call("TH260_GetWarningsText", self._dev(), text, c_int(new_bits))
                        self._stream_warning(s, TH260Warning, text.value.decode("ascii", "replace").strip()
                                             or f"warning bits 0x{new_bits:04x}")
                if not k:
                    s.stop.wait(self.poll_interval_s)
        except BaseException as e:  # reported to the caller by read_records / stop
            s.error = e
            log.error("%s: streaming stopped: %s", self.name, e)
        finally:
            try:
                self._call("TH260_StopMeas", self._dev())
            except Exception as e:
                if s.error is None:
                    s.error = e
                log.error("%s: TH260_StopMeas failed: %s", self.name, e)
            s.ended_at = time.monotonic()
            s.done.set()
            s.buffer.notify()

    def _stream_warning(self, s: _Stream, cls: type, text: str) -> None:
        log.warning("%s: %s", self.name, text)
        s.warnings.append((cls, text))

    def _emit_warnings(self, s: _Stream) -> None:
        while s.warnings:
            cls, text = s.warnings.popleft()
            warnings.warn(cls(f"{self.name}: {text}"), stacklevel=3)
        dropped = s.buffer.dropped_records
        if dropped > s.reported_drops:
            warnings.warn(RecordsDroppedWarning(
                f"{self.name}: the record buffer ({s.buffer.max_bytes} bytes) was full: "
                f"{dropped} records dropped so far (read more often or raise buffer_bytes); the time "
                f"base is kept (overflow records of dropped chunks are retained)"), stacklevel=3)
            s.reported_drops = dropped

    def read_records(self, timeout: float = 0.0) -> np.ndarray:
        """The raw uint32 records read since the last call (possibly empty). Waits at most
        ``timeout`` seconds for data; never blocks on the card. When the stream has failed (FIFO
        overrun, sync lost, library error), returns the records read before the failure first
        and raises the error on the next call that has nothing left to return."""
        s = self._stream
        if s is None:
            return np.empty(0, np.uint32)
        chunks = s.buffer.take_all(timeout, s.done)
        self._emit_warnings(s)
        if chunks:
            return np.concatenate(chunks) if len(chunks) > 1 else chunks[0]
        if s.error is not None and not s.error_reported and s.done.is_set():
            s.error_reported = True
            raise s.error
        return np.empty(0, np.uint32)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the measurement to end (acquisition time over, stopped or failed); True if it
        has ended."""
        s = self._stream
        if s is None:
            return True
        return s.done.wait(timeout)

    @property
    def finished(self) -> bool:
        """The last measurement ran its full acquisition time."""
        return bool(self._stream and self._stream.finished)

    @property
    def dropped_records(self) -> int:
        return self._stream.buffer.dropped_records if self._stream else 0

    def stream_stats(self) -> dict[str, Any]:
        s = self._stream
        if s is None:
            return {"state": "idle"}
        state = ("running" if not s.done.is_set() else "failed" if s.error is not None
                 else "finished" if s.finished else "stopped")
        return {"state": state, "acquisition_time_s": s.acquisition_time_s, "reads": s.reads,
                "records_read": s.records_read, "records_dropped": s.buffer.dropped_records,
                "chunks_dropped": s.buffer.dropped_chunks, "buffer_bytes": s.buffer.max_bytes,
                "buffered_bytes": s.buffer.nbytes, "flags_seen": s.flags_seen,
                "error": str(s.error) if s.error else None,
                "wall_time_s": ((s.ended_at or time.monotonic()) - s.started_at)}

    def _halt(self) -> None:
        """Stop the reader thread (which calls StopMeas); never raises for a stream error."""
        s = self._stream
        if s is None or s.thread is None:
            return
        s.stop.set()
        s.thread.join(self.timeout + 10 * self.poll_interval_s)
        if s.thread.is_alive():
            log.error("%s: the reader thread did not stop within %.1f s", self.name, self.timeout)

    def stop(self) -> None:
        """Stop the measurement and the reader thread. Records still buffered stay readable with
        :meth:`read_records`. Raises the stream's error if it failed and nobody was told yet."""
        s = self._stream
        if s is None:
            return
        self._halt()
        self._emit_warnings(s)
        if s.error is not None and not s.error_reported:
            s.error_reported = True
            raise s.error

    # ---- identity, provenance, safety -------------------------------------------------------------
    def idn(self) -> str:
        """``PicoQuant,<model>,<serial>,part <partno> hw <version> TH260Lib <version>``."""
        if self._idn is None:
            self._ensure_open()
            h = self.hardware
            self._idn = (f"PicoQuant,{h['model']},{h['serial']},part {h['partno']} hw {h['version']} "
                         f"TH260Lib {self.library_version}")
        return self._idn

    def _settings_snapshot(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        model_code = "P" if self.is_pico else "N"
        for name in type(self).settings():
            need = self.MODEL_ONLY.get(name)
            if need is None or need == model_code:
                out[name] = self.get(name)
        for ch in range(self.n_channels):
            comp = self._components[f"ch{ch}"]
            sub = {}
            for name, s in type(comp).settings().items():
                key = s.get_cmd.split()[1] if s.get_cmd else name
                need = self.MODEL_ONLY.get(key)
                if need is None or need == model_code:
                    sub[name] = comp.get(name)
            out[f"ch{ch}"] = sub
        out["markers"] = {k: (list(v) if isinstance(v, list) else v) for k, v in self.markers.items()}
        return out

    def snapshot(self) -> dict[str, Any]:
        self._ensure_open()
        return {"idn": self.idn(), "driver": f"{type(self).__module__}.{type(self).__qualname__}",
                "resource": self.transport.resource, "device_index": self.device_index,
                "hardware": dict(self.hardware), "resolution_s": self.resolution(),
                "settings": self._settings_snapshot(), "stream": self.stream_stats()}

    def safe_state(self) -> None:
        """Stop any measurement (reader thread and TH260_StopMeas) and switch the trigger output
        off where the board has one (it can clock a laser). Never raises for an earlier stream
        error; raises if the library refuses StopMeas."""
        if not self._open:
            return
        self._halt()
        self._call("TH260_StopMeas", self._dev())
        if self.features & FEATURE_TRIGOUT:
            self._call("TH260_SetTriggerOutput", self._dev(), c_int(0))

    def close(self) -> None:
        try:
            self._halt()
        finally:
            if self._open:
                self._open = False
                try:
                    with self._lock:
                        self.lib.TH260_CloseDevice(self._dev())
                except Exception as e:
                    log.warning("%s: TH260_CloseDevice failed: %s", self.name, e)
            self.transport.close()


__all__ = ["TimeHarp260", "Channel", "TH260Transport", "TH260Error", "TH260LinkError",
           "TH260LibraryNotFound", "TH260StreamError", "TH260Warning", "RecordsDroppedWarning",
           "RecordBuffer", "load_library", "library_candidates", "parse_resource", "PROTOTYPES",
           "ERROR_NAMES", "TTREADMAX", "TTREADMIN"]
