"""Base classes for Python device models: simulators that speak an instrument's wire protocol.

A model receives the bytes a driver writes (``feed``) and produces the bytes the instrument would
send back (``take``). The same model object backs the in-process ``--sim`` station
(``labctl.instrument.transport.ModelTransport``), the TCP/pty emulator used for
hardware-in-the-loop tests, and the digital twin, which reads a model's state.

``YamlScpiModel`` runs a pyvisa-sim YAML definition (the instrument's text command set, stateful
properties with limits, identity) and adds in Python what pyvisa-sim cannot express: IEEE-488.2
binary blocks, the SCPI error queue with the real error numbers, and values computed by the twin.
"""
from __future__ import annotations

import re
import threading
from collections import deque
from pathlib import Path
from typing import Any, Callable

MODELS_DIR = Path(__file__).resolve().parent
VISA_DIR = MODELS_DIR.parent / "visa"

#: SCPI error numbers (IEEE 488.2 / SCPI-99)
SCPI_NO_ERROR = '0,"No error"'
SCPI_UNDEFINED_HEADER = '-113,"Undefined header"'
SCPI_DATA_OUT_OF_RANGE = '-222,"Data out of range"'
SCPI_PARAMETER_NOT_ALLOWED = '-108,"Parameter not allowed"'
SCPI_BLOCK_DATA_ERROR = '-160,"Block data error"'
SCPI_SETTINGS_CONFLICT = '-221,"Settings conflict"'
SCPI_QUEUE_OVERFLOW = '-350,"Queue overflow"'


class DeviceModel:
    """A byte-stream device. Subclasses implement ``handle(message) -> reply | None``.

    :cvar in_terminator: what ends an incoming message (the driver's write termination).
    :cvar out_terminator: appended to every reply (the driver's read termination).
    :cvar block_aware: incoming IEEE-488.2 definite-length blocks (``#<n><len><data>``) may contain
        terminator bytes; with this set they do not end the message.
    """

    in_terminator: bytes = b"\n"
    out_terminator: bytes = b"\n"
    block_aware: bool = False
    max_message: int = 64 * 1024 * 1024

    def __init__(self, name: str = "", **options: Any) -> None:
        self.name = name or type(self).__name__
        self.options = options
        self._in = bytearray()
        self._out = bytearray()
        self.lock = threading.RLock()
        self.disconnected = False
        self.lab = None  #: the SimLab this model belongs to (set by the station)
        self.log: list[str] = []  #: every message handled, for tests and the twin
        #: fault hooks (issue: hardware-in-the-loop): called with (model, message) before handling;
        #: may return ("reply", bytes) to replace the answer or ("drop", None) to swallow it
        self.interceptors: list[Callable[["DeviceModel", str], Any]] = []

    # -- byte stream ----------------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        with self.lock:
            self._in.extend(data)
            if len(self._in) > self.max_message:
                self._in.clear()
                self.on_overflow()
                return
            while True:
                end = self._message_end()
                if end is None:
                    return
                msg_end, next_start = end
                raw = bytes(self._in[:msg_end])
                del self._in[:next_start]
                self._dispatch(raw)

    def _message_end(self) -> tuple[int, int] | None:
        term = self.in_terminator
        start = 0
        if self.block_aware:
            m = re.search(rb"#([1-9])", self._in)
            t = self._in.find(term)
            if m and (t < 0 or m.start() < t):
                n = int(m.group(1))
                head_end = m.end() + n
                if len(self._in) < head_end:
                    return None
                try:
                    length = int(self._in[m.end():head_end])
                except ValueError:
                    length = 0
                block_end = head_end + length
                if len(self._in) < block_end:
                    return None
                start = block_end
        i = self._in.find(term, start)
        if i < 0:
            return None
        return i, i + len(term)

    def _dispatch(self, raw: bytes) -> None:
        try:
            message = raw.decode("latin-1")
        except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
            message = ""
        self.log.append(message if len(message) < 200 else message[:200] + "…")
        if self.intercepted(message):
            return
        reply = self.handle(message)
        if reply is None:
            return
        if isinstance(reply, str):
            reply = reply.encode("latin-1")
        self._out.extend(reply + self.out_terminator)

    def intercepted(self, message: str) -> bool:
        """Run the fault hooks on ``message``; True if one dropped it or replaced the reply."""
        for hook in list(self.interceptors):
            action = hook(self, message)
            if action is None:
                continue
            kind, payload = action
            if kind == "drop":
                return True
            if kind == "reply":
                self._out.extend(payload)
                return True
        return False

    def take(self, max_bytes: int | None = None) -> bytes:
        """Bytes waiting to be read by the driver (all of them, or at most ``max_bytes``)."""
        with self.lock:
            n = len(self._out) if max_bytes is None else min(max_bytes, len(self._out))
            out = bytes(self._out[:n])
            del self._out[:n]
            return out

    def pending(self) -> int:
        return len(self._out)

    def reset_io(self) -> None:
        with self.lock:
            self._in.clear()
            self._out.clear()

    # -- behaviour ------------------------------------------------------------------------------
    def handle(self, message: str) -> str | bytes | None:
        raise NotImplementedError

    def on_overflow(self) -> None:
        """Input larger than ``max_message`` was discarded."""

    def power_cycle(self) -> None:
        """Lose all settings, as after a reboot (fault injection)."""
        self.reset_io()


def parse_block(data: str) -> bytes:
    """Payload of an IEEE-488.2 definite-length block ``#<n><length><payload>`` (latin-1 text)."""
    if not data.startswith("#") or len(data) < 2 or not data[1].isdigit() or data[1] == "0":
        raise ValueError("not a definite-length block")
    n = int(data[1])
    length = int(data[2:2 + n])
    payload = data[2 + n:2 + n + length]
    if len(payload) != length:
        raise ValueError(f"block announces {length} bytes, {len(payload)} received")
    return payload.encode("latin-1")


class YamlScpiModel(DeviceModel):
    """A SCPI instrument defined by a pyvisa-sim YAML file plus Python command handlers.

    Subclasses set ``yaml_file`` (in ``sim_instruments/visa/``) and ``yaml_resource`` (the resource
    name inside it), and may register handlers: ``handlers = [(regex, method_name), …]`` are tried
    first (case-insensitive, full match). Unknown commands put ``-113`` in the error queue, values
    outside a property's specs ``-222``, as the real instruments do.
    """

    yaml_file: str = ""
    yaml_resource: str = ""
    error_query: str = "SYSTem:ERRor?"
    handlers: list[tuple[str, str]] = []
    block_aware = True

    def __init__(self, name: str = "", **options: Any) -> None:
        super().__init__(name, **options)
        self.errors: deque[str] = deque(maxlen=64)
        self._compiled = [(re.compile(p, re.IGNORECASE | re.DOTALL), getattr(self, m)) for p, m in self.handlers]
        self.device = self._load_device()
        eq = self.error_query.upper()
        self._error_queries = {eq, _short_form(eq), eq.replace("SYSTEM", "SYST").replace("ERROR", "ERR")}

    def _load_device(self):
        from pyvisa_sim import parser

        devices = parser.get_devices(str(VISA_DIR / self.yaml_file), False)
        return devices[self.yaml_resource]

    # -- state access for subclasses and the twin ------------------------------------------------
    def prop(self, name: str) -> Any:
        """Current value of a YAML property (typed by its specs; str when it has none)."""
        return self.device._properties[name].get_value()

    def set_prop(self, name: str, value: Any) -> None:
        self.device._properties[name].set_value(str(value))

    def push_error(self, entry: str) -> None:
        if len(self.errors) == self.errors.maxlen:
            self.errors[-1] = SCPI_QUEUE_OVERFLOW
        else:
            self.errors.append(entry)

    def power_cycle(self) -> None:
        super().power_cycle()
        self.device = self._load_device()
        self.errors.clear()

    # -- dispatch -------------------------------------------------------------------------------
    def handle(self, message: str) -> str | bytes | None:
        replies = []
        for part in _split_commands(message):
            # never strip the end of a binary block: its last bytes may look like white space
            part = part.lstrip() if _ends_with_block(part) else part.strip()
            r = self.handle_one(part)
            if r is not None:
                replies.append(r if isinstance(r, str) else r.decode("latin-1"))
        return ";".join(replies) if replies else None

    def handle_one(self, cmd: str) -> str | bytes | None:
        if not cmd:
            return None
        if cmd.upper() in self._error_queries:
            return self.errors.popleft() if self.errors else SCPI_NO_ERROR
        if cmd.upper() in ("*CLS",):
            self.errors.clear()
            return None
        for rx, fn in self._compiled:
            m = rx.fullmatch(cmd)
            if m:
                return fn(m)
        return self.yaml_dispatch(cmd)

    def yaml_dispatch(self, cmd: str) -> str | None:
        dev = self.device
        q = cmd.encode("latin-1")
        # out-of-range check first: a setter that parses but whose value fails the specs
        for name, parser_, response, _err in dev._setters:
            try:
                value = parser_(cmd)
            except ValueError:
                continue
            try:
                dev._properties[name].validate_value(value)
            except ValueError:
                self.push_error(SCPI_DATA_OUT_OF_RANGE)
                return None
            dev._properties[name].set_value(value)
            return None if response is _NO_RESPONSE else response.decode("latin-1")
        reply = dev._match(q)
        if reply is None:
            self.push_error(SCPI_UNDEFINED_HEADER)
            return None
        if reply is _NO_RESPONSE:
            return None
        return reply.decode("latin-1")


def _ends_with_block(part: str) -> bool:
    """True if ``part`` carries an IEEE-488.2 definite-length block reaching its end."""
    m = re.search(r"#([1-9])", part)
    if not m:
        return False
    n = int(m.group(1))
    try:
        length = int(part[m.end():m.end() + n])
    except ValueError:
        return False
    return m.end() + n + length >= len(part.rstrip(" \t\r\n")) or m.end() + n + length >= len(part)


def _short_form(cmd: str) -> str:
    return re.sub(r"[a-z]", "", cmd) if cmd != cmd.upper() else cmd


def _split_commands(message: str) -> list[str]:
    """Split ``A;B;:C`` into commands, leaving binary blocks and quoted strings intact."""
    if "#" in message or '"' in message:
        parts, cur, i, quote = [], [], 0, False
        while i < len(message):
            c = message[i]
            if c == '"':
                quote = not quote
            if c == "#" and not quote and i + 1 < len(message) and message[i + 1].isdigit() and message[i + 1] != "0":
                n = int(message[i + 1])
                try:
                    length = int(message[i + 2:i + 2 + n])
                except ValueError:
                    length = 0
                end = i + 2 + n + length
                cur.append(message[i:end])
                i = end
                continue
            if c == ";" and not quote:
                parts.append("".join(cur))
                cur = []
            else:
                cur.append(c)
            i += 1
        parts.append("".join(cur))
        return [p.lstrip(":") for p in parts]
    return [p.lstrip(":") for p in message.split(";")]


try:  # the sentinel pyvisa-sim uses for "no response"
    from pyvisa_sim.component import NoResponse as _NO_RESPONSE
except ImportError:  # pragma: no cover
    _NO_RESPONSE = object()
