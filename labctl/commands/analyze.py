"""``labctl analyze RUN_DIR``: recompute the report from the run file alone."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import InputError
from ..report import build_report, lock_summary, summary_text, sum_counts
from ..storage import read_run_file


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help="recompute a run's report from its run.h5",
                       description="Recompute g2, R_m per point and the witness over all points from the "
                                   "run file alone (run.h5 in RUN_DIR).")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def analyze(run_dir: str) -> dict:
    path = Path(run_dir)
    h5 = path / "run.h5" if path.is_dir() else path
    if not h5.exists():
        raise InputError(f"no run file in {run_dir}", fix="give a folder written by 'labctl run'")
    data = read_run_file(h5)
    m = data["manifest"]
    points = [{"parameters": p["parameters"], "counts": p["counts"], "complete": p["complete"],
               "paused_s": float(p["blocks"]["paused_s"].sum()) if len(p["blocks"]) else 0.0} for p in data["points"]]
    lock_blocks = []
    tel = data.get("telemetry") or {}
    if "rms_error" in tel:
        for i in range(len(tel["rms_error"])):
            lock_blocks.append({k: float(v[i]) for k, v in tel.items()})
    faults = [e for e in data["events"] if e.get("type") == "fault"]
    rep = build_report(sequence=m["sequence_name"], experiment=m.get("experiment", "dlcz"), points=points,
                       lock=lock_summary(lock_blocks), faults=faults,
                       files={"run_file": str(h5)}, status=str(data["attrs"].get("status")))
    return rep


def run(args: argparse.Namespace) -> int:
    rep = analyze(args.run_dir)
    if args.json:
        print(json.dumps(rep, indent=2, default=float))
    else:
        print(summary_text(rep))
    return 0
