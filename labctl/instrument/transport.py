"""One transport abstraction under every driver.

A driver talks to a ``Transport``: text messages (``write``/``read``/``query``) and raw bytes
(``write_raw``/``read_raw``) with the instrument's terminators. Which one it gets is decided by
the station from the resource string, never by the driver:

======================================  ============================================================
resource                                transport
======================================  ============================================================
``TCPIP0::host::inst0::INSTR``,         ``VisaTransport`` (pyvisa; pyvisa-py by default, any VISA
``TCPIP::host::5025::SOCKET``,          library with ``visa_library``; pyvisa-sim with ``@sim``)
``USB0::…``, ``GPIB0::…``, ``ASRL…``
``serial:///dev/ttyUSB0``,              ``SerialTransport`` (pyserial ``serial_for_url``; any
``socket://host:port``, ``loop://``     pyserial URL)
``sim:<model>``                         ``ModelTransport`` (an in-process Python device model)
vendor library (ctypes)                 a driver-specific transport (e.g. the Newport USB library)
======================================  ============================================================

All transports raise ``InstrumentTimeout`` when the instrument does not answer and
``ConnectionLost`` when the link breaks, both naming the instrument and the resource.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Protocol, runtime_checkable

from ..errors import ConnectionLost, InstrumentError, InstrumentTimeout

log = logging.getLogger("labctl.io")


@runtime_checkable
class Transport(Protocol):
    """What a driver needs from a connection to its instrument."""

    resource: str
    name: str
    timeout: float  #: seconds

    def write(self, message: str) -> None: ...
    def read(self) -> str: ...
    def query(self, message: str) -> str: ...
    def write_raw(self, data: bytes) -> None: ...
    def read_raw(self, size: int | None = None) -> bytes: ...
    def close(self) -> None: ...


class TransportBase:
    """Shared logic: terminators, locking, I/O logging at debug level, query = write + read."""

    def __init__(self, resource: str, *, name: str = "", read_termination: str = "\n",
                 write_termination: str = "\n", timeout: float = 2.0, encoding: str = "ascii") -> None:
        self.resource = resource
        self.name = name or resource
        self.read_termination = read_termination
        self.write_termination = write_termination
        self.timeout = timeout
        self.encoding = encoding
        self.lock = threading.RLock()
        self._last_command: str | None = None
        #: I/O logging decided once (the CLI configures logging before connecting): the check
        #: costs more than a fast SCPI round trip's budget when done per message
        self.debug_io = log.isEnabledFor(logging.DEBUG)
        #: a query was sent and its reply not read (a timeout, an interruption): a late reply may
        #: still arrive and would be taken as the answer to the next query — discard_input() first
        self.reply_pending = False

    # -- to implement -----------------------------------------------------------------------
    def _send(self, data: bytes) -> None:
        raise NotImplementedError

    def _receive_until(self, terminator: bytes) -> bytes:
        """Bytes up to and excluding ``terminator``; raise InstrumentTimeout if none arrive."""
        raise NotImplementedError

    def _receive(self, size: int | None) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def _pop_until(self, terminator: bytes) -> bytes | None:
        """The buffered bytes before ``terminator`` (removed with it), or None if it has not come."""
        rx = self._rx
        i = rx.find(terminator)
        if i < 0:
            return None
        out = bytes(rx[:i])
        del rx[: i + len(terminator)]
        return out

    def _pop(self, size: int) -> bytes:
        """The first ``size`` buffered bytes (removed)."""
        out = bytes(self._rx[:size])
        del self._rx[:size]
        return out

    def discard_input(self) -> None:
        """Drop anything received but not read (stale echoes, prompts, replies after a fault)."""
        self.reply_pending = False
        rx = getattr(self, "_rx", None)
        if rx is not None:
            rx.clear()

    # -- public API ---------------------------------------------------------------------------
    def write(self, message: str) -> None:
        with self.lock:
            if self.debug_io:
                log.debug("%s <- %r", self.name, message)
            self._last_command = message
            self._send((message + self.write_termination).encode(self.encoding))

    def write_raw(self, data: bytes) -> None:
        with self.lock:
            if self.debug_io:
                log.debug("%s <- %d raw bytes %r…", self.name, len(data), data[:40])
            self._send(data)

    def read(self) -> str:
        with self.lock:
            raw = self._receive_until(self.read_termination.encode(self.encoding))
            text = raw.decode(self.encoding, errors="replace")
            if self.debug_io:
                log.debug("%s -> %r", self.name, text)
            return text

    def read_raw(self, size: int | None = None) -> bytes:
        with self.lock:
            data = self._receive(size)
            if self.debug_io:
                log.debug("%s -> %d raw bytes", self.name, len(data))
            return data

    def query(self, message: str) -> str:
        with self.lock:
            self.write(message)
            self.reply_pending = True
            text = self.read()
            self.reply_pending = False
            return text

    def _timeout_error(self) -> InstrumentTimeout:
        return InstrumentTimeout(self.name, self.resource, self._last_command, self.timeout)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.resource!r})"


class VisaTransport(TransportBase):
    """A pyvisa resource. ``backend`` is ``"@py"`` (pyvisa-py), ``"path.yaml@sim"`` (pyvisa-sim)
    or a VISA library path; serial parameters apply to ASRL resources."""

    def __init__(self, resource: str, *, backend: str = "@py", baud_rate: int | None = None,
                 **kw) -> None:
        super().__init__(resource, **kw)
        import pyvisa

        self._pyvisa = pyvisa
        try:
            self.rm = pyvisa.ResourceManager(backend)
            self.inst = self.rm.open_resource(resource)
        except (pyvisa.errors.VisaIOError, OSError, ValueError) as e:
            raise ConnectionLost(self.name, None, f"cannot open {resource} ({backend}): {e}") from None
        self.inst.timeout = int(self.timeout * 1000)
        self._visa_timeout = self.timeout
        if resource.upper().endswith("::SOCKET"):
            # small SCPI messages must not wait for Nagle's algorithm (~40 ms per set + error check)
            try:
                self.inst.set_visa_attribute(pyvisa.constants.VI_ATTR_TCPIP_NODELAY, pyvisa.constants.VI_TRUE)
            except Exception as e:  # a VISA library without the attribute: slower, still correct
                log.debug("%s: TCP_NODELAY not set: %s", self.name, e)
        self.inst.read_termination = self.read_termination or None
        self.inst.write_termination = self.write_termination
        if baud_rate and hasattr(self.inst, "baud_rate"):
            self.inst.baud_rate = baud_rate

    def _io(self, fn, *args):
        """Run one pyvisa call, mapping its errors to InstrumentTimeout / ConnectionLost."""
        if self.timeout != self._visa_timeout:  # setting the VISA attribute costs ~10 us: only on change
            self.inst.timeout = int(self.timeout * 1000)
            self._visa_timeout = self.timeout
        try:
            return fn(*args)
        except self._pyvisa.errors.VisaIOError as e:
            if e.error_code == self._pyvisa.constants.StatusCode.error_timeout:
                raise self._timeout_error() from None
            raise ConnectionLost(self.name, self._last_command, f"I/O with {self.resource} failed: {e}") from None
        except (OSError, EOFError) as e:
            raise ConnectionLost(self.name, self._last_command, f"I/O with {self.resource} failed: {e}") from None

    def write(self, message: str) -> None:
        with self.lock:
            if self.debug_io:
                log.debug("%s <- %r", self.name, message)
            self._last_command = message
            self._io(self.inst.write, message)

    def read(self) -> str:
        with self.lock:
            text = self._io(self.inst.read)
            if self.debug_io:
                log.debug("%s -> %r", self.name, text)
            return text

    def query(self, message: str) -> str:
        """One pyvisa ``query`` (write, then read up to the read terminator) under one lock."""
        with self.lock:
            if self.debug_io:
                log.debug("%s <- %r", self.name, message)
            self._last_command = message
            self.reply_pending = True
            text = self._io(self.inst.query, message)
            self.reply_pending = False
            if self.debug_io:
                log.debug("%s -> %r", self.name, text)
            return text

    def discard_input(self, wait_s: float = 0.05) -> None:
        """Read and drop whatever arrives within ``wait_s`` (a late reply after a timeout or an
        interrupted query), so the next query gets its own answer."""
        # no pyvisa flush/clear here: pyvisa-py's socket clear() loops for ever on a link the
        # peer closed (always readable, recv gives b""). Reads with a short timeout, bounded in
        # number and in total time, end on any link.
        with self.lock:
            self.reply_pending = False
            self.inst.timeout = max(1, int(wait_s * 1000))
            deadline = time.monotonic() + 10 * wait_s
            try:
                for _ in range(64):  # a device that never stops talking is not drained for ever
                    self.inst.read_raw()
                    if time.monotonic() > deadline:
                        break
            except Exception:  # noqa: BLE001 - the timeout that ends the drain, or a broken link
                pass           # (the safe state's reconnect handles that)
            finally:
                self.inst.timeout = int(self.timeout * 1000)
                self._visa_timeout = self.timeout

    def _send(self, data: bytes) -> None:
        self._io(self.inst.write_raw, data)

    def _receive(self, size: int | None) -> bytes:
        if size is None:
            return bytes(self._io(self.inst.read_raw))
        return bytes(self._io(self.inst.read_bytes, size))

    def close(self) -> None:
        try:
            self.inst.close()
        except Exception:  # closing a broken session must not mask the original error
            pass


class SerialTransport(TransportBase):
    """A serial port through pyserial (``serial_for_url``: device paths and pyserial URLs)."""

    def __init__(self, resource: str, *, baud_rate: int = 115200, **kw) -> None:
        super().__init__(resource, **kw)
        import serial

        self._serial = serial
        url = resource[len("serial://"):] if resource.startswith("serial://") else resource
        try:
            self.port = serial.serial_for_url(url, baudrate=baud_rate, timeout=self.timeout,
                                              write_timeout=self.timeout)
        except (serial.SerialException, ValueError, OSError) as e:
            raise ConnectionLost(self.name, None, f"cannot open serial port {url}: {e}") from None
        self._rx = bytearray()

    def _send(self, data: bytes) -> None:
        try:
            self.port.write(data)
            self.port.flush()
        except (self._serial.SerialException, OSError) as e:
            raise ConnectionLost(self.name, self._last_command, f"write to {self.resource} failed: {e}") from None

    def _receive_until(self, terminator: bytes) -> bytes:
        deadline = time.monotonic() + self.timeout
        while True:
            line = self._pop_until(terminator)
            if line is not None:
                return line
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._timeout_error()
            self.port.timeout = min(remaining, self.timeout)
            try:
                chunk = self.port.read(max(1, self.port.in_waiting))
            except (self._serial.SerialException, OSError) as e:
                raise ConnectionLost(self.name, self._last_command, f"read from {self.resource} failed: {e}") from None
            self._rx.extend(chunk)

    def _receive(self, size: int | None) -> bytes:
        want = size if size is not None else max(1, self.port.in_waiting)
        deadline = time.monotonic() + self.timeout
        while len(self._rx) < want:
            if time.monotonic() > deadline:
                raise self._timeout_error()
            self._rx.extend(self.port.read(want - len(self._rx)))
        return self._pop(want)

    def discard_input(self) -> None:
        """Discard anything unread (stale echoes after a fault)."""
        self.reply_pending = False
        self._rx.clear()
        self.port.reset_input_buffer()

    reset_input = discard_input

    def close(self) -> None:
        try:
            self.port.close()
        except Exception:
            pass


class ModelTransport(TransportBase):
    """An in-process simulator: bytes go to a device model, replies come from its output buffer.

    ``model`` has ``feed(data: bytes) -> None`` and ``take(max_bytes: int | None) -> bytes``
    (see ``sim_instruments.models.base.DeviceModel``). When nothing is buffered, a read times out
    exactly as a silent instrument would, without waiting the full timeout.
    """

    def __init__(self, resource: str, model, **kw) -> None:
        super().__init__(resource, **kw)
        self.model = model
        self._rx = bytearray()

    def _send(self, data: bytes) -> None:
        if getattr(self.model, "disconnected", False):
            raise ConnectionLost(self.name, self._last_command, f"{self.resource} is not connected")
        self.model.feed(data)

    def discard_input(self) -> None:
        self.reply_pending = False
        self._rx.clear()
        self.model.take(None)

    def _pull(self) -> bool:
        got = self.model.take(None)
        if got:
            self._rx.extend(got)
            return True
        return False

    def _receive_until(self, terminator: bytes) -> bytes:
        while True:
            line = self._pop_until(terminator)
            if line is not None:
                return line
            if not self._pull():
                raise self._timeout_error()

    def _receive(self, size: int | None) -> bytes:
        if size is None:
            self._pull()
            out = bytes(self._rx)
            self._rx.clear()
            return out
        while len(self._rx) < size:
            if not self._pull():
                raise self._timeout_error()
        return self._pop(size)


class NullTransport(TransportBase):
    """For virtual instruments that act through another instrument (``via:`` resources), e.g. a
    VOA driven by an analog output. Any I/O on it is a programming error."""

    def _send(self, data: bytes) -> None:
        raise InstrumentError(self.name, self._last_command,
                              f"{self.resource} is a virtual instrument and has no connection of its own")

    def _receive_until(self, terminator: bytes) -> bytes:
        raise InstrumentError(self.name, self._last_command,
                              f"{self.resource} is a virtual instrument and has no connection of its own")

    _receive = _receive_until  # type: ignore[assignment]


def wrap_instrument_errors(name: str, exc: Exception, command: str | None) -> InstrumentError:
    """Turn an unexpected low-level exception into an InstrumentError naming the instrument."""
    if isinstance(exc, InstrumentError):
        return exc
    return InstrumentError(name, command, f"{type(exc).__name__}: {exc}")
