"""``labctl run``: execute a sequence on the lab or the simulated station; ``--resume DIR``."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError
from ..runner import RunOptions, Runner


def _trials(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of trials (e.g. 1e8)") from None
    return v


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a sequence (on the lab, or --sim on simulated instruments)",
                       description="Validate, compile and run a sequence: apply the programs, lock the phase, "
                                   "acquire time tags in blocks, count heralds and coincidences, and write "
                                   "run.h5, report.json and plots into --out. Ctrl-C stops safely (exit 130); "
                                   "'labctl run --resume DIR' continues an interrupted or crashed run.")
    p.add_argument("sequence", nargs="?", metavar="SEQUENCE", help="sequence file (not with --resume)")
    p.add_argument("--config", metavar="FILE", help="station file")
    p.add_argument("--sim", action="store_true", help="simulated instruments and digital twin")
    p.add_argument("--out", metavar="DIR", help="output folder (default runs/<sequence>-<time>)")
    p.add_argument("--trials", type=_trials, metavar="N", help="trials per sweep point (overrides the sequence)")
    p.add_argument("--seed", type=int, metavar="S", help="random seed of a simulated run (reproducible)")
    p.add_argument("--faults", metavar="PLAN.yaml", help="inject the faults of a plan (simulation/emulation)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last completed block")
    p.add_argument("--block-trials", type=_trials, metavar="N", help="trials per block (resume granularity)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--progress", choices=("auto", "on", "off"), default="auto", help="progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.resume:
        if args.sequence:
            raise InputError("--resume continues a run as it was started; do not give a SEQUENCE",
                             fix=f"labctl run --resume {args.resume}")
        opts = RunOptions(out=Path(args.resume), resume=True)
    else:
        if not args.sequence or not args.config:
            raise InputError("labctl run needs a SEQUENCE and --config FILE (or --resume DIR)",
                             fix="e.g. labctl run sequences/dlcz_witness.yaml --config configs/lab.yaml --sim")
        opts = RunOptions(sequence=args.sequence, config=args.config, sim=args.sim,
                          out=Path(args.out) if args.out else None, trials=args.trials, seed=args.seed,
                          faults=args.faults)
    if args.block_trials:
        opts.block_trials = int(args.block_trials)
    opts.plots = not args.no_plots
    opts.progress = {"auto": None, "on": True, "off": False}[args.progress]
    return Runner(opts).run()
