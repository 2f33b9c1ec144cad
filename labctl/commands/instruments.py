"""``labctl instruments``: connect to every instrument of a station and show who answers."""
from __future__ import annotations

import argparse
import json

from ..config import load_station
from ..station import Station


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("instruments", help="connect to every instrument and print its identity",
                       description="Connect to every instrument of the station file and print name, "
                                   "role, driver, resource and identity. With --sim, each instrument "
                                   "is replaced by its simulator.")
    p.add_argument("--config", required=True, metavar="FILE", help="station file (e.g. configs/lab.yaml)")
    p.add_argument("--sim", action="store_true", help="use the simulated instruments")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = load_station(args.config)
    with Station(cfg, sim=args.sim).connect() as station:
        rows = station.rows()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    widths = {k: max(len(k), *(len(str(r[k])) for r in rows)) if rows else len(k)
              for k in ("name", "role", "driver", "resource", "idn")}
    head = "  ".join(k.upper().ljust(widths[k]) for k in widths)
    print(head)
    for r in rows:
        print("  ".join(str(r[k]).ljust(widths[k]) for k in widths))
    return 0
