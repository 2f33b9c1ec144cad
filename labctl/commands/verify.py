"""``labctl verify RUN_DIR``: is the run complete, every trial counted exactly once?"""
from __future__ import annotations

import argparse
import json

from ..errors import EXIT_FAULT


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="check a run folder: every trial counted once, counts match the records",
                       description="Check a run folder written by 'labctl run': blocks contiguous (each trial "
                                   "exactly once), records and counts accounted for, every block's counts "
                                   "recounted from its raw records, run.h5 in step with the journal. Exit 0 "
                                   "when all is well, 3 when a problem was found (each is listed).")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--no-recount", action="store_true",
                   help="skip recounting the raw records (faster on very large runs)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..verify import summary_text, verify_run

    rc = verify_run(args.run_dir, recount=not args.no_recount)
    print(json.dumps(rc.as_dict(), indent=2) if args.json else summary_text(rc))
    return 0 if rc.ok else EXIT_FAULT
