"""``labctl validate``: check a sequence before any instrument is touched."""
from __future__ import annotations

import argparse

from .. import units
from ..config import load_station
from ..sequence import load_sequence
from ..sequence.validate import check_against_station


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="check a sequence file (and its fit to a station)",
                       description="Validate a pulse sequence: syntax, units, timing, windows, "
                                   "thermalisation, lock-pulse spacing; with --config also the station's "
                                   "channels and every instrument's limits (nothing is connected).")
    p.add_argument("sequence", metavar="SEQUENCE", help="sequence file (YAML)")
    p.add_argument("--config", metavar="FILE", help="station file to check against")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    seq = load_sequence(args.sequence)
    if args.config:
        cfg = load_station(args.config)
        check_against_station(seq, cfg)
        # instrument limits: compile and apply every program to the simulated instruments
        from ..sequence.compile import compile_sequence

        compile_sequence(seq, cfg)
    n = len(seq.points)
    print(f"{args.sequence}: valid — '{seq.name}', period {units.format_quantity(seq.period, 's')}, "
          f"{len(seq.points[0].pulses)} pulses, {n} sweep point{'s' if n != 1 else ''}, "
          f"{seq.trials:.4g} trials per point" + (f", fits station '{cfg.name}'" if args.config else ""))
    return 0
