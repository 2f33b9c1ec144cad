"""New Focus (Newport) Velocity TLB-6700 tunable laser controller with a TLB-6728 head.

The pump and read lasers of the seed (Riedinger et al. 2018, supplement "Experimental setup": two
New Focus 6728 CW lasers at 1553.8 nm, tuned to the Stokes and anti-Stokes sidebands).

Command set (TLB-6700 User's Manual, Rev. D, ch. 6 "Computer Interface", command reference and
error-message table), checked against the public drivers
``QuTech-Delft/QMI: qmi/instruments/newport/tlb670x.py`` (+ ``tlb670x_error_messages.py``),
``engelsen/Instrument-control: @MyTlb6700/MyTlb6700.m`` and Gröblacher-lab ``TL6800`` ctypes code:

=====================================  ==================================================  ======
command                                meaning                                             reply
=====================================  ==================================================  ======
``*IDN?``                              ``New_Focus 6700 v2.4 08/01/15 SN12345``            text
``SOURce:WAVElength <nm>`` / ``?``     wavelength set point                                OK / nm
``SENSe:WAVElength``                   measured wavelength (SENSe queries have NO ``?``)   nm
``SENSe:CURRent:DIODe``                measured diode current                              mA
``SENSe:POWer:DIODe``                  measured output power                               mW
``SOURce:POWer:DIODe?``                power set point (constant-power mode)               mW
``SOURce:CURRent:DIODe <mA>`` / ``?``  diode current set point                             OK / mA
``OUTPut:STATe 1|0`` / ``?``           laser diode on / off                                OK / 1|0
``OUTPut:TRACk 1|0`` / ``?``           wavelength track mode                               OK / 1|0
``SOURce:VOLTage:PIEZo <%>`` / ``?``   piezo voltage, 0–100 % of its range                 OK / %
``SOURce:WAVElength:SLEWrate:FORWard`` forward slew rate of a move (nm/s)                  OK / nm/s
``*OPC?``                              1 when no move is in progress, else 0               1|0
``ERRSTR?``                            oldest entry of the error buffer                    code,TEXT
=====================================  ==================================================  ======

Replies end in CR LF; every set command is answered ``OK``. ``ERRSTR?`` answers ``0,NO ERROR``
when the buffer is empty and e.g. ``201,VALUE OUT OF RANGE`` or ``116,SYNTAX ERROR`` otherwise
(numbers and texts from the manual's error table as reproduced in QMI's
``tlb670x_error_messages.py``).

Assumptions (not confirmed against hardware):

* the exact spacing of the ``ERRSTR?`` reply (``0,NO ERROR`` vs ``0, NO ERROR``): both parse;
* what the controller answers to a refused set command (an error text or nothing): the driver
  treats any reply other than ``OK``, and a missing reply, as a refusal and reads ``ERRSTR?``;
* the controller occasionally leaves a stale ``OK`` in front of a query answer (QMI works around
  the same); a query answered ``OK`` is read once more;
* 6728 head tuning range 1520–1570 nm (the nominal TLB-6728 range; no data sheet was at hand to
  confirm it — the Gröblacher-lab code sweeps 1521–1570 nm); override with ``wavelength_range``;
* a set point only moves the laser in track mode (Gröblacher-lab code, AssafShon/LabChipDiagnostic
  Control), so ``set_wavelength`` switches track mode on first (driver option ``auto_track``).

Transport: the controller has USB only, through the Newport USB library (``usbdll.dll``;
``newp_usb_init_system``, ``newp_usb_get_device_info``, ``newp_usb_send_ascii``,
``newp_usb_get_ascii``, ``newp_usb_uninit_system``; signatures as in QMI and the Gröblacher-lab code).
``TLB6700.open_transport`` returns a ``NewportUsbTransport`` for ``NEWPORT-USB::4106::<key>``
resources (4106 = 0x100A, the TLB-6700 USB product id; ``<key>`` is the serial number as shown in the
device list, e.g. ``SN12345``, or the numeric device id). Any other resource (a TCP emulator, a
serial bridge) goes through the station's usual pyvisa / pyserial path.

``safe_state()`` switches the laser diode off (``OUTPut:STATe 0``): nothing reaches the cryostat,
whatever the state of the AOMs and shutters downstream. The set points stay; after switching back
on, allow the turn-on delay (``ONDELAY``, 3–60 s) and thermal settling before re-locking.
"""
from __future__ import annotations

import ctypes
import logging
import math
import os
import re
import sys
import threading
import time
from typing import Any

from labctl import units as _units
from labctl.errors import ConnectionLost, InputError, InstrumentError, InstrumentTimeout, SettingError
from labctl.instrument.base import Instrument, Setting
from labctl.instrument.transport import TransportBase

log = logging.getLogger("labctl.drivers.tlb6700")

#: USB product id of the TLB-6700 (0x100A)
PRODUCT_ID = 4106
#: environment variable naming the Newport USB library to load (overrides the defaults below)
LIBRARY_ENV = "LABCTL_NEWPORT_USBDLL"
DEFAULT_LIBRARIES = ("usbdll.dll",) if sys.platform.startswith("win") else ("libusbdll.so", "usbdll.so")

RESOURCE_RE = re.compile(r"^NEWPORT-USB::(0x[0-9A-Fa-f]+|\d+)::(.+)$", re.IGNORECASE)


class _Scaled:
    """A ``Setting.fmt`` that converts SI to the instrument's unit before formatting (m -> nm)."""

    def __init__(self, factor: float, spec: str) -> None:
        self.factor = factor
        self.spec = spec

    def format(self, value: float) -> str:
        return self.spec.format(value * self.factor)


def _scaled_parse(factor: float):
    def parse(text: str) -> float:
        return float(text) * factor
    return parse


def _nm_limits(inst: "TLB6700") -> tuple[float, float]:
    return inst.wavelength_range


def _current_limits(inst: "TLB6700") -> tuple[float, float]:
    return 0.0, inst.max_current


# -- Newport USB library (ctypes) ----------------------------------------------------------------

_USB_LOCK = threading.RLock()          # the Newport library is not safe for concurrent calls
_USB_USERS: dict[int, int] = {}        # id(library) -> open transports (one init for all)
_LIBRARIES: dict[str, Any] = {}        # path -> loaded library (one handle, one init/uninit count)


def load_newport_library(path: str | None = None) -> Any:
    """Load the Newport USB library; raise OSError naming every file that was tried."""
    candidates = [path] if path else ([os.environ[LIBRARY_ENV]] if os.environ.get(LIBRARY_ENV) else list(DEFAULT_LIBRARIES))
    loader = getattr(ctypes, "WinDLL", ctypes.CDLL)
    errors = []
    with _USB_LOCK:
        for name in candidates:
            if name in _LIBRARIES:
                return _LIBRARIES[name]
            try:
                lib = loader(name)
            except OSError as e:
                errors.append(f"{name}: {e}")
                continue
            try:
                _declare_signatures(lib)
            except AttributeError as e:
                errors.append(f"{name} is not the Newport USB library ({e})")
                continue
            _LIBRARIES[name] = lib
            return lib
    raise OSError("; ".join(errors) or "no library name given")


def _declare_signatures(lib: Any) -> None:
    """Argument and return types (usbdll.h as used by QMI and the Gröblacher-lab code)."""
    sig = {
        "newp_usb_init_system": ([], ctypes.c_long),
        "newp_usb_uninit_system": ([], None),
        "newp_usb_get_device_info": ([ctypes.c_char_p], ctypes.c_long),
        "newp_usb_send_ascii": ([ctypes.c_long, ctypes.c_char_p, ctypes.c_ulong], ctypes.c_long),
        "newp_usb_get_ascii": ([ctypes.c_long, ctypes.c_char_p, ctypes.c_ulong,
                                ctypes.POINTER(ctypes.c_ulong)], ctypes.c_long),
    }
    for fname, (args, res) in sig.items():
        fn = getattr(lib, fname)
        fn.argtypes = args
        fn.restype = res


class NewportUsbTransport(TransportBase):
    """ASCII messages to one TLB-6700 through the Newport USB library (ctypes).

    :param resource: ``NEWPORT-USB::<product id>::<key>``; ``<key>`` is matched against the
        descriptions of ``newp_usb_get_device_info`` (e.g. ``SN12345``), or is the numeric device id.
    :param library: an already loaded library object (tests pass a fake); default: load
        ``$LABCTL_NEWPORT_USBDLL`` or ``usbdll.dll`` (Windows) / ``libusbdll.so`` (elsewhere).
    """

    def __init__(self, resource: str, *, library: Any = None, library_path: str | None = None,
                 poll_interval: float = 0.002, **kw: Any) -> None:
        super().__init__(resource, **kw)
        m = RESOURCE_RE.match(resource)
        if not m:
            raise InputError(f"{self.name}: {resource!r} is not a Newport USB resource",
                             fix="write it as NEWPORT-USB::4106::SN12345")
        self.product_id = int(m.group(1), 0)
        self.key = m.group(2).strip()
        self.poll_interval = poll_interval
        self._rx = bytearray()
        self._open = False
        self._last_status = 0
        if library is None:
            try:
                library = load_newport_library(library_path)
            except OSError as e:
                tried = library_path or os.environ.get(LIBRARY_ENV) or " or ".join(DEFAULT_LIBRARIES)
                raise ConnectionLost(
                    self.name, None,
                    f"cannot load the Newport USB library ({tried}) to open {resource}: {e}. Install the "
                    f"Newport USB driver, or set {LIBRARY_ENV} to the library's path, or use the simulator "
                    "(--sim)") from None
        self.lib = library
        with _USB_LOCK:
            if _USB_USERS.get(id(self.lib), 0) == 0:
                status = self.lib.newp_usb_init_system()
                if status != 0:
                    raise ConnectionLost(self.name, None,
                                         f"newp_usb_init_system failed with status {status} ({resource})")
            _USB_USERS[id(self.lib)] = _USB_USERS.get(id(self.lib), 0) + 1
            self._open = True
        try:
            self.device_id = self._find_device()
        except BaseException:
            self.close()
            raise

    # -- device discovery -----------------------------------------------------------------------
    def devices(self) -> list[tuple[int, str]]:
        """``(device id, description)`` of every Newport USB device the library sees."""
        buf = ctypes.create_string_buffer(4096)
        with _USB_LOCK:
            status = self.lib.newp_usb_get_device_info(buf)
        if status != 0:
            raise ConnectionLost(self.name, None, f"newp_usb_get_device_info failed with status {status}")
        out = []
        for entry in buf.value.decode("ascii", errors="replace").split(";"):
            ident, sep, desc = entry.partition(",")
            if sep and ident.strip().lstrip("-").isdigit():
                out.append((int(ident), desc.strip()))
        return out

    def _find_device(self) -> int:
        found = self.devices()
        for ident, desc in found:
            if (self.key.isdigit() and int(self.key) == ident) or self.key.upper() in desc.upper():
                return ident
        listing = ", ".join(f"{i}: {d!r}" for i, d in found) or "none"
        raise ConnectionLost(self.name, None,
                             f"no TLB-6700 matching {self.key!r} on the Newport USB bus "
                             f"(devices found: {listing}); check {self.resource}")

    # -- byte I/O ---------------------------------------------------------------------------------
    def _send(self, data: bytes) -> None:
        with _USB_LOCK:
            status = self.lib.newp_usb_send_ascii(ctypes.c_long(self.device_id), data, ctypes.c_ulong(len(data)))
        if status != 0:
            raise ConnectionLost(self.name, self._last_command,
                                 f"newp_usb_send_ascii failed with status {status} ({self.resource})")

    def _poll(self) -> bool:
        buf = ctypes.create_string_buffer(1024)
        nread = ctypes.c_ulong(0)
        with _USB_LOCK:
            status = self.lib.newp_usb_get_ascii(ctypes.c_long(self.device_id), buf, ctypes.c_ulong(len(buf)),
                                                 ctypes.pointer(nread))
        self._last_status = status
        if status != 0:  # nothing (yet) or a fault: decided when the deadline passes
            return False
        n = min(int(nread.value), len(buf))
        if n:
            self._rx.extend(buf.raw[:n])
        return n > 0

    def _expired(self) -> Exception:
        if self._last_status != 0:
            return ConnectionLost(self.name, self._last_command,
                                  f"newp_usb_get_ascii failed with status {self._last_status} ({self.resource})")
        return self._timeout_error()

    def _receive_until(self, terminator: bytes) -> bytes:
        deadline = time.monotonic() + self.timeout
        while True:
            line = self._pop_until(terminator)
            if line is not None:
                return line
            if not self._poll():
                if time.monotonic() > deadline:
                    raise self._expired()
                time.sleep(self.poll_interval)

    def _receive(self, size: int | None) -> bytes:
        deadline = time.monotonic() + self.timeout
        while size is not None and len(self._rx) < size:
            if not self._poll():
                if time.monotonic() > deadline:
                    raise self._expired()
                time.sleep(self.poll_interval)
        if size is None:
            self._poll()
            size = len(self._rx)
        return self._pop(size)

    def discard_input(self) -> None:
        """Drop buffered bytes and whatever the library still holds for this controller."""
        self._rx.clear()
        for _ in range(64):
            if not self._poll():
                break
            self._rx.clear()

    def close(self) -> None:
        with _USB_LOCK:
            if not self._open:
                return
            self._open = False
            n = _USB_USERS.get(id(self.lib), 1) - 1
            _USB_USERS[id(self.lib)] = n
            if n <= 0:
                _USB_USERS.pop(id(self.lib), None)
                try:
                    self.lib.newp_usb_uninit_system()
                except Exception as e:  # closing must not mask the original error
                    log.warning("%s: newp_usb_uninit_system failed: %s", self.name, e)


# -- driver ---------------------------------------------------------------------------------------

class TLB6700(Instrument):
    """Velocity TLB-6700 controller with a TLB-6728 (1520–1570 nm) head; role ``laser``.

    Driver options (station ``options:``):

    * ``wavelength_range``: ``[low, high]`` of the head, default ``["1520 nm", "1570 nm"]``;
    * ``max_current``: software limit of the diode current set point, default ``"165 mA"`` (put the
      head's rated maximum from its test sheet here; the controller enforces its own limit too);
    * ``move_timeout``: how long ``set_wavelength(wait=True)`` waits for ``*OPC?``, default ``"60 s"``;
    * ``poll_interval``: pause between ``*OPC?`` polls, default ``"50 ms"``;
    * ``auto_track``: switch track mode on before a wavelength move, default true.
    """

    model = "New Focus Velocity TLB-6700 / TLB-6728"
    roles = ("laser",)
    read_termination = "\r\n"
    write_termination = "\r\n"
    timeout = 2.0
    error_query = "ERRSTR?"
    idn_query = "*IDN?"
    simulator = "sim_instruments.models.tlb6700:TLB6700Model"

    # every set is answered "OK" and checked in write(); no separate ERRSTR? after each set
    wavelength = Setting("SOURce:WAVElength?", "SOURce:WAVElength {value}", unit="m", limits=_nm_limits,
                         fmt=_Scaled(1e9, "{:.3f}"), parse=_scaled_parse(1e-9), check_errors=False,
                         doc="wavelength set point (does not wait for the move; see set_wavelength)")
    measured_wavelength_m = Setting("SENSe:WAVElength", None, unit="m", parse=_scaled_parse(1e-9),
                                    doc="wavelength measured by the controller")
    output = Setting("OUTPut:STATe?", "OUTPut:STATe {value}", mapping={True: "1", False: "0"},
                     check_errors=False, doc="laser diode on/off")
    track = Setting("OUTPut:TRACk?", "OUTPut:TRACk {value}", mapping={True: "1", False: "0"},
                    check_errors=False, doc="wavelength track mode")
    piezo = Setting("SOURce:VOLTage:PIEZo?", "SOURce:VOLTage:PIEZo {value}", dim="1", limits=(0.0, 1.0),
                    fmt=_Scaled(100.0, "{:.2f}"), parse=_scaled_parse(0.01), check_errors=False,
                    doc="piezo voltage as a fraction of its range (0–1; '45 %' accepted)")
    current = Setting("SOURce:CURRent:DIODe?", "SOURce:CURRent:DIODe {value}", unit="A", limits=_current_limits,
                      fmt=_Scaled(1e3, "{:.2f}"), parse=_scaled_parse(1e-3), check_errors=False,
                      doc="diode current set point")
    measured_current = Setting("SENSe:CURRent:DIODe", None, unit="A", parse=_scaled_parse(1e-3),
                               doc="measured diode current")
    measured_power = Setting("SENSe:POWer:DIODe", None, unit="W", parse=_scaled_parse(1e-3),
                             doc="measured output power")
    power_setpoint = Setting("SOURce:POWer:DIODe?", None, unit="W", parse=_scaled_parse(1e-3),
                             doc="power set point (constant-power mode)")
    slew_rate_nm_s = Setting("SOURce:WAVElength:SLEWrate:FORWard?", "SOURce:WAVElength:SLEWrate:FORWard {value}",
                             limits=(0.01, 20.0), fmt="{:.3f}", check_errors=False,
                             doc="forward slew rate of wavelength moves in nm/s")

    def __init__(self, name: str, transport: Any, **options: Any) -> None:
        super().__init__(name, transport, **options)
        try:
            lo, hi = options.get("wavelength_range", ("1520 nm", "1570 nm"))
            self.wavelength_range = (_units.parse_as(lo, "m", where=f"{name}.options.wavelength_range"),
                                     _units.parse_as(hi, "m", where=f"{name}.options.wavelength_range"))
        except (TypeError, ValueError) as e:
            raise InputError(f"{name}.options.wavelength_range: {e}", fix="write it as ['1520 nm', '1570 nm']") from None
        if not self.wavelength_range[0] < self.wavelength_range[1]:
            raise InputError(f"{name}.options.wavelength_range is empty or reversed", fix="write [low, high]")
        self.max_current = _units.parse_as(options.get("max_current", "165 mA"), "A", where=f"{name}.options.max_current")
        self.move_timeout = _units.parse_as(options.get("move_timeout", "60 s"), "s", where=f"{name}.options.move_timeout")
        self.poll_interval = _units.parse_as(options.get("poll_interval", "50 ms"), "s", where=f"{name}.options.poll_interval")
        self.auto_track = bool(options.get("auto_track", True))

    @classmethod
    def open_transport(cls, resource: str, **kw: Any) -> TransportBase | None:
        """``NEWPORT-USB::4106::<key>`` -> the Newport USB library (ctypes); anything else -> None."""
        if RESOURCE_RE.match(resource):
            return NewportUsbTransport(resource, **kw)
        return None

    # -- I/O: every set command is answered "OK" ----------------------------------------------
    def write(self, command: str) -> None:
        """Send a set command and check its ``OK``; otherwise raise with the ``ERRSTR?`` entries."""
        try:
            reply = self.transport.query(command).strip()
        except InstrumentTimeout:
            errors = self._drain_errors()
            if errors:
                raise InstrumentError(self.name, command, "; ".join(errors)) from None
            raise
        if reply != "OK":
            errors = self._drain_errors()
            detail = f"replied {reply!r} instead of OK"
            raise InstrumentError(self.name, command, detail + (": " + "; ".join(errors) if errors else ""))

    def query(self, command: str) -> str:
        reply = self.transport.query(command)
        if reply.strip() == "OK":  # a stale acknowledgement in front of the answer (see module doc)
            log.warning("%s: stale 'OK' before the answer to %r; reading again", self.name, command)
            reply = self.transport.read()
        return reply

    def _drain_errors(self) -> list[str]:
        out = []
        for _ in range(32):
            msg = self.parse_error(self.transport.query(self.error_query))
            if msg is None:
                break
            out.append(msg)
        return out

    def connect(self) -> None:
        """Discard replies and errors left in the controller's buffers by earlier sessions."""
        discard = getattr(self.transport, "discard_input", None)
        if discard is not None:
            discard()
        stale = self._drain_errors()
        if stale:
            log.warning("%s: discarded stale controller errors: %s", self.name, "; ".join(stale))

    # -- Laser protocol -----------------------------------------------------------------------
    def set_wavelength(self, wavelength_m: float | str, wait: bool = True, timeout_s: float | None = None) -> None:
        """Move to ``wavelength_m`` (m, or a string like ``"1553.8 nm"``); with ``wait``, poll
        ``*OPC?`` until the move has finished (``move_timeout``, or ``timeout_s``)."""
        value = type(self).wavelength.validate(self, wavelength_m)
        limit = self.move_timeout if timeout_s is None else timeout_s
        if isinstance(limit, bool) or not isinstance(limit, (int, float)) or not (limit > 0 and math.isfinite(limit)):
            raise SettingError(self.name, "timeout_s", timeout_s, "positive numbers of seconds", "s")
        if self.auto_track:
            self.track = True
        self.wavelength = value
        if wait:
            self.wait_for_move(limit)

    def wait_for_move(self, timeout_s: float | None = None) -> None:
        """Poll ``*OPC?`` until it answers 1; InstrumentError if the move outlasts ``timeout_s``."""
        limit = self.move_timeout if timeout_s is None else timeout_s
        deadline = time.monotonic() + limit
        while True:
            reply = self.query("*OPC?").strip()
            if reply == "1":
                return
            if reply != "0":
                raise InstrumentError(self.name, "*OPC?", f"unexpected reply {reply!r} (expected 0 or 1)")
            if time.monotonic() > deadline:
                errors = self._drain_errors()
                raise InstrumentError(self.name, "*OPC?", f"wavelength move did not finish within {limit:g} s"
                                      + (": " + "; ".join(errors) if errors else ""))
            time.sleep(self.poll_interval)

    def measured_wavelength(self) -> float:
        """Wavelength (m) measured by the controller (``SENSe:WAVElength``)."""
        return self.measured_wavelength_m

    def set_output(self, on: bool) -> None:
        """Laser diode on (``OUTPut:STATe 1``) or off."""
        if not isinstance(on, bool):
            raise SettingError(self.name, "output", on, "True or False")
        self.output = on

    def set_track(self, on: bool) -> None:
        if not isinstance(on, bool):
            raise SettingError(self.name, "track", on, "True or False")
        self.track = on

    def set_piezo(self, fraction: float | str) -> None:
        """Piezo voltage as a fraction of its range (0–1, or ``"45 %"``)."""
        self.piezo = fraction

    def set_current(self, amps: float | str) -> None:
        """Diode current set point (A, or ``"120 mA"``)."""
        self.current = amps

    def error_string(self) -> str:
        """One raw ``ERRSTR?`` reply (``0,NO ERROR`` when the buffer is empty)."""
        return self.query(self.error_query).strip()

    def safe_state(self) -> None:
        """Laser diode off: no light towards the cryostat. Set points are kept."""
        self.output = False
