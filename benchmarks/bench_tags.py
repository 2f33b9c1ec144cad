"""Throughput of the time-tag kernels on synthetic TimeHarp 260 T3 data.

    .venv/bin/python benchmarks/bench_tags.py [--records 1e8] [--photon-fraction 0.1] [--repeat 3]

Synthetic data: a heralding experiment on two detectors (input channels 0 and 1), a sync per
trial, sparse photons (half of them in the pump window, the rest in the read window or uniform
background), written as TimeHarp 260 NANO T3 records with one overflow record per 1024 syncs
(``--overflow-count 1``, as the hardware streams them), so most records are sync overflows.

Measured, in the same run, in records per second on one core:

- ``decode``: records -> per-record arrays (numba kernel, in 4 Mi-record chunks);
- ``fused``: records -> heralded counts in one pass (numba; the goal is >= 3e8 records/s);
- the numpy fallbacks of both, on a slice of the data (they are much slower);
- ``summarize`` of a PTU file written with the same records (file in the page cache), and the
  same file decoded by ``tttrlib`` and ``phconvert`` when they are importable (``pip install
  tttrlib phconvert``; 'not installed' otherwise), with ratios against labctl.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from labctl.tags.herald import HeraldCounter, window_bins  # noqa: E402
from labctl.tags.info import summarize  # noqa: E402
from labctl.tags.ptu import open_ptu, write_ptu  # noqa: E402
from labctl.tags.records import DecodedRecords, decode, decode_chunk, encode, record_format  # noqa: E402

FMT = record_format("TimeHarp260N_T3")
RES = 25e-12          # s, dtime bin
GLOBRES = 1e-6        # s, sync period (1 MHz trials)
PUMP = (0.0, 20e-9)   # s
READ = (100e-9, 140e-9)
CHUNK = 1 << 22


def generate(n_records: int, photon_fraction: float, overflow_count: int, seed: int = 1,
             pair_fraction: float = 0.3) -> np.ndarray:
    """About ``n_records`` T3 records with the given fraction of photon records.

    Photons come in trials spaced geometrically; a ``pair_fraction`` of those trials hold a
    herald click and a read click (random detectors), the others one click that is a herald
    (50 %), a read (40 %) or background anywhere in the period (10 %).
    """
    rng = np.random.default_rng(seed)
    n_ph = max(1, int(n_records * photon_fraction))
    n_tr = max(1, int(n_ph / (1 + pair_fraction)))
    wraps_per_trial = n_records * (1 - photon_fraction) / n_tr * overflow_count
    mean_gap = max(1.0, FMT.wrap * wraps_per_trial)
    nsync = np.cumsum(rng.geometric(1.0 / mean_gap, n_tr).astype(np.int64))
    pair = rng.random(n_tr) < pair_fraction
    per = 1 + pair.astype(np.int64)
    first = np.cumsum(per) - per
    n = int(per.sum())
    p_lo, p_hi = window_bins(*PUMP, RES)
    r_lo, r_hi = window_bins(*READ, RES)
    top = min(32767, int(GLOBRES / RES))
    which = rng.random(n)
    dt = np.where(which < 0.5, rng.integers(p_lo, p_hi, n),
                  np.where(which < 0.9, rng.integers(r_lo, r_hi, n), rng.integers(0, top, n)))
    dt[first[pair]] = rng.integers(p_lo, p_hi, int(pair.sum()))
    dt[first[pair] + 1] = rng.integers(r_lo, r_hi, int(pair.sum()))
    chan = rng.integers(0, 2, n, dtype=np.int64)
    return encode(FMT, np.repeat(nsync, per), chan, dtime=dt, max_overflow_count=overflow_count)


def timed(fn: Callable[[], object], repeat: int) -> float:
    """Best wall time of ``repeat`` calls (s)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def decode_all(recs: np.ndarray, use_numba: bool) -> None:
    base = 0
    for i in range(0, recs.size, CHUNK):
        _, base = decode_chunk(FMT, recs[i:i + CHUNK], base, use_numba)


def fused(recs: np.ndarray, use_numba: bool) -> dict:
    hc = HeraldCounter.from_windows(FMT, PUMP, READ, RES, use_numba=use_numba)
    for i in range(0, recs.size, CHUNK):
        hc.feed(recs[i:i + CHUNK])
    return hc.result().counts((0, 1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=float, default=1e8, help="number of records (default 1e8)")
    ap.add_argument("--photon-fraction", type=float, default=0.1, help="photon records / all (default 0.1)")
    ap.add_argument("--overflow-count", type=int, default=1,
                    help="wraps per overflow record (1 = one record per 1024 syncs; default 1)")
    ap.add_argument("--numpy-records", type=float, default=1e7,
                    help="records for the numpy-fallback runs (default 1e7)")
    ap.add_argument("--repeat", type=int, default=3, help="best of N runs (default 3)")
    ap.add_argument("--no-file", action="store_true", help="skip the PTU-file comparisons")
    a = ap.parse_args(argv)

    t0 = time.perf_counter()
    recs = generate(int(a.records), a.photon_fraction, a.overflow_count)
    tgen = time.perf_counter() - t0
    n = recs.size
    print(f"generated {n:,} {FMT.name} records in {tgen:.2f} s "
          f"({a.photon_fraction:.0%} photons, {a.overflow_count} wrap(s) per overflow record)")

    small = recs[: min(n, 1 << 16)]
    decode_all(small, True)   # compile (or load the cache) outside the timing
    fused(small, True)

    rows: list[tuple[str, float]] = []
    t = timed(lambda: decode_all(recs, True), a.repeat)
    rows.append(("decode (numba)", n / t))
    t = timed(lambda: fused(recs, True), a.repeat)
    rows.append(("fused records->counts (numba)", n / t))
    m = min(n, int(a.numpy_records))
    sub = recs[:m]
    t = timed(lambda: decode_all(sub, False), 1)
    rows.append((f"decode (numpy, {m:,} records)", m / t))
    t = timed(lambda: fused(sub, False), 1)
    rows.append((f"fused (numpy, {m:,} records)", m / t))
    assert fused(sub, True) == fused(sub, False), "numba and numpy disagree"

    print(f"\n{'kernel':<44} {'records/s':>12}  ratio to fused numba")
    ref = rows[1][1]
    for name, rate in rows:
        print(f"{name:<44} {rate:>12.3g}  {rate / ref:8.3f}")
    print(f"fused pass goal 3e8 records/s: {'met' if ref >= 3e8 else 'NOT met'} ({ref:.3g})")

    if not a.no_file:
        _file_comparison(recs, a.repeat)
    print("\ncounts:", fused(recs, True))
    return 0


def _file_comparison(recs: np.ndarray, repeat: int) -> None:
    n = recs.size
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "bench.ptu")
        span = summarize_span(recs)
        write_ptu(path, recs, FMT, global_resolution=GLOBRES, resolution=RES, acquisition_time=span)
        summarize(path)  # warm the page cache
        print(f"\nPTU file -> arrays ({n:,} records, {os.path.getsize(path) / 1e6:.0f} MB, page cache warm)"
              "; ratio = their rate / labctl decode rate")
        t_ours = timed(lambda: decode_file(path), repeat)
        print(f"{'labctl open_ptu + decode (numba)':<44} {n / t_ours:>12.3g}  1.000")
        t = timed(lambda: summarize(path), repeat)
        print(f"{'labctl summarize, no arrays (numba)':<44} {n / t:>12.3g}  {t_ours / t:.3f}")
        for name, fn in (("tttrlib", _tttrlib), ("phconvert", _phconvert)):
            try:
                runner = fn(path)
            except ImportError:
                print(f"{name:<44} {'not installed':>12}")
                continue
            try:
                t = timed(runner, 1)
            except Exception as e:  # a third-party failure is reported, not fatal
                print(f"{name:<44} failed: {type(e).__name__}: {e}")
                continue
            print(f"{name:<44} {n / t:>12.3g}  {t_ours / t:.3f}  (labctl is {t / t_ours:.1f}x faster)")


def summarize_span(recs: np.ndarray) -> float:
    """Length of the synthetic run (s) for the header's acquisition time (one wrap per
    overflow record is assumed, as generated)."""
    return float(np.count_nonzero((recs >> 25) == 127) * FMT.wrap * GLOBRES)


def decode_file(path: str) -> DecodedRecords:
    """The whole file decoded into per-record arrays (what tttrlib and phconvert produce)."""
    pf = open_ptu(path)
    return decode(pf.fmt, pf.records)


def _tttrlib(path: str) -> Callable[[], object]:
    import tttrlib  # type: ignore[import-not-found]

    return lambda: tttrlib.TTTR(path, "PTU").get_macro_times()


def _phconvert(path: str) -> Callable[[], object]:
    import phconvert  # type: ignore[import-not-found]

    return lambda: phconvert.pqreader.load_ptu(path)


if __name__ == "__main__":
    sys.exit(main())
