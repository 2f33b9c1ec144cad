"""``labctl witness COUNTS.yaml [COUNTS.yaml ...] [--json]``: g2 and the entanglement witness.

Counts of all files are summed (several runs, several sweep points, e.g. the extended-phase data
set of Riedinger et al. 2018), then g2[r_i,p_j], R_m(θ,1), R_m(θ,2) and R_m,sym are computed with
their counting statistics (main text Eq. 3; Supplementary "Statistical Analysis"); see
``docs/analysis.md``. ``-`` reads one counts document from standard input, so
``labctl tags herald FILE.ptu ... | labctl witness -`` works.
"""
from __future__ import annotations

import argparse
import json
import sys

from ..analysis.counts import load_counts_files
from ..analysis.witness import analyze_counts, format_report

EPILOG = """\
counts file (YAML; all values are numbers of events):
  trials: 1114000000          # N
  pump: [111134, 184114]      # C(p1), C(p2)  herald clicks on detector 1, 2
  read: [108723, 167427]      # C(r1), C(r2)  read clicks on detector 1, 2
  coincidences:               # C(r_i, p_j): row i = read detector, column j = herald detector
    - [9, 129]
    - [130, 37]

values are maximum-likelihood values; intervals hold 68 % of the probability (16 %-84 % quantiles);
confidence is P(R_m,sym < bound) for the bounds 1 and 0.995 (reduced for systematic errors).
exit codes: 0 ok, 2 invalid counts file (file:line: what - fix)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "witness", help="g2 and the entanglement witness R_m from counts files",
        description="Sum the counts of the given files and compute the second-order coherences g2 and "
                    "the entanglement witness R_m(θ,1), R_m(θ,2), R_m,sym with maximum-likelihood values, "
                    "68 % intervals and the confidence that R_m,sym is below 1 and 0.995.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("counts", nargs="+", metavar="COUNTS.yaml",
                   help="counts file(s), summed; '-' reads standard input")
    p.add_argument("--json", action="store_true",
                   help="print JSON: g2, Rm, Rm_sym, confidence, counts")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    counts = load_counts_files(args.counts)
    result = analyze_counts(counts)
    if args.json:
        sys.stdout.write(json.dumps(result, indent=2, allow_nan=False) + "\n")
    else:
        sys.stdout.write(format_report(result, args.counts) + "\n")
    return 0
