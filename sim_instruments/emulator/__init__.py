"""Hardware-in-the-loop emulation: the station's simulators served on loopback sockets and
pseudo-terminals, so the unchanged drivers reach them through their real transports (pyvisa-py
TCPIP SOCKET and ASRL sessions, pyserial). See ``docs/emulation.md`` and ``labctl emulate``."""
from __future__ import annotations

from .core import TAGGER_DRIVER, Emulator, RemoteTwin, attach_twin, serving_kind
from .servers import PtyServer, SocketServer, exchange
from .tagger import EmulatedTimeHarp260, RecordServer, RemoteRecordSource, RemoteTH260Library

__all__ = ["Emulator", "RemoteTwin", "SocketServer", "PtyServer", "RecordServer", "RemoteRecordSource",
           "RemoteTH260Library", "EmulatedTimeHarp260", "TAGGER_DRIVER", "attach_twin",
           "serving_kind", "exchange"]
