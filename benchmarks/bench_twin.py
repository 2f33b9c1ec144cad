"""Speed of the digital twin on the DLCZ witness sequence.

    .venv/bin/python benchmarks/bench_twin.py [--trials 1.114e9] [--repeat 3] [--seed 2018]

Set-up (not timed): the simulated station of ``configs/lab.yaml``, ``sequences/dlcz_witness.yaml``
compiled and applied through the drivers, AWG in triggered mode, twin attached (ideal lock).

Measured, in the same run (best of ``--repeat``):

- ``events``: ``Twin.simulate_events`` — the clicks of N trials (core patterns, auxiliary-pulse
  clicks, dark counts, dead time);
- ``records``: ``Twin.simulate_block`` — the same plus TimeHarp 260 T3 encoding;
- ``count``: heralded counting of those records (``labctl.tags.herald``, numba), for scale;
- ``stream``: 1e8 trials through the mock TH260 library and the unchanged ``TimeHarp260`` driver
  (``start`` / ``read_records`` in its reader thread), counted as the runner does.

Printed: trials per second, the time for the seed's 1.114e9 trials and its ratio to the 5 s goal
(ratio < 1: faster than the goal).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from labctl.tags.herald import HeraldCounter  # noqa: E402
from sim_instruments.twin.scenarios import witness_setup  # noqa: E402

GOAL_S = 5.0
SEED_TRIALS = 1_114_000_000


def best(fn, repeat: int) -> tuple[float, object]:
    out, t_best = None, float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        t_best = min(t_best, time.perf_counter() - t0)
    return t_best, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=float, default=SEED_TRIALS)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=2018)
    ap.add_argument("--stream-trials", type=float, default=1e8)
    a = ap.parse_args(argv)
    n = int(a.trials)

    s = witness_setup(seed=a.seed)
    twin = s.twin
    pw, rw = s.windows()
    twin.simulate_events(1_000_000)                     # warm-up: numba kernels, caches
    print(f"twin benchmark: dlcz_witness, {n:.4g} trials per run, best of {a.repeat}, "
          f"goal {GOAL_S:g} s for {SEED_TRIALS:.4g} trials")

    t_ev, (ev, _) = best(lambda: twin.simulate_events(n), a.repeat)
    t_rec, (recs, truth) = best(lambda: twin.simulate_block(n), a.repeat)

    def count():
        hc = HeraldCounter.from_windows("TimeHarp260N_T3", pw, rw, 250e-12)
        hc.feed(recs)
        return hc.result(trials=n).counts(channels=(0, 1))

    t_cnt, counts = best(count, a.repeat)

    tg = s.station["tagger"]
    ns = int(a.stream_trials)

    def stream():
        hc = HeraldCounter.from_windows("TimeHarp260N_T3", pw, rw, tg.resolution())
        tg.start(ns * 50e-6)
        nrec = 0
        while True:
            r = tg.read_records(timeout=0.2)
            if r.size:
                hc.feed(r)
                nrec += r.size
            elif tg.wait(0):
                r = tg.read_records(timeout=0)
                if r.size:
                    hc.feed(r)
                    nrec += r.size
                    continue
                break
        tg.stop()
        return nrec

    t_str, nrec_str = best(stream, 1)

    def row(name: str, t: float, trials: int, extra: str = "") -> None:
        rate = trials / t
        t_seed = SEED_TRIALS / rate
        print(f"  {name:8s} {t:7.3f} s  {rate:9.3e} trials/s  1.114e9 trials: {t_seed:6.2f} s  "
              f"ratio to goal {t_seed / GOAL_S:5.2f}  {extra}")

    row("events", t_ev, n, f"({ev.size:,} clicks)")
    row("records", t_rec, n, f"({recs.size:,} records)")
    row("stream", t_str, ns, f"({nrec_str:,} records through the TH260 driver)")
    print(f"  {'count':8s} {t_cnt:7.3f} s  {recs.size / t_cnt:9.3e} records/s (labctl.tags.herald)")
    print(f"  records + count: {t_rec + t_cnt:.2f} s for {n:.4g} trials "
          f"(ratio to goal {(t_rec + t_cnt) * SEED_TRIALS / n / GOAL_S:.2f})")
    print(f"  counts: {counts}")
    s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
