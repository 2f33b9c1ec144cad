"""Test helpers: message-list protocol tests in the manner of PyMeasure's ``expected_protocol``.

    with expected_protocol(AFG3152C, [("SOURce1:FREQuency 20000", None),
                                      ("SYSTem:ERRor?", '0,"No error"')]) as afg:
        afg.ch1.frequency = 20e3

The transport asserts that the driver writes exactly these messages in this order, answers with
the given replies, and that every pair was used when the block ends. Binary writes are compared as
bytes. ``RecordingTransport`` instead records what is written and answers from a callback, for
checks that only care about the writes.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

from .errors import InstrumentTimeout
from .instrument.transport import TransportBase

Pair = tuple["str | bytes | None", "str | bytes | None"]


class ProtocolMismatch(AssertionError):
    pass


class ProtocolTransport(TransportBase):
    """A transport that checks every write against a list of expected (write, reply) pairs."""

    def __init__(self, pairs: Sequence[Pair], **kw: Any) -> None:
        super().__init__("protocol://test", **kw)
        self.pairs = list(pairs)
        self.index = 0
        self._replies: list[bytes] = []
        self.written: list[str | bytes] = []

    def _next(self) -> Pair:
        if self.index >= len(self.pairs):
            raise ProtocolMismatch(f"unexpected extra communication after {len(self.pairs)} pairs; "
                                   f"written so far: {self.written}")
        p = self.pairs[self.index]
        self.index += 1
        return p

    def write(self, message: str) -> None:
        self.written.append(message)
        self._expect_write(message)

    def write_raw(self, data: bytes) -> None:
        self.written.append(data)
        self._expect_write(data)

    def _expect_write(self, got: str | bytes) -> None:
        while True:
            want, reply = self._next()
            if want is None:
                raise ProtocolMismatch(f"pair {self.index - 1}: expected a read, got write {got!r}")
            if isinstance(got, bytes) and isinstance(want, str):
                want = (want + self.write_termination).encode(self.encoding) if not want.endswith(self.write_termination) else want.encode()
            if got != want:
                raise ProtocolMismatch(f"pair {self.index - 1}: expected write {want!r}, got {got!r}")
            if reply is not None:
                self._replies.append(reply.encode(self.encoding) if isinstance(reply, str) else reply)
            return

    def read(self) -> str:
        return self._pop().decode(self.encoding)

    def read_raw(self, size: int | None = None) -> bytes:
        return self._pop()

    def _pop(self) -> bytes:
        if self._replies:
            return self._replies.pop(0)
        # a pair (None, reply): a read with no write before it
        if self.index < len(self.pairs) and self.pairs[self.index][0] is None:
            _, reply = self._next()
            return reply.encode(self.encoding) if isinstance(reply, str) else (reply or b"")
        raise InstrumentTimeout(self.name, self.resource, self._last_command, self.timeout)

    def assert_done(self) -> None:
        if self.index != len(self.pairs):
            raise ProtocolMismatch(f"only {self.index} of {len(self.pairs)} pairs were used; "
                                   f"next expected: {self.pairs[self.index]!r}")
        if self._replies:
            raise ProtocolMismatch(f"replies never read: {self._replies!r}")


@contextmanager
def expected_protocol(driver_cls: type, pairs: Sequence[Pair], name: str = "dut",
                      **options: Any) -> Iterator[Any]:
    """Build ``driver_cls`` on a ProtocolTransport; check all pairs were consumed at the end."""
    t = ProtocolTransport(pairs, read_termination=driver_cls.read_termination,
                          write_termination=driver_cls.write_termination)
    inst = driver_cls(name, t, **options)
    yield inst
    t.assert_done()


class RecordingTransport(TransportBase):
    """Records every write; answers queries from ``responder(message) -> reply | None``."""

    def __init__(self, responder: Callable[[str], str | None] | None = None, **kw: Any) -> None:
        super().__init__("recording://test", **kw)
        self.responder = responder or (lambda m: None)
        self.written: list[str | bytes] = []
        self._replies: list[str] = []

    def write(self, message: str) -> None:
        self.written.append(message)
        self._last_command = message
        r = self.responder(message)
        if r is not None:
            self._replies.append(r)

    def write_raw(self, data: bytes) -> None:
        self.written.append(data)

    def read(self) -> str:
        if not self._replies:
            raise InstrumentTimeout(self.name, self.resource, self._last_command, self.timeout)
        return self._replies.pop(0)

    def read_raw(self, size: int | None = None) -> bytes:
        return self.read().encode(self.encoding)
