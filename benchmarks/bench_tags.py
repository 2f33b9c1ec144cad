"""Throughput of the time-tag kernels on synthetic TimeHarp 260 T3 data.

    .venv/bin/python benchmarks/bench_tags.py [--records 1e8] [--photon-fraction 0.1] [--repeat 5]
                                              [--threads N]

Synthetic data: a heralding experiment on two detectors (input channels 0 and 1), a sync per
trial, sparse photons (half of them in the pump window, the rest in the read window or uniform
background), written as TimeHarp 260 NANO T3 records with one overflow record per 1024 syncs
(``--overflow-count 1``, as the hardware streams them), so most records are sync overflows.

Measured in the same run, in records per second; rows timed together are called in turn, best
of ``--repeat`` rounds, so a busy moment of the machine hits them alike:

- in memory, 4 Mi-record chunks decoded into one reused buffer: every record, or only the
  non-overflow records (``overflows=False``), on one thread and on ``--threads``; the fused
  records -> heralded counts pass (numba, one core; goal >= 3e8 records/s); the numpy fallbacks
  on a slice of the data (much slower);
- a PTU file written with the same records, in the page cache, from its path to numpy arrays of
  macro time, micro time, channel and event type of every non-overflow record — exactly what
  ``tttrlib.TTTR`` holds (checked equal, outside the timing) — by labctl (``open_ptu`` +
  ``decode(overflows=False)``, one thread and ``--threads``), tttrlib (``TTTR(path)`` and its
  four getters; also the constructor alone) and phconvert (``load_ptu``: no event types), when
  they are importable (``pip install tttrlib phconvert``); plus labctl's per-record decode and
  ``summarize`` of the same file. The decode goal is labctl >= 3x tttrlib there, one thread each.
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
from labctl.tags._jit import available_cpus  # noqa: E402
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


def timed_together(fns: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Best wall time (s) of each callable, called in turn ``repeat`` rounds, so a busy moment
    of the machine hits all of them alike."""
    best = {name: float("inf") for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


_BUF: list[DecodedRecords] = []


def decode_all(recs: np.ndarray, use_numba: bool, overflows: bool = True, threads: int = 1) -> None:
    """Decode in CHUNK-record chunks into one buffer, reused from call to call (as a streaming
    consumer would)."""
    base = 0
    if not _BUF:
        _BUF.append(DecodedRecords.empty(FMT, CHUNK))
    buf = _BUF[0]
    for i in range(0, recs.size, CHUNK):
        _, base = decode_chunk(FMT, recs[i:i + CHUNK], base, use_numba, overflows=overflows,
                               out=buf, threads=threads)


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
    ap.add_argument("--repeat", type=int, default=5, help="best of N runs (default 5)")
    ap.add_argument("--threads", type=int, default=None,
                    help="threads for the parallel rows (default: the CPUs, at most 8)")
    ap.add_argument("--no-file", action="store_true", help="skip the PTU-file comparisons")
    a = ap.parse_args(argv)
    nt = a.threads if a.threads else available_cpus()

    t0 = time.perf_counter()
    recs = generate(int(a.records), a.photon_fraction, a.overflow_count)
    tgen = time.perf_counter() - t0
    n = recs.size
    print(f"generated {n:,} {FMT.name} records in {tgen:.2f} s "
          f"({a.photon_fraction:.0%} photons, {a.overflow_count} wrap(s) per overflow record); "
          f"{os.cpu_count()} CPUs, parallel rows on {nt} threads")

    small = recs[: min(n, 1 << 16)]
    decode_all(small, True)   # compile (or load the cache) outside the timing
    decode_all(small, True, overflows=False)
    fused(small, True)

    print(f"\nin memory, {CHUNK:,}-record chunks into a reused buffer {'kernel':<8} records/s")
    best = timed_together({
        "decode -> every record (numba, 1 thread)": lambda: decode_all(recs, True),
        f"decode -> every record (numba, {nt} threads)": lambda: decode_all(recs, True, threads=nt),
        "decode -> events (numba, 1 thread)": lambda: decode_all(recs, True, overflows=False),
        f"decode -> events (numba, {nt} threads)": lambda: decode_all(recs, True, False, nt),
        "fused records->counts (numba, 1 thread)": lambda: fused(recs, True),
    }, a.repeat)
    rows = [(name, n / t) for name, t in best.items()]
    m = min(n, int(a.numpy_records))
    sub = recs[:m]
    t = timed(lambda: decode_all(sub, False), 1)
    rows.append((f"decode -> every record (numpy, {m:,} records)", m / t))
    rows.append((f"fused (numpy, {m:,} records)", m / timed(lambda: fused(sub, False), 1)))
    assert fused(sub, True) == fused(sub, False), "numba and numpy disagree"
    for name, rate in rows:
        print(f"{name:<62} {rate:>12.3g}")
    ref = best["fused records->counts (numba, 1 thread)"]
    print(f"fused pass goal 3e8 records/s: {'met' if n / ref >= 3e8 else 'NOT met'} ({n / ref:.3g})")

    if not a.no_file:
        _file_comparison(recs, a.repeat, nt)
    print("\ncounts:", fused(recs, True))
    return 0


def _file_comparison(recs: np.ndarray, repeat: int, nt: int) -> None:
    """The same PTU file, in the page cache, to the same arrays: time (macro time), dtime
    (micro time), channel and kind (event type) of every record that is not an overflow record
    — what tttrlib's ``TTTR`` holds. Timed from the path to the numpy arrays for all of them."""
    n = recs.size
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "bench.ptu")
        span = summarize_span(recs)
        write_ptu(path, recs, FMT, global_resolution=GLOBRES, resolution=RES, acquisition_time=span)
        summarize(path)  # warm the page cache
        ours = decode_file(path, overflows=False, threads=1)
        fns: dict[str, Callable[[], object]] = {
            "labctl: open_ptu + decode(overflows=False), 1 thread": lambda: decode_file(path, False, 1),
            f"labctl: the same, {nt} threads": lambda: decode_file(path, False, nt),
            "labctl: open_ptu + decode, every record, 1 thread": lambda: decode_file(path, True, 1),
            "labctl: summarize, no arrays (1 thread)": lambda: summarize(path),
        }
        notes = []
        for name, fn in (("tttrlib", _tttrlib), ("phconvert", _phconvert)):
            try:
                runners = fn(path)
                same = _same_events(ours, runners[0][1]())
            except ImportError:
                notes.append(f"{name:<62} {'not installed':>12}")
                continue
            except Exception as e:  # a third-party failure is reported, not fatal
                notes.append(f"{name:<62} failed: {type(e).__name__}: {e}")
                continue
            notes.append(f"{name} output equals labctl's events: {'yes' if same else 'NO'}")
            fns.update(runners)
        print(f"\nPTU file -> event arrays ({n:,} records, {len(ours):,} events, "
              f"{os.path.getsize(path) / 1e6:.0f} MB, page cache warm), best of {repeat} interleaved")
        best = timed_together(fns, repeat)
        t_tt = best.get(TTTRLIB_FULL)
        print(f"{'':<62} {'records/s':>12}  {'tttrlib time / this' if t_tt else ''}")
        for name, t in best.items():
            ratio = f"{t_tt / t:10.2f}x" if t_tt else ""
            print(f"{name:<62} {n / t:>12.3g}  {ratio}")
        for line in notes:
            print(line)
        if t_tt:
            r1 = t_tt / best["labctl: open_ptu + decode(overflows=False), 1 thread"]
            r0 = best[TTTRLIB_CTOR] / best["labctl: open_ptu + decode(overflows=False), 1 thread"]
            print(f"decode goal >= 3x tttrlib (same file, same arrays, one thread each): "
                  f"{'met' if r1 >= 3 else 'NOT met'} ({r1:.2f}x; {r0:.2f}x against tttrlib's "
                  f"constructor alone)")


def summarize_span(recs: np.ndarray) -> float:
    """Length of the synthetic run (s) for the header's acquisition time (one wrap per
    overflow record is assumed, as generated)."""
    return float(np.count_nonzero((recs >> 25) == 127) * FMT.wrap * GLOBRES)


def decode_file(path: str, overflows: bool = False, threads: int | None = 1) -> DecodedRecords:
    """The whole file decoded into arrays: one entry per record, or (``overflows=False``) per
    photon/marker record, as tttrlib and phconvert give them."""
    pf = open_ptu(path)
    return decode(pf.fmt, pf.records, overflows=overflows, threads=threads)


TTTRLIB_FULL = "tttrlib: TTTR(path) + macro/micro times, channels, types"
TTTRLIB_CTOR = "tttrlib: TTTR(path) alone (arrays stay inside)"


def _tttrlib(path: str) -> list[tuple[str, Callable[[], object]]]:
    import tttrlib  # type: ignore[import-not-found]

    def full() -> tuple[np.ndarray, ...]:
        t = tttrlib.TTTR(path, "PTU")
        return (t.get_macro_times(), t.get_micro_times(), t.get_routing_channel(),
                t.get_event_type())

    return [(TTTRLIB_FULL, full), (TTTRLIB_CTOR, lambda: tttrlib.TTTR(path, "PTU"))]


def _phconvert(path: str) -> list[tuple[str, Callable[[], object]]]:
    import phconvert  # type: ignore[import-not-found]

    def full() -> tuple[np.ndarray, ...]:
        ts, det, nt, _meta, _markers = phconvert.pqreader.load_ptu(path)
        return ts, nt, det, None

    return [("phconvert: load_ptu (macro, micro times, channels)", full)]


def _same_events(ours: DecodedRecords, theirs: tuple) -> bool:
    """Whether another reader's (macro times, micro times, channels, types) equal ours."""
    macro, micro, chan, kind = theirs
    ok = (len(macro) == len(ours) and np.array_equal(np.asarray(macro, np.int64), ours.time)
          and np.array_equal(np.asarray(micro, np.int64), ours.dtime.astype(np.int64))
          and np.array_equal(np.asarray(chan, np.int64), ours.channel.astype(np.int64)))
    if kind is not None:
        ok = ok and np.array_equal(np.asarray(kind, np.int64), ours.kind.astype(np.int64))
    return bool(ok)


if __name__ == "__main__":
    sys.exit(main())
