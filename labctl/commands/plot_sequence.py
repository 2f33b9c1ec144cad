"""``labctl plot-sequence``: the timing diagram of a sequence, as PNG and in the terminal."""
from __future__ import annotations

import argparse

from ..errors import InputError
from ..sequence import load_sequence
from ..sequence.plot import plot_sequence, text_timeline


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot-sequence", help="draw a sequence's timing diagram",
                       description="Draw the pulses, serrodyne gate, lock pulse and detection windows of a "
                                   "sequence: a PNG with --out, and a text view on the terminal.")
    p.add_argument("sequence", metavar="SEQUENCE")
    p.add_argument("--out", metavar="FILE.png", help="write the diagram to this PNG")
    p.add_argument("--point", type=int, default=1, help="sweep point to draw (1-based, default 1)")
    p.add_argument("--quiet", action="store_true", help="no text view")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    seq = load_sequence(args.sequence)
    if not 1 <= args.point <= len(seq.points):
        raise InputError(f"--point {args.point} is not a sweep point of {args.sequence}",
                         fix=f"choose 1 to {len(seq.points)}")
    if not args.quiet:
        print(text_timeline(seq, args.point - 1))
    if args.out:
        path = plot_sequence(seq, args.out, args.point - 1)
        print(f"timing diagram written to {path}")
    return 0
