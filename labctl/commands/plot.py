"""``labctl plot RUN_DIR``: redraw a run's plots from its run file."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError
from ..plots import draw_all
from ..report import sum_counts
from ..storage import read_run_file


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="redraw a run's plots from run.h5",
                       description="Draw the plots of a run (witness densities, phase or delay sweep, "
                                   "pump-probe) from its run file into RUN_DIR (or --out).")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--out", metavar="DIR", help="where to write the PNGs (default RUN_DIR)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    path = Path(args.run_dir)
    h5 = path / "run.h5" if path.is_dir() else path
    if not h5.exists():
        raise InputError(f"no run file in {args.run_dir}", fix="give a folder written by 'labctl run'")
    data = read_run_file(h5)
    out = Path(args.out) if args.out else h5.parent
    out.mkdir(parents=True, exist_ok=True)
    points = [{"parameters": p["parameters"], "counts": p["counts"]} for p in data["points"]]
    files = draw_all(out, data["manifest"], points, sum_counts([p["counts"] for p in points]))
    for f in files:
        print(f)
    return 0
