"""Time to validate and compile a sequence, including serrodyne synthesis and the check on the
simulated instruments (which uploads every waveform through the drivers).

    .venv/bin/python benchmarks/bench_compile.py [SEQUENCE] [--config configs/lab.yaml] [--repeat 5]

Prints the median of each stage and the ratio of the total to the one-second budget.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("sequence", nargs="?", default=str(REPO / "sequences/dlcz_witness.yaml"))
    ap.add_argument("--config", default=str(REPO / "configs/lab.yaml"))
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    from labctl.config import load_station
    from labctl.sequence import load_sequence
    from labctl.sequence.compile import compile_sequence

    stages: dict[str, list[float]] = {"load+validate": [], "compile (no check)": [], "compile+check on simulators": []}
    for _ in range(a.repeat):
        t0 = time.perf_counter()
        seq = load_sequence(a.sequence)
        cfg = load_station(a.config)
        t1 = time.perf_counter()
        compile_sequence(seq, cfg, check=False)
        t2 = time.perf_counter()
        compile_sequence(seq, cfg, check=True)
        t3 = time.perf_counter()
        stages["load+validate"].append(t1 - t0)
        stages["compile (no check)"].append(t2 - t1)
        stages["compile+check on simulators"].append(t3 - t2)
    total = 0.0
    for k, v in stages.items():
        m = statistics.median(v)
        print(f"{k:32s} {m * 1e3:8.1f} ms (median of {a.repeat})")
        if k != "compile (no check)":
            total += m
    print(f"{'validate + compile + check':32s} {total * 1e3:8.1f} ms = {total / 1.0:.3f} x the 1 s budget")


if __name__ == "__main__":
    main()
