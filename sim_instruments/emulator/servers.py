"""Byte-stream servers that put a simulator model on the wire.

* :class:`SocketServer` — a raw TCP socket on 127.0.0.1 (what ``TCPIP0::host::port::SOCKET``
  resources and pyserial's ``socket://`` reach). Clients are served concurrently, one thread each;
  a model's ``feed`` + ``take`` is one atomic exchange, so two clients never get each other's
  replies.
* :class:`PtyServer` — a pseudo-terminal (``os.openpty``): the drivers open the slave
  (``/dev/pts/N``) as a serial port, through pyserial (``serial:///dev/pts/N``) or pyvisa-py
  (``ASRL/dev/pts/N::INSTR``). The emulator keeps its own handle on the slave so the port survives
  clients closing and reopening it; the line discipline is raw (no echo, no CR/LF translation).

Both feed what they receive to ``model.feed`` and send ``model.take()`` back. Faults: a
:class:`labctl.faults.LinkDropped` raised by the model (fault injection) closes the client's
socket (a serial link goes silent instead: its reply is lost); while ``model.disconnected`` is
true, a socket server refuses connections and a pty swallows everything.
"""
from __future__ import annotations

import errno
import logging
import os
import select
import socket
import termios
import threading
import tty
from typing import Any

from labctl.faults import LinkDropped

log = logging.getLogger("sim_instruments.emulator")

#: bytes a pty keeps for a client that does not read (a UART's buffer would overflow too)
PTY_MAX_PENDING = 64 * 1024


def exchange(model: Any, data: bytes) -> bytes:
    """Feed ``data`` to ``model`` and return everything it has to send (atomic per model)."""
    with model.lock:
        model.feed(data)
        return model.take()


class _Server:
    kind = "?"

    def __init__(self, name: str, model: Any) -> None:
        self.name = name
        self.model = model
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.exchanges = 0
        self.errors = 0

    def _spawn(self, target: Any, *args: Any, label: str = "") -> threading.Thread:
        t = threading.Thread(target=target, args=args, name=f"emu-{self.name}-{label}", daemon=True)
        t.start()
        self.threads.append(t)
        return t

    def _exchange(self, data: bytes) -> bytes:
        try:
            out = exchange(self.model, data)
        except LinkDropped:
            raise
        except Exception as e:  # a model bug must not take the server down: log, answer nothing
            self.errors += 1
            log.warning("%s: the simulator failed on %r: %s: %s", self.name, data[:60], type(e).__name__, e)
            return b""
        self.exchanges += 1
        return out

    def down(self) -> bool:
        return bool(getattr(self.model, "disconnected", False))


class SocketServer(_Server):
    """The model on a loopback TCP port (``resource``: ``TCPIP0::127.0.0.1::<port>::SOCKET``)."""

    kind = "socket"

    def __init__(self, name: str, model: Any, *, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(name, model)
        self.sock: socket.socket | None = self._listen(host, port)
        self.host, self.port = self.sock.getsockname()[:2]
        self.clients: set[socket.socket] = set()
        self.clients_lock = threading.Lock()
        self.connections = 0

    @staticmethod
    def _listen(host: str, port: int) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        s.listen(8)
        s.settimeout(0.1)
        return s

    def resource(self) -> str:
        return f"TCPIP0::{self.host}::{self.port}::SOCKET"

    def start(self) -> "SocketServer":
        self._spawn(self._accept_loop, label="accept")
        return self

    def _accept_loop(self) -> None:
        while not self.stop.is_set():
            if self.down():
                # the instrument is off the network (fault): connections are refused
                if self.sock is not None:
                    _close(self.sock)
                    self.sock = None
                self.stop.wait(0.02)
                continue
            if self.sock is None:
                try:
                    self.sock = self._listen(self.host, self.port)
                except OSError as e:
                    log.warning("%s: cannot listen on port %d again: %s", self.name, self.port, e)
                    self.stop.wait(0.1)
                    continue
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                if self.stop.is_set():
                    break
                continue
            if self.down():
                _close(conn)
                continue
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _quickack(conn)
            with self.clients_lock:
                if not self.clients:   # a fresh session: drop half-received input of the last one
                    self.model.reset_io()
                self.clients.add(conn)
                self.connections += 1
            self._spawn(self._serve, conn, label="client")

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(0.1)
        try:
            while not self.stop.is_set():
                if self.down():
                    break
                try:
                    data = conn.recv(1 << 16)
                except socket.timeout:
                    continue
                except OSError:
                    break
                if not data:
                    break
                _quickack(conn)
                try:
                    out = self._exchange(data)
                except LinkDropped:
                    log.info("%s: connection dropped (fault injection)", self.name)
                    break
                if out:
                    try:
                        conn.sendall(out)
                    except OSError:
                        break
        finally:
            with self.clients_lock:
                self.clients.discard(conn)
            _close(conn)

    def close(self) -> None:
        self.stop.set()
        if self.sock is not None:
            _close(self.sock)
        with self.clients_lock:
            for c in list(self.clients):
                _close(c)
            self.clients.clear()


class PtyServer(_Server):
    """The model behind a pseudo-terminal (``resource``: ``/dev/pts/N`` as a serial port)."""

    kind = "pty"

    def __init__(self, name: str, model: Any) -> None:
        super().__init__(name, model)
        self.master, self.slave = os.openpty()
        _raw(self.slave)
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self.slave)
        self.pending = bytearray()
        self.dropped_bytes = 0

    def start(self) -> "PtyServer":
        self._spawn(self._loop, label="pty")
        return self

    def _loop(self) -> None:
        while not self.stop.is_set():
            want_write = [self.master] if self.pending else []
            try:
                r, w, _ = select.select([self.master], want_write, [], 0.1)
            except (OSError, ValueError):
                break
            if r:
                try:
                    data = os.read(self.master, 1 << 16)
                except BlockingIOError:
                    data = b""
                except OSError as e:
                    if e.errno == errno.EIO:     # no slave open (cannot happen while we hold one)
                        self.stop.wait(0.05)
                        continue
                    break
                if data:
                    if self.down():
                        continue                 # the cable is pulled: nothing arrives
                    try:
                        out = self._exchange(data)
                    except LinkDropped:
                        log.info("%s: serial link dropped (fault injection): reply lost", self.name)
                        out = b""
                    if out:
                        self.pending.extend(out)
                        excess = len(self.pending) - PTY_MAX_PENDING
                        if excess > 0:           # nobody reads: the oldest bytes are lost
                            del self.pending[:excess]
                            self.dropped_bytes += excess
            if self.pending:
                try:
                    n = os.write(self.master, self.pending)
                    del self.pending[:n]
                except BlockingIOError:
                    pass
                except OSError:
                    self.pending.clear()

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=0.5)
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass


def _raw(fd: int) -> None:
    """Raw line discipline: bytes pass unchanged, nothing is echoed."""
    tty.setraw(fd, termios.TCSANOW)
    attrs = termios.tcgetattr(fd)
    attrs[3] &= ~(termios.ECHO | termios.ECHONL | termios.ICANON | termios.ISIG | termios.IEXTEN)
    attrs[1] &= ~termios.OPOST
    termios.tcsetattr(fd, termios.TCSANOW, attrs)


_TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", None)


def _quickack(conn: socket.socket) -> None:
    """Acknowledge at once (Linux re-arms delayed ACKs after every receive). Without it, a client
    with Nagle's algorithm on (pyvisa-py's default) that sends a command without a reply and then
    a query waits ~40 ms for the delayed ACK of the command before the query leaves."""
    if _TCP_QUICKACK is not None:
        try:
            conn.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
        except OSError:
            pass


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass


__all__ = ["SocketServer", "PtyServer", "exchange", "PTY_MAX_PENDING"]
