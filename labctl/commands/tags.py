"""``labctl tags``: PicoQuant PTU time-tag files.

- ``labctl tags info FILE.ptu [--json]`` - header summary and per-channel counts.
- ``labctl tags herald FILE.ptu --pump-window 0ns:20ns --read-window 100ns:140ns [--channels A,B]
  [--trials N | --trials-from start|first] [--json] [--diagnostics]`` - the counts object that
  ``labctl witness`` reads.
- ``labctl tags correlate FILE.ptu --channels A,B --bin 100ps --range 20ns [--json]`` - a
  cross-correlation histogram for delay calibration.

Definitions and units: ``docs/timetags.md``.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np

from ..errors import InputError
from ..units import format_quantity, parse_as

HELP = "time-tag (PTU) files: summary, heralded counts, cross-correlation"


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("tags", help=HELP, description=(__doc__ or "").replace("``", ""),
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="tags_command", metavar="ACTION")
    p.set_defaults(func=lambda args: _usage(p))

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("file", metavar="FILE.ptu", help="PicoQuant PTU file (T2 or T3)")
    common.add_argument("--json", action="store_true", help="print JSON")
    common.add_argument("--chunk", type=int, default=1 << 22, metavar="N",
                        help="records per chunk while streaming through the file (default 4194304)")
    common.add_argument("--no-numba", action="store_true",
                        help="use the pure-numpy kernels (same results, slower)")

    info = sub.add_parser("info", parents=[common], help="header summary and per-channel counts",
                          description="Record type, mode, record/photon/marker/overflow counts, "
                          "resolutions and first/last photon time (s; for T3 the start of the "
                          "photon's sync period).")
    info.set_defaults(func=cmd_info)

    h = sub.add_parser("herald", parents=[common], help="heralded counts (T3) for labctl witness",
                       description="Each sync period is one trial; pump (herald) and read clicks are "
                       "photons whose micro-time falls in the pump or read window [start, stop). "
                       "Prints the counts object of 'labctl witness'.")
    h.add_argument("--pump-window", required=True, metavar="START:STOP",
                   help="herald window from the sync, e.g. 0ns:20ns")
    h.add_argument("--read-window", required=True, metavar="START:STOP",
                   help="read window from the sync, e.g. 100ns:140ns")
    h.add_argument("--channels", metavar="A,B",
                   help="input channels of detectors 1 and 2 (default: the two lowest channels with photons)")
    g = h.add_mutually_exclusive_group()
    g.add_argument("--trials", type=int, metavar="N", help="number of trials N (default: counted from the data)")
    g.add_argument("--trials-from", choices=("start", "first"), default="start",
                   help="count trials from the measurement start (sync 0, default) or from the "
                   "first sync period with an event, to the end of the data")
    h.add_argument("--diagnostics", action="store_true",
                   help="add double heralds, clicks outside the windows etc. (JSON key 'diagnostics')")
    h.set_defaults(func=cmd_herald)

    c = sub.add_parser("correlate", parents=[common], help="cross-correlation histogram of two channels",
                       description="Histogram of t_B - t_A over all photon pairs within +-range.")
    c.add_argument("--channels", required=True, metavar="A,B", help="the two input channels")
    c.add_argument("--bin", default="100 ps", help="bin width (default 100 ps)")
    c.add_argument("--range", default="20 ns", help="largest |lag| (default 20 ns)")
    c.set_defaults(func=cmd_correlate)


def _usage(p: argparse.ArgumentParser) -> int:
    p.print_help(sys.stderr)
    return 2


def _numba(args: argparse.Namespace) -> bool | None:
    return False if args.no_numba else None


def _chunk(args: argparse.Namespace) -> int:
    if args.chunk < 1:
        raise InputError(f"--chunk {args.chunk} must be at least 1", fix="give a positive record count")
    return int(args.chunk)


def _print_json(obj: Any) -> None:
    """JSON with one top-level key per line and compact values (valid YAML too)."""
    if not isinstance(obj, dict) or not obj:
        print(json.dumps(obj))
        return
    body = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in obj.items())
    print("{\n" + body + "\n}")


def cmd_info(args: argparse.Namespace) -> int:
    from ..tags.info import format_table, summarize

    info = summarize(args.file, chunk=_chunk(args), use_numba=_numba(args))
    if args.json:
        _print_json(info)
    else:
        print(format_table(info))
    return 0


def parse_window(text: str, option: str) -> tuple[float, float]:
    """``"0ns:20ns"`` -> ``(0.0, 2e-8)`` (s); a bare ``0`` needs no unit. Raises InputError for a
    malformed window."""
    parts = str(text).split(":")
    if len(parts) != 2 or not all(s.strip() for s in parts):
        raise InputError(f"{option} {text!r} is not START:STOP",
                         fix=f"write it as two times with units, e.g. {option} 0ns:20ns")
    start, stop = (0.0 if s.strip() == "0" else parse_as(s, "s", where=f"{option} {which}")
                   for s, which in zip(parts, ("start", "stop")))
    if start < 0:
        raise InputError(f"{option} starts before the sync ({text})", fix="micro-times are >= 0; start at 0 or later")
    if stop <= start:
        raise InputError(f"{option} {text!r} is empty (stop <= start)", fix="give START:STOP with STOP > START")
    return start, stop


def _parse_channels(text: str, file: str) -> tuple[int, int]:
    try:
        a, b = (int(s) for s in text.split(","))
    except ValueError:
        raise InputError(f"--channels {text!r} is not two channel numbers", file=file,
                         fix="write --channels A,B, e.g. --channels 0,1") from None
    if a == b or not (0 <= a < 64 and 0 <= b < 64):
        raise InputError(f"--channels {text!r}: need two different channels in 0..63", file=file,
                         fix="name the two detectors' input channels, e.g. --channels 0,1")
    return a, b


def cmd_herald(args: argparse.Namespace) -> int:
    from ..tags.herald import HeraldCounter
    from ..tags.ptu import open_ptu

    pump = parse_window(args.pump_window, "--pump-window")
    read = parse_window(args.read_window, "--read-window")
    if pump[0] < read[1] and read[0] < pump[1]:
        raise InputError(f"the pump window {args.pump_window} and read window {args.read_window} overlap",
                         fix="a click must belong to one window; make them disjoint")
    chans = _parse_channels(args.channels, args.file) if args.channels else None
    if args.trials is not None and args.trials < 0:
        raise InputError(f"--trials {args.trials} is negative", fix="give the number of trials, >= 0")
    pf = open_ptu(args.file)
    h = pf.header
    if not h.fmt.is_t3:
        raise InputError(f"heralded counting needs T3 data, this file holds {h.fmt.name} records",
                         file=h.path, fix="record in T3 mode (one sync per trial)")
    res = float(h.resolution)  # T3 headers always carry it (checked by the reader)
    reach = (1 << h.fmt.dtime_bits) * res
    for name, (start, _stop) in (("--pump-window", pump), ("--read-window", read)):
        if start >= reach:
            raise InputError(f"{name} starts at {format_quantity(start, 's')}, beyond the largest "
                             f"micro-time of this file ({format_quantity(reach, 's')})", file=h.path,
                             fix="check the window against the sync period and resolution")
        if start >= h.global_resolution * (1 + 1e-9):
            print(f"labctl: warning: {name} starts after the sync period "
                  f"({format_quantity(h.global_resolution, 's')}); it may never see a click",
                  file=sys.stderr)
    counter = HeraldCounter.from_windows(h.fmt, pump, read, res, use_numba=_numba(args))
    for c in pf.chunks(_chunk(args)):
        counter.feed(c)
    result = counter.result(trials=args.trials, trials_from=args.trials_from)
    try:
        counts = result.counts(chans)
        diag = result.diagnostics(chans)
    except ValueError as e:
        raise InputError(str(e), file=h.path, fix="name the two detector channels with --channels A,B") from None
    most = max(counts["pump"] + counts["read"])
    if counts["trials"] < most:
        raise InputError(f"{counts['trials']} trials is fewer than the {most} trials with a click",
                         file=h.path, fix="give the real number of trials with --trials, or omit it")
    if args.json:
        out = dict(counts)
        if args.diagnostics:
            out["diagnostics"] = diag
        _print_json(out)
    else:
        print(_counts_yaml(counts, diag, h.path, pump, read, args.trials_from if args.trials is None else "given",
                           args.diagnostics))
    return 0


def _counts_yaml(c: dict[str, Any], d: dict[str, Any], path: str, pump: tuple[float, float],
                 read: tuple[float, float], trials_from: str, full: bool) -> str:
    def w(x: tuple[float, float]) -> str:
        return f"{format_quantity(x[0], 's')} .. {format_quantity(x[1], 's')}"

    lines = [f"# heralded counts from {path}",
             f"# detectors 1, 2 = input channels {d['channels'][0]}, {d['channels'][1]}; "
             f"pump window {w(pump)}, read window {w(read)}; trials: {trials_from}",
             f"trials: {c['trials']}",
             f"pump: [{c['pump'][0]}, {c['pump'][1]}]",
             f"read: [{c['read'][0]}, {c['read'][1]}]",
             "coincidences:",
             f"  - [{c['coincidences'][0][0]}, {c['coincidences'][0][1]}]",
             f"  - [{c['coincidences'][1][0]}, {c['coincidences'][1][1]}]"]
    if full:
        lines.append("diagnostics: " + json.dumps(d))
    return "\n".join(lines)


def cmd_correlate(args: argparse.Namespace) -> int:
    from ..tags.correlate import cross_correlation, photon_times
    from ..tags.ptu import open_ptu
    from ..tags.records import decode_chunk

    a, b = _parse_channels(args.channels, args.file)
    bw = parse_as(args.bin, "s", where="--bin")
    rng = parse_as(args.range, "s", where="--range")
    if bw <= 0 or rng <= 0:
        raise InputError("--bin and --range must be positive times", fix="e.g. --bin 100ps --range 20ns")
    unit = 1e-12
    bw_u = max(1, int(round(bw / unit)))
    if rng / bw > 1e7:
        raise InputError(f"--range/--bin gives {rng / bw:.3g} bins", fix="use at most 1e7 bins")
    pf = open_ptu(args.file)
    h = pf.header
    ta: list[np.ndarray] = []
    tb: list[np.ndarray] = []
    base = 0
    for chunk in pf.chunks(_chunk(args)):
        d, base = decode_chunk(h.fmt, chunk, base, _numba(args))
        ta.append(photon_times(d, a, h.global_resolution, h.resolution, unit))
        tb.append(photon_times(d, b, h.global_resolution, h.resolution, unit))
    xa = np.sort(np.concatenate(ta)) if ta else np.empty(0, np.int64)
    xb = np.sort(np.concatenate(tb)) if tb else np.empty(0, np.int64)
    edges, hist = cross_correlation(xa, xb, bw_u, int(np.ceil(rng / unit)), use_numba=_numba(args))
    lags = (edges + bw_u / 2) * unit
    peak = float(lags[int(np.argmax(hist))]) if hist.any() else None
    out = {"channels": [a, b], "bin_width": bw_u * unit, "photons": [int(xa.size), int(xb.size)],
           "lag": [float(x) for x in lags], "counts": [int(x) for x in hist], "peak_lag": peak}
    if args.json:
        _print_json(out)
    else:
        print(f"# t[{b}] - t[{a}], bins of {format_quantity(bw_u * unit, 's')}; photons {xa.size} / {xb.size}")
        print(f"# peak at {format_quantity(peak, 's') if peak is not None else '-'}")
        for lag, n in zip(lags, hist):
            if n:
                print(f"{format_quantity(float(lag), 's'):>14}  {int(n)}")
    return 0
