"""Summary of a PTU file: what ``labctl tags info`` prints.

Keys (see ``../shared/docs/interfaces.md``): ``record_type`` (e.g. ``"HydraHarpV2_T3"``), ``mode``
(``"T2"``/``"T3"``), ``records``, ``photons`` (channel number as a string -> count; channel numbers
as in :mod:`labctl.tags.records`), ``overflows`` (overflow *records*), ``markers``,
``global_resolution`` (s), ``resolution`` (s; ``null`` when the header has none), ``first_time``
and ``last_time`` (s, earliest and latest photon; ``null`` without photons).

Time convention: T2 photon times are ``time * global_resolution``. For T3, ``first_time`` and
``last_time`` are the start of the photon's sync period, ``nsync * global_resolution``, without the
micro-time (it is below one sync period); the sync numbers themselves are in ``first_sync`` and
``last_sync``. Extra keys: ``record_type_code``, ``syncs`` (T2 sync records), ``invalid``
(records with reserved codes), ``overflow_wraps`` (wraps counted by the overflow records),
``sync_rate`` (Hz), ``span`` (s, from the start of the measurement to the last record or wrap),
``file``.
"""
from __future__ import annotations

import os
from typing import Any

from .ptu import DEFAULT_CHUNK, PtuFile, open_ptu
from .records import INVALID, MARKER, OVERFLOW, SYNC, Summary


def summarize(path: str | os.PathLike[str] | PtuFile, *, chunk: int = DEFAULT_CHUNK,
              use_numba: bool | None = None) -> dict[str, Any]:
    """Stream through the file's records (memory-mapped, ``chunk`` records at a time) and return
    the summary dict described in the module docstring. Bad files raise InputError."""
    pf = path if isinstance(path, PtuFile) else open_ptu(path)
    h = pf.header
    fmt = h.fmt
    acc = Summary(fmt, use_numba)
    for c in pf.chunks(chunk):
        acc.feed(c)
    photons, kinds, base = acc.photons, acc.kinds, acc.base
    first, last, last_any = acc.first, acc.last, acc.last_event
    glob = h.global_resolution
    out: dict[str, Any] = {
        "file": h.path,
        "record_type": fmt.name,
        "record_type_code": f"0x{fmt.code:08X}",
        "mode": fmt.mode_name,
        "records": h.num_records,
        "photons": {str(c): int(n) for c, n in enumerate(photons) if n},
        "overflows": int(kinds[OVERFLOW]),
        "markers": int(kinds[MARKER]),
        "syncs": int(kinds[SYNC]),
        "invalid": int(kinds[INVALID]),
        "overflow_wraps": base // fmt.wrap,
        "global_resolution": glob,
        "resolution": h.resolution,
        "sync_rate": h.sync_rate,
        "first_time": None if first is None else first * glob,
        "last_time": None if last is None else last * glob,
        "span": max(base, last_any + (1 if fmt.is_t3 else 0)) * glob,
    }
    if fmt.is_t3:
        out["first_sync"] = first
        out["last_sync"] = last
    return out


def format_table(info: dict[str, Any]) -> str:
    """The summary as a readable table (what ``labctl tags info`` prints without --json)."""
    from ..units import format_quantity

    def t(v: Any) -> str:
        return "-" if v is None else format_quantity(float(v), "s")

    def sync(n: int | None) -> str:
        return "" if n is None else f" (sync {n:,})"

    rows = [
        ("file", info["file"]),
        ("record type", f"{info['record_type']} ({info['record_type_code']}), {info['mode']}"),
        ("records", f"{info['records']:,}"),
        ("overflow records", f"{info['overflows']:,} ({info['overflow_wraps']:,} wraps)"),
        ("marker records", f"{info['markers']:,}"),
    ]
    if info["syncs"]:
        rows.append(("sync records", f"{info['syncs']:,}"))
    if info["invalid"]:
        rows.append(("invalid records", f"{info['invalid']:,}"))
    rows += [
        ("global resolution", t(info["global_resolution"])),
        ("resolution", t(info["resolution"])),
        ("sync rate", "-" if not info["sync_rate"] else f"{info['sync_rate']:g} Hz"),
        ("first photon", t(info["first_time"]) + sync(info.get("first_sync"))),
        ("last photon", t(info["last_time"]) + sync(info.get("last_sync"))),
        ("span", t(info["span"])),
    ]
    w = max(len(k) for k, _ in rows)
    lines = [f"{k:<{w}}  {v}" for k, v in rows]
    lines.append("photons per channel:")
    if not info["photons"]:
        lines.append("  (none)")
    for ch, n in info["photons"].items():
        lines.append(f"  {ch:>3}  {n:>14,}")
    return "\n".join(lines)
