"""The emulated time tagger: the TimeHarp mock library in the run process, its records from the
emulator process.

The TimeHarp 260 is driven through a vendor library (ctypes), so it cannot be put on a wire the
way the SCPI and serial instruments are. The split:

* **run process** — the driver (:class:`EmulatedTimeHarp260`, the unchanged
  ``drivers.picoquant_th260.TimeHarp260`` with one vendor-library transport added) calls a
  :class:`RemoteTH260Library`: the ordinary mock library (``sim_instruments.th260_mock``, every
  ``TH260_*`` function with its C-level behaviour, state machine and error codes) whose *record
  source* is a :class:`RemoteRecordSource`.
* **emulator process** — the tagger's mock library lives in the same ``SimLab`` as every other
  emulated instrument, so the digital twin (when attached) connects it to the lasers, pulse
  generator, SNSPD bias… A :class:`RecordServer` on a loopback port hands out that mock's record
  source: the run process's ``StartMeas`` sends the acquisition settings (``start``), and every
  ``ReadFiFo`` that needs records asks for them (``next``).

Record-stream protocol (TCP, 127.0.0.1; one request line of JSON, one reply)::

    {"op": "hello"}                      -> {"ok": true, "library": {mock options}, "info": {…}}
    {"op": "start", "settings": {…}}     -> {"ok": true, "info": {…}}
    {"op": "next", "max": N}             -> {"ok": true, "n": k, "info": {…}} + k little-endian uint32
    {"op": "info"}                       -> {"ok": true, "info": {…}}

``info`` carries what the mock reads from its source: ``sync_rate_hz``, ``sync_period_s``,
``time_unit_s``, ``time_s`` (null when the source has none) and ``count_rates_hz``.

Resource: ``TH260-EMU::127.0.0.1:<port>::<device index>``, with the station file's tagger driver
``sim_instruments.emulator.tagger.EmulatedTimeHarp260``.
"""
from __future__ import annotations

import json
import logging
import re
import socket
import threading
from typing import Any

import numpy as np

from drivers.picoquant_th260 import TH260Transport, TimeHarp260
from labctl.errors import ConnectionLost, InputError
from sim_instruments.th260_mock import HWIDENT_PICO, MODE_T2, MODE_T3, TH260MockLibrary

log = logging.getLogger("sim_instruments.emulator.tagger")

RESOURCE_RE = re.compile(r"^TH260-EMU::([^:]+):(\d+)::(\d+)$", re.I)
MAX_REQUEST = 1 << 20


def resource_for(host: str, port: int, device_index: int = 0) -> str:
    return f"TH260-EMU::{host}:{port}::{device_index}"


def parse_resource(resource: str) -> tuple[str, int, int]:
    m = RESOURCE_RE.match(resource.strip())
    if not m:
        raise InputError(f"{resource!r} is not an emulated TimeHarp resource",
                         fix="write it as TH260-EMU::127.0.0.1:<port>::<device index> (labctl emulate writes it)")
    return m.group(1), int(m.group(2)), int(m.group(3))


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, (np.bool_,)):
        return bool(v)
    return v


def _int_keys(d: Any) -> Any:
    """JSON turned the settings' channel keys into strings; give them back as ints."""
    if isinstance(d, dict):
        return {(int(k) if isinstance(k, str) and k.lstrip("-").isdigit() else k): _int_keys(v)
                for k, v in d.items()}
    return d


def library_options(mock: TH260MockLibrary) -> dict[str, Any]:
    """The constructor options that rebuild ``mock``'s boards (identity, channels, pacing)."""
    devs = sorted(mock.devices)
    d0 = mock.devices[devs[0]]
    opts: dict[str, Any] = {"model": "P" if d0.model == HWIDENT_PICO else "N", "n_channels": d0.n_channels,
                            "devices": devs, "pacing": mock.pacing, "speed": mock.speed,
                            "fifo_depth": mock.fifo_depth, "sync_rate_hz": mock.sync_rate_hz,
                            "features": d0.features, "partno": mock.partno, "hw_version": mock.hw_version,
                            "library_version": mock.library_version}
    if len(devs) == 1:
        opts["serial"] = d0.serial
    return opts


# ---- emulator side ------------------------------------------------------------------------------
class RecordServer:
    """Serves the record source of the emulator's tagger mock on a loopback port."""

    def __init__(self, name: str, mock: TH260MockLibrary, *, host: str = "127.0.0.1") -> None:
        self.name = name
        self.mock = mock
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(4)
        self.sock.settimeout(0.2)
        self.host, self.port = self.sock.getsockname()[:2]
        self.stop = threading.Event()
        self.clients: set[socket.socket] = set()
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def resource(self) -> str:
        return resource_for(self.host, self.port, sorted(self.mock.devices)[0])

    def start(self) -> "RecordServer":
        t = threading.Thread(target=self._accept_loop, name=f"emu-{self.name}-accept", daemon=True)
        t.start()
        self.threads.append(t)
        return self

    def _accept_loop(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self.clients.add(conn)
            t = threading.Thread(target=self._serve, args=(conn,), name=f"emu-{self.name}-records", daemon=True)
            t.start()

    # -- source access ------------------------------------------------------------------------------
    def source(self) -> Any:
        with self.mock.lock:
            return self.mock._source_for_start()

    def info(self) -> dict[str, Any]:
        src = self.source()
        rates = getattr(src, "count_rates_hz", None)
        try:
            rates_v = [float(r) for r in rates()] if callable(rates) else None
        except Exception:  # a source that cannot tell before it starts
            rates_v = None

        def num(attr: str) -> float | None:
            v = getattr(src, attr, None)
            try:
                return None if v is None else float(v)
            except (TypeError, ValueError):
                return None

        return {"sync_rate_hz": num("sync_rate_hz") if hasattr(src, "sync_rate_hz") else None,
                "sync_period_s": num("sync_period_s"), "time_unit_s": num("time_unit_s"),
                "time_s": num("time_s"), "count_rates_hz": rates_v}

    def _mirror(self, settings: dict[str, Any]) -> None:
        """Show the run process's acquisition settings on the emulator's own mock board, so the
        twin sees the same tagger state it would in --sim."""
        try:
            with self.mock.lock:
                d = self.mock.devices[sorted(self.mock.devices)[0]]
                d.is_open = True
                d.mode = MODE_T3 if settings.get("mode") == "T3" else MODE_T2
                d.sync_divider = int(settings.get("sync_divider", d.sync_divider))
                res = settings.get("resolution_s")
                if res and d.mode == MODE_T3:
                    d.binning = max(0, int(round(np.log2(res / (d.base_resolution_ps * 1e-12)))))
                d.offset_ns = int(round(settings.get("offset_s", 0.0) * 1e9))
                d.sync_offset_ps = int(round(settings.get("sync_offset_s", 0.0) * 1e12))
                for c, v in (settings.get("channel_offsets_s") or {}).items():
                    if 0 <= int(c) < d.n_channels:
                        d.input_offset_ps[int(c)] = int(round(v * 1e12))
                for c, v in (settings.get("enabled") or {}).items():
                    if 0 <= int(c) < d.n_channels:
                        d.input_enable[int(c)] = int(bool(v))
                d.tacq_ms = int(round(settings.get("acquisition_time_s", 0.0) * 1000))
                d.measuring = d.started = True
        except Exception as e:  # mirroring is for the twin's benefit only
            log.debug("%s: could not mirror settings: %s", self.name, e)

    def _handle(self, req: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        op = req.get("op")
        if op == "hello":
            return {"ok": True, "library": library_options(self.mock), "info": self.info()}, b""
        if op == "start":
            settings = _int_keys(req.get("settings") or {})
            self._mirror(settings)
            src = self.source()
            start = getattr(src, "start", None)
            if start is not None:
                start(settings)
            return {"ok": True, "info": self.info()}, b""
        if op == "next":
            n = max(0, min(int(req.get("max", 0)), 1 << 22))
            src = self.source()
            recs = np.ascontiguousarray(np.asarray(src.next_records(n), dtype=np.uint32))
            data = recs.astype("<u4", copy=False).tobytes()
            return {"ok": True, "n": int(recs.size), "info": self.info()}, data
        if op == "info":
            return {"ok": True, "info": self.info()}, b""
        return {"ok": False, "error": f"unknown op {op!r}"}, b""

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(0.2)
        buf = bytearray()
        try:
            while not self.stop.is_set():
                i = buf.find(b"\n")
                if i < 0:
                    if len(buf) > MAX_REQUEST:
                        break
                    try:
                        chunk = conn.recv(65536)
                    except socket.timeout:
                        continue
                    except OSError:
                        break
                    if not chunk:
                        break
                    buf.extend(chunk)
                    continue
                line = bytes(buf[:i])
                del buf[:i + 1]
                try:
                    reply, data = self._handle(json.loads(line))
                except Exception as e:  # report to the client, keep serving
                    log.warning("%s: record request failed: %s", self.name, e)
                    reply, data = {"ok": False, "error": f"{type(e).__name__}: {e}"}, b""
                conn.sendall(json.dumps(_jsonable(reply)).encode() + b"\n" + data)
        finally:
            with self.lock:
                self.clients.discard(conn)
            try:
                conn.close()
            except OSError:
                pass

    def close(self) -> None:
        self.stop.set()
        try:
            self.sock.close()
        except OSError:
            pass
        with self.lock:
            for c in list(self.clients):
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                try:
                    c.close()
                except OSError:
                    pass
            self.clients.clear()


# ---- run-process side ---------------------------------------------------------------------------
class RemoteRecordSource:
    """A record source (``start``/``next_records``/rates) living in the emulator process."""

    def __init__(self, host: str, port: int, *, name: str = "tagger", timeout: float = 10.0) -> None:
        self.name = name
        self.address = (host, port)
        self.timeout = timeout
        self.lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._rx = bytearray()
        self._info: dict[str, Any] = {}
        self.library: dict[str, Any] = {}

    def _connect(self) -> socket.socket:
        if self._sock is None:
            try:
                self._sock = socket.create_connection(self.address, timeout=self.timeout)
            except OSError as e:
                raise ConnectionLost(self.name, None, f"cannot reach the emulator's record stream at "
                                     f"{self.address[0]}:{self.address[1]}: {e} (is 'labctl emulate' running?)") from None
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._rx.clear()
        return self._sock

    def _recv_until(self, n: int | None) -> bytes:
        """A reply line (n None) or exactly n bytes."""
        s = self._sock
        assert s is not None
        while True:
            if n is None:
                i = self._rx.find(b"\n")
                if i >= 0:
                    out = bytes(self._rx[:i])
                    del self._rx[:i + 1]
                    return out
            elif len(self._rx) >= n:
                out = bytes(self._rx[:n])
                del self._rx[:n]
                return out
            chunk = s.recv(1 << 20)
            if not chunk:
                raise OSError("the emulator closed the record stream")
            self._rx.extend(chunk)

    def request(self, req: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        with self.lock:
            try:
                s = self._connect()
                s.sendall(json.dumps(_jsonable(req)).encode() + b"\n")
                reply = json.loads(self._recv_until(None))
                data = self._recv_until(4 * int(reply.get("n", 0))) if reply.get("n") else b""
            except (OSError, ValueError) as e:
                self.close()
                raise ConnectionLost(self.name, req.get("op"), f"record stream from the emulator at "
                                     f"{self.address[0]}:{self.address[1]} failed: {e}") from None
        if not reply.get("ok"):
            raise ConnectionLost(self.name, req.get("op"), f"the emulator refused: {reply.get('error')}")
        if "info" in reply:
            self._info = reply["info"] or {}
        if "library" in reply:
            self.library = reply["library"] or {}
        return reply, data

    def hello(self) -> dict[str, Any]:
        self.request({"op": "hello"})
        return self.library

    # -- the record-source interface the mock uses --------------------------------------------------
    def start(self, settings: dict[str, Any]) -> None:
        self.request({"op": "start", "settings": settings})

    def next_records(self, max_records: int) -> np.ndarray:
        _, data = self.request({"op": "next", "max": int(max_records)})
        return np.frombuffer(data, dtype="<u4").astype(np.uint32)

    def _get(self, key: str) -> Any:
        if not self._info:
            self.request({"op": "info"})
        return self._info.get(key)

    @property
    def sync_rate_hz(self) -> float:
        return float(self._get("sync_rate_hz") or 0.0)

    @property
    def sync_period_s(self) -> float | None:
        return self._get("sync_period_s")

    @property
    def time_unit_s(self) -> float | None:
        return self._get("time_unit_s")

    @property
    def time_s(self) -> float | None:
        return self._info.get("time_s")

    def count_rates_hz(self) -> list[float]:
        self.request({"op": "info"})
        return list(self._info.get("count_rates_hz") or [])

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None


class RemoteTH260Library(TH260MockLibrary):
    """The TH260 mock library with its records from the emulator (same boards as the emulator's
    mock: the identity and options come from the ``hello`` of the record stream)."""

    def __init__(self, name: str = "", *, records: str | tuple[str, int], **options: Any) -> None:
        host, port = (records.rsplit(":", 1) if isinstance(records, str) else records)
        self.remote = RemoteRecordSource(str(host), int(port), name=name or "tagger")
        lib = dict(self.remote.hello())
        super().__init__(name, source=self.remote, **lib)

    def close(self) -> None:
        self.remote.close()


class EmulatedTH260Transport(TH260Transport):
    """Carries the remote mock library; closing it closes the record stream."""

    def close(self) -> None:
        lib = getattr(self, "lib", None)
        if lib is not None and hasattr(lib, "close"):
            lib.close()


class EmulatedTimeHarp260(TimeHarp260):
    """``drivers.picoquant_th260.TimeHarp260`` with one more vendor-library transport: a
    ``TH260-EMU::host:port::index`` resource gives the mock library fed by ``labctl emulate``.
    Every other resource behaves as for the plain driver."""

    @classmethod
    def open_transport(cls, resource: str, **kw: Any) -> TH260Transport:
        if not RESOURCE_RE.match(resource.strip()):
            return super().open_transport(resource, **kw)
        host, port, idx = parse_resource(resource)
        lib = RemoteTH260Library(kw.get("name", "tagger"), records=(host, port))
        return EmulatedTH260Transport(resource, lib=lib, device_index=idx, **kw)


__all__ = ["RecordServer", "RemoteRecordSource", "RemoteTH260Library", "EmulatedTimeHarp260",
           "EmulatedTH260Transport", "resource_for", "parse_resource", "library_options"]
