"""PicoQuant PTU files: header tags, memory-mapped records, and a writer.

File layout (PicoQuant's unified TTTR format, as read by ``PTU/Python/Read_PTU.py`` in
PicoQuant/PicoQuant-Time-Tagged-File-Format-Demos): the magic ``PQTTTR\\0\\0``, an 8-byte version
string, then tags of 48 bytes each (32-byte name, int32 index, uint32 type code, 8-byte value);
for Float8Array, AnsiString, WideString and BinaryBlob the value is a byte count and that many
bytes follow. The header ends with the tag ``Header_End``; the 32-bit little-endian records follow.

Header values are read into a dict keyed by the tag name, or ``Name(idx)`` for indexed tags
(index >= 0), as the vendor demo prints them:

======================  =======================================
Empty8                  ``None``
Bool8                   ``bool``
Int8, BitSet64, Color8  ``int``
Float8                  ``float``
TDateTime               ``datetime`` (UTC)
Float8Array             ``numpy.ndarray`` of float64
AnsiString, WideString  ``str`` (trailing NULs stripped)
BinaryBlob              ``bytes``
======================  =======================================

Every problem with a file is an :class:`~labctl.errors.InputError` naming the file: truncated
header or data, wrong magic, unknown tag type, a length beyond the file or above the size limits,
missing required tags, an unknown record type, ``Measurement_Mode`` disagreeing with the record
type, fewer records than ``TTResult_NumberOfRecords`` says.

About the mode check: in PicoQuant files ``Measurement_Mode`` holds the T-mode (2 = T2, 3 = T3,
0 = histogram) while ``Measurement_SubMode`` is the acquisition sub-mode (0 oscilloscope,
1 integration, 2 TRES, 3 image; the reference T2 file carries SubMode 0 and the beads T3 file
SubMode 3 = image), so it is ``Measurement_Mode`` that is checked against the record type.
"""
from __future__ import annotations

import math
import os
import struct
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Mapping

import numpy as np

from ..errors import InputError
from .records import RecordFormat, record_format

MAGIC = b"PQTTTR\0\0"
DEFAULT_VERSION = "1.0.00"

TY_EMPTY8 = 0xFFFF0008
TY_BOOL8 = 0x00000008
TY_INT8 = 0x10000008
TY_BITSET64 = 0x11000008
TY_COLOR8 = 0x12000008
TY_FLOAT8 = 0x20000008
TY_TDATETIME = 0x21000008
TY_FLOAT8ARRAY = 0x2001FFFF
TY_ANSISTRING = 0x4001FFFF
TY_WIDESTRING = 0x4002FFFF
TY_BINARYBLOB = 0xFFFFFFFF
TAG_TYPE_NAMES = {TY_EMPTY8: "Empty8", TY_BOOL8: "Bool8", TY_INT8: "Int8", TY_BITSET64: "BitSet64",
                  TY_COLOR8: "Color8", TY_FLOAT8: "Float8", TY_TDATETIME: "TDateTime",
                  TY_FLOAT8ARRAY: "Float8Array", TY_ANSISTRING: "AnsiString",
                  TY_WIDESTRING: "WideString", TY_BINARYBLOB: "BinaryBlob"}
_VARIABLE = (TY_FLOAT8ARRAY, TY_ANSISTRING, TY_WIDESTRING, TY_BINARYBLOB)

#: size limits for header values (bytes); real headers hold a few kB
MAX_STRING_BYTES = 1 << 20
MAX_ARRAY_BYTES = 16 << 20
MAX_BLOB_BYTES = 64 << 20
MAX_TAGS = 100_000

#: records per chunk when streaming through a file (16 MiB of records)
DEFAULT_CHUNK = 1 << 22

_TAG_HEAD = struct.Struct("<32siI8s")
_DELPHI_EPOCH = datetime(1899, 12, 30, tzinfo=timezone.utc)


@dataclass
class Tag:
    """One header tag for the writer (the reader returns plain values)."""

    name: str
    value: Any
    type: int | None = None  #: a TY_* code; inferred from the value when None
    idx: int = -1


@dataclass
class PtuHeader:
    """A parsed PTU header. Times in seconds, rates in Hz."""

    path: str
    version: str
    tags: dict[str, Any]          #: ``Name`` or ``Name(idx)`` -> value
    types: dict[str, int]         #: same keys -> TY_* code
    data_offset: int              #: byte offset of the first record
    fmt: RecordFormat
    num_records: int              #: TTResult_NumberOfRecords
    global_resolution: float      #: s; T2 time unit, T3 sync period
    resolution: float | None      #: s; T3 dtime bin (None if absent)
    sync_rate: float | None       #: Hz (None if absent)

    def get(self, name: str, idx: int = -1, default: Any = None) -> Any:
        return self.tags.get(name if idx < 0 else f"{name}({idx})", default)


def _err(path: str, what: str, fix: str = "the file is damaged or not a PicoQuant PTU file; "
         "export it again from the acquisition software") -> InputError:
    return InputError(what, file=path, fix=fix)


def _read_exact(f: BinaryIO, n: int, path: str, what: str) -> bytes:
    b = f.read(n)
    if len(b) != n:
        raise _err(path, f"file ends inside the header ({what})",
                   "the file is truncated; copy it again from the acquisition PC")
    return b


def _tag_value(f: BinaryIO, path: str, name: str, typ: int, raw: bytes, size: int) -> Any:
    if typ == TY_EMPTY8:
        return None
    if typ == TY_BOOL8:
        return struct.unpack("<q", raw)[0] != 0
    if typ in (TY_INT8, TY_BITSET64, TY_COLOR8):
        return struct.unpack("<q", raw)[0]
    if typ == TY_FLOAT8:
        return struct.unpack("<d", raw)[0]
    if typ == TY_TDATETIME:
        days = struct.unpack("<d", raw)[0]
        try:
            return _DELPHI_EPOCH + timedelta(days=days)
        except (OverflowError, ValueError):
            raise _err(path, f"tag {name}: {days!r} is not a valid date") from None
    if typ in _VARIABLE:
        n = struct.unpack("<q", raw)[0]
        limit = {TY_FLOAT8ARRAY: MAX_ARRAY_BYTES, TY_BINARYBLOB: MAX_BLOB_BYTES}.get(typ, MAX_STRING_BYTES)
        if n < 0:
            raise _err(path, f"tag {name}: negative length {n}")
        if n > limit:
            raise _err(path, f"tag {name}: {n} bytes is above the limit of {limit} for a "
                       f"{TAG_TYPE_NAMES[typ]} header value")
        if f.tell() + n > size:
            raise _err(path, f"tag {name}: its {n} bytes reach beyond the end of the file",
                       "the file is truncated or its header is corrupt")
        data = _read_exact(f, n, path, name)
        if typ == TY_ANSISTRING:
            try:
                return data.decode("utf-8").rstrip("\0")
            except UnicodeDecodeError:
                return data.decode("latin-1").rstrip("\0")
        if typ == TY_WIDESTRING:
            return data[: len(data) - len(data) % 2].decode("utf-16-le", errors="replace").rstrip("\0")
        if typ == TY_FLOAT8ARRAY:
            if n % 8:
                raise _err(path, f"tag {name}: Float8Array of {n} bytes is not a whole number of doubles")
            return np.frombuffer(data, dtype="<f8").astype(np.float64)
        return bytes(data)
    raise _err(path, f"tag {name!r} has unknown type code 0x{typ:08X}")


def read_header(path: str | os.PathLike[str]) -> PtuHeader:
    """Parse and validate the header of a PTU file (records are not read)."""
    p = str(path)
    try:
        size = os.path.getsize(p)
        f = open(p, "rb")
    except FileNotFoundError:
        raise InputError("no such file", file=p, fix="check the path") from None
    except IsADirectoryError:
        raise InputError("is a directory, not a PTU file", file=p, fix="name a .ptu file") from None
    except OSError as e:
        raise InputError(f"cannot open: {e.strerror or e}", file=p, fix="check the path and permissions") from None
    with f:
        magic = f.read(8)
        if magic != MAGIC:
            if len(magic) < 8 and MAGIC.startswith(magic) and magic:
                raise _err(p, "file ends inside the magic number", "the file is truncated")
            raise _err(p, f"not a PTU file (magic {magic[:8]!r}, expected {MAGIC!r})",
                       "give a PicoQuant .ptu file (T2/T3 TTTR)")
        version = _read_exact(f, 8, p, "version").split(b"\0", 1)[0].decode("latin-1")
        tags: dict[str, Any] = {}
        types: dict[str, int] = {}
        for _ in range(MAX_TAGS):
            ident, idx, typ, raw = _TAG_HEAD.unpack(_read_exact(f, _TAG_HEAD.size, p, "tag"))
            name = ident.split(b"\0", 1)[0].decode("latin-1")
            if not name or not name.isprintable():
                shown = ident.rstrip(b"\0")
                raise _err(p, f"corrupt tag name {shown!r} at byte {f.tell() - 48}")
            value = _tag_value(f, p, name, typ, raw, size)
            key = name if idx < 0 else f"{name}({idx})"
            tags[key] = value
            types[key] = typ
            if name == "Header_End":
                break
        else:
            raise _err(p, f"more than {MAX_TAGS} header tags without Header_End")
        data_offset = f.tell()
    return _validate(p, version, tags, types, data_offset, size)


def _need(p: str, tags: Mapping[str, Any], name: str, kinds: tuple[type, ...]) -> Any:
    if name not in tags:
        raise _err(p, f"header has no {name} tag", "this is not a T2/T3 TTTR file, or its header is damaged")
    v = tags[name]
    if isinstance(v, bool) or not isinstance(v, kinds):
        raise _err(p, f"header tag {name} has the wrong type ({type(v).__name__})")
    return v


def _validate(p: str, version: str, tags: dict[str, Any], types: dict[str, int],
              data_offset: int, size: int) -> PtuHeader:
    code = _need(p, tags, "TTResultFormat_TTTRRecType", (int,))
    try:
        fmt = record_format(code & 0xFFFFFFFF)
    except KeyError:
        raise _err(p, f"unknown TTTR record type 0x{code & 0xFFFFFFFF:08X}",
                   "supported: PicoHarp 300, HydraHarp v1/v2, TimeHarp 260 N/P, generic "
                   "(MultiHarp) T2/T3") from None
    bits = tags.get("TTResultFormat_BitsPerRecord", 32)
    if bits != 32:
        raise _err(p, f"TTResultFormat_BitsPerRecord is {bits}, expected 32")
    mode = tags.get("Measurement_Mode")
    if mode is not None and mode != fmt.mode:
        raise _err(p, f"header says Measurement_Mode {mode} but the record type {fmt.name} is "
                   f"T{fmt.mode} data", "the header is inconsistent; the file is damaged")
    n = _need(p, tags, "TTResult_NumberOfRecords", (int,))
    if n < 0:
        raise _err(p, f"TTResult_NumberOfRecords is negative ({n})")
    glob = float(_need(p, tags, "MeasDesc_GlobalResolution", (float, int)))
    if not (math.isfinite(glob) and glob > 0):
        raise _err(p, f"MeasDesc_GlobalResolution {glob!r} is not a positive time in seconds")
    res = tags.get("MeasDesc_Resolution")
    if res is not None:
        if isinstance(res, bool) or not isinstance(res, (int, float)) or not (math.isfinite(res) and res > 0):
            raise _err(p, f"MeasDesc_Resolution {res!r} is not a positive time in seconds")
        res = float(res)
    elif fmt.is_t3:
        raise _err(p, "T3 file without MeasDesc_Resolution", "the header is damaged")
    rate = tags.get("TTResult_SyncRate")
    rate = float(rate) if isinstance(rate, (int, float)) and not isinstance(rate, bool) else None
    available = (size - data_offset) // 4
    if n > available:
        raise _err(p, f"truncated: the header announces {n} records but only {available} are present",
                   "the file was cut short (copy it again); the records present can't be trusted "
                   "to be complete")
    return PtuHeader(p, version, tags, types, data_offset, fmt, int(n), glob, res, rate)


@dataclass
class PtuFile:
    """An open PTU file: its header and its records, memory-mapped (read-only)."""

    header: PtuHeader
    records: np.ndarray = field(repr=False)  #: uint32, length header.num_records

    @property
    def fmt(self) -> RecordFormat:
        return self.header.fmt

    def chunks(self, chunk: int = DEFAULT_CHUNK) -> Iterator[np.ndarray]:
        """Consecutive slices of the records, ``chunk`` records each (views, no copies)."""
        chunk = max(1, int(chunk))
        for i in range(0, self.records.shape[0], chunk):
            yield self.records[i:i + chunk]


def open_ptu(path: str | os.PathLike[str]) -> PtuFile:
    """Read the header and memory-map the records (files larger than memory are fine)."""
    h = read_header(path)
    if h.num_records == 0:
        recs = np.empty(0, np.uint32)
    else:
        try:
            recs = np.memmap(h.path, dtype="<u4", mode="r", offset=h.data_offset, shape=(h.num_records,))
        except (OSError, ValueError) as e:
            raise InputError(f"cannot map the records: {e}", file=h.path, fix="check the file") from None
    return PtuFile(h, recs)


# --------------------------------------------------------------------------------------------
# writer
# --------------------------------------------------------------------------------------------

def _infer_type(value: Any) -> int:
    if value is None:
        return TY_EMPTY8
    if isinstance(value, (bool, np.bool_)):
        return TY_BOOL8
    if isinstance(value, (int, np.integer)):
        return TY_INT8
    if isinstance(value, (float, np.floating)):
        return TY_FLOAT8
    if isinstance(value, datetime):
        return TY_TDATETIME
    if isinstance(value, str):
        return TY_ANSISTRING
    if isinstance(value, (bytes, bytearray)):
        return TY_BINARYBLOB
    if isinstance(value, (np.ndarray, list, tuple)):
        return TY_FLOAT8ARRAY
    raise TypeError(f"cannot store {type(value).__name__} in a PTU header")


def _pad8(b: bytes) -> bytes:
    """Pad to a multiple of 8 bytes with NULs (as PicoQuant software writes strings)."""
    return b + b"\0" * (-len(b) % 8)


def encode_tag(tag: Tag) -> bytes:
    """Bytes of one header tag (48-byte head plus any variable-length payload)."""
    typ = _infer_type(tag.value) if tag.type is None else tag.type
    name = tag.name.encode("ascii")
    if len(name) > 32:
        raise ValueError(f"tag name {tag.name!r} is longer than 32 bytes")
    v = tag.value
    extra = b""
    if typ == TY_EMPTY8:
        raw = bytes(8)
    elif typ == TY_BOOL8:
        raw = struct.pack("<q", -1 if v else 0)
    elif typ in (TY_INT8, TY_BITSET64, TY_COLOR8):
        raw = struct.pack("<q", int(v))
    elif typ == TY_FLOAT8:
        raw = struct.pack("<d", float(v))
    elif typ == TY_TDATETIME:
        if isinstance(v, datetime):
            dt = v if v.tzinfo else v.replace(tzinfo=timezone.utc)
            v = (dt - _DELPHI_EPOCH) / timedelta(days=1)
        raw = struct.pack("<d", float(v))
    elif typ == TY_ANSISTRING:
        extra = _pad8(str(v).encode("utf-8") + b"\0")
    elif typ == TY_WIDESTRING:
        extra = _pad8(str(v).encode("utf-16-le") + b"\0\0")
    elif typ == TY_FLOAT8ARRAY:
        extra = np.asarray(v, dtype="<f8").tobytes()
    elif typ == TY_BINARYBLOB:
        extra = bytes(v)
    else:
        raise ValueError(f"unknown tag type 0x{typ:08X}")
    if typ in _VARIABLE:
        raw = struct.pack("<q", len(extra))
    return _TAG_HEAD.pack(name, int(tag.idx), typ, raw) + extra


_HW_TYPES = {"PicoHarp": "PicoHarp 300", "HydraHarpV1": "HydraHarp 400", "HydraHarpV2": "HydraHarp 400",
             "TimeHarp260N": "TimeHarp 260 N", "TimeHarp260P": "TimeHarp 260 P", "Generic": "MultiHarp"}


class PtuWriter:
    """Write a PTU file record chunk by record chunk (for simulated runs of any length).

    The header is written first with the record count patched on :meth:`close`. Use as a
    context manager::

        with PtuWriter("run.ptu", "TimeHarp260N_T3", global_resolution=50e-6,
                       resolution=25e-12) as w:
            w.write(records)

    Times in s (``acquisition_time`` is stored in ms as the vendor does), rates in Hz; the sync
    rate defaults to ``1/global_resolution`` for T3.
    """

    def __init__(self, path: str | os.PathLike[str], fmt: RecordFormat | int | str, *,
                 global_resolution: float, resolution: float | None = None,
                 sync_rate: float | None = None, comment: str = "",
                 extra_tags: list[Tag] | Mapping[str, Any] | None = None,
                 created: datetime | None = None, acquisition_time: float = 0.0) -> None:
        self.fmt = record_format(fmt)
        if not (global_resolution > 0):
            raise ValueError("global_resolution must be > 0 s")
        if self.fmt.is_t3 and resolution is None:
            raise ValueError("T3 files need the dtime resolution (s)")
        if sync_rate is None and self.fmt.is_t3:
            sync_rate = 1.0 / global_resolution
        self.path = str(path)
        self.count = 0
        tags = [
            Tag("File_GUID", "{" + str(uuid.uuid4()).upper() + "}"),
            Tag("File_CreatingTime", created or datetime.now(timezone.utc), TY_TDATETIME),
            Tag("CreatorSW_Name", "labctl"),
            Tag("CreatorSW_Version", _version()),
            Tag("File_Comment", comment),
            Tag("HW_Type", _HW_TYPES.get(self.fmt.name.split("_")[0], "unknown")),
            Tag("Measurement_Mode", self.fmt.mode),
            Tag("Measurement_SubMode", 0),
            Tag("TTResultFormat_TTTRRecType", self.fmt.code),
            Tag("TTResultFormat_BitsPerRecord", 32),
            Tag("MeasDesc_GlobalResolution", float(global_resolution)),
            Tag("MeasDesc_Resolution", float(resolution if resolution is not None else global_resolution)),
            Tag("TTResult_SyncRate", int(round(sync_rate or 0))),
            Tag("MeasDesc_AcquisitionTime", int(round(acquisition_time * 1e3))),  # ms
            Tag("TTResult_StopReason", 0),
        ]
        if isinstance(extra_tags, Mapping):
            tags += [Tag(k, v) for k, v in extra_tags.items()]
        elif extra_tags:
            tags += list(extra_tags)
        head = MAGIC + DEFAULT_VERSION.encode().ljust(8, b"\0")
        head += b"".join(encode_tag(t) for t in tags)
        self._count_at = len(head) + 40  # value field of the NumberOfRecords tag
        head += encode_tag(Tag("TTResult_NumberOfRecords", 0))
        head += encode_tag(Tag("Header_End", None, TY_EMPTY8))
        self._f: BinaryIO | None = open(self.path, "wb")
        self._f.write(head)

    def write(self, records: np.ndarray) -> None:
        """Append uint32 records."""
        if self._f is None:
            raise ValueError("writer is closed")
        r = np.asarray(records)
        if r.dtype.kind not in "ui":
            raise TypeError("records must be an integer array")
        self._f.write(np.ascontiguousarray(r, dtype="<u4").tobytes())
        self.count += int(r.size)

    def close(self) -> None:
        """Patch the record count into the header and close the file."""
        if self._f is None:
            return
        self._f.seek(self._count_at)
        self._f.write(struct.pack("<q", self.count))
        self._f.close()
        self._f = None

    def __enter__(self) -> "PtuWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_ptu(path: str | os.PathLike[str], records: np.ndarray, fmt: RecordFormat | int | str, *,
              global_resolution: float, resolution: float | None = None,
              sync_rate: float | None = None, comment: str = "",
              extra_tags: list[Tag] | Mapping[str, Any] | None = None,
              acquisition_time: float = 0.0) -> Path:
    """Write ``records`` (uint32) as a valid PTU file. Times in s, rates in Hz."""
    with PtuWriter(path, fmt, global_resolution=global_resolution, resolution=resolution,
                   sync_rate=sync_rate, comment=comment, extra_tags=extra_tags,
                   acquisition_time=acquisition_time) as w:
        w.write(records)
    return Path(path)


def _version() -> str:
    from .. import __version__

    return __version__
