"""``labctl calibrate NAME ...``: the lab's calibrations that need only the station (or nothing).

* ``labctl calibrate wavelength --config FILE [--sim] --wavelength 1553.8nm [--laser read_laser]``
* ``labctl calibrate bias --config FILE [--sim]`` — SNSPD bias check and latch recovery (count rates
  from the time tagger's rate meters)
* ``labctl calibrate fringe --config FILE [--sim]`` — the phase lock's stretcher sweep and fringe fit
* ``labctl calibrate pairs CHIP_A CHIP_B [--criterion 100MHz]`` — matching devices of two chips
* ``labctl calibrate pair-probability --devices 234 --spread 2nm --offset 0nm [--chips 2]``

Arm balancing and filter alignment need count rates only a run can provide (an arm blocked, heralds
counted); the runner calls ``labctl.calibrations.balance_arms`` / ``align_filter`` for them.

Exit codes: 0 passed, 2 invalid input, 3 an instrument fault or a calibration that failed (the
result is printed first, the reason goes to stderr).
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..errors import EXIT_FAULT, InputError
from .. import units as _units

EPILOG = """\
procedures:
  wavelength         set a laser, wait, verify the measured wavelength (TLB-6700)
  bias               SNSPD bias and count rate; latch detection and reset (SIM928)
  fringe             phase-lock fringe: stretcher sweep, fit of amplitude, offset, V_2pi
  pairs              device pairs of two chips within the match criterion
  pair-probability   birthday-paradox probability that a matching pair (or set) exists

exit codes: 0 passed, 2 invalid input, 3 instrument fault or failed calibration."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "calibrate", help="run a calibration (wavelength, bias, fringe, pairs, pair-probability)",
        description="Run one of the lab's calibrations and print the measured values, the new settings and "
                    "pass/fail with the reason.", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="procedure", metavar="NAME", parser_class=type(p))
    p.set_defaults(func=_no_procedure, _parser=p)

    def station_args(q: argparse.ArgumentParser) -> None:
        q.add_argument("--config", required=True, metavar="FILE", help="station file (e.g. configs/lab.yaml)")
        q.add_argument("--sim", action="store_true", help="use the simulated instruments")
        q.add_argument("--seed", type=int, default=None, help="seed of the simulated lab")
        q.add_argument("--json", action="store_true", help="machine-readable output")

    w = sub.add_parser("wavelength", help="set a laser's wavelength and verify it settles",
                       description="Set the laser's wavelength, wait for the move, and poll the measured "
                                   "wavelength until it stays within the tolerance (re-set once on a mode hop).")
    station_args(w)
    w.add_argument("--wavelength", required=True, metavar="WL", help="target, e.g. 1553.8nm")
    w.add_argument("--laser", default=None, metavar="NAME", help="laser instrument (default: read_laser, or the only laser)")
    w.add_argument("--tolerance", default="5 pm", help="accepted |measured - target| (default 5 pm)")
    w.add_argument("--timeout", default="10 s", help="settle-time limit (default 10 s)")
    w.set_defaults(func=_run_wavelength)

    b = sub.add_parser("bias", help="SNSPD bias check and latch recovery",
                       description="For each detector_<n>_bias channel: bias and output state of its SIM928, count "
                                   "rate from the tagger channel detector_<n>; a biased detector counting below the "
                                   "latch threshold is reset (bias to 0 V and back) and checked again. Expected bias "
                                   "and rate windows come from 'calibration: {snspd: {detector_1: {bias, min_rate, "
                                   "max_rate}}}' in the station file.")
    station_args(b)
    b.add_argument("--latch-rate", default="1 Hz", help="below this count rate a biased detector is latched (default 1 Hz)")
    b.add_argument("--max-resets", type=int, default=2, help="latch resets per detector (default 2)")
    b.add_argument("--settle", default="100 ms", help="time at 0 V during a reset (default 100 ms)")
    b.add_argument("--apply", action="store_true",
                   help="first set each detector to its expected bias (calibration.snspd) and switch it on")
    b.set_defaults(func=_run_bias)

    f = sub.add_parser("fringe", help="phase-lock fringe calibration (stretcher sweep)",
                       description="Sweep the fiber stretcher (channel phase_actuator) and fit the balanced-detector "
                                   "fringe on channel lock_detector: amplitude, offset, volts per 2 pi.")
    station_args(f)
    f.set_defaults(func=_run_fringe)

    pr = sub.add_parser("pairs", help="matching devices of two chips",
                        description="Device pairs (one per chip) whose optical frequencies differ by at most the "
                                    "criterion. Chip files: CSV (a wavelength_nm column, or one wavelength in nm per "
                                    "row) or YAML (a list of wavelengths, or label: wavelength).")
    pr.add_argument("chip_a", metavar="CHIP_A")
    pr.add_argument("chip_b", metavar="CHIP_B")
    pr.add_argument("--criterion", default="100 MHz", help="match criterion in frequency (default 100 MHz)")
    pr.add_argument("--json", action="store_true", help="machine-readable output")
    pr.set_defaults(func=_run_pairs)

    pp = sub.add_parser("pair-probability", help="birthday-paradox probability of a matching pair",
                        description="Probability that chips with Gaussian-distributed resonances hold a matching pair "
                                    "(or, with --chips > 2, a matching set). The analytic method is the supplement's "
                                    "estimate; montecarlo simulates the exact criterion (see docs/calibrations.md).")
    pp.add_argument("--devices", default="234", help="devices per chip (or a comma list, one per chip)")
    pp.add_argument("--spread", default="2 nm", help="standard deviation of the resonance wavelengths (default 2 nm)")
    pp.add_argument("--offset", default="0 nm", help="centre offset of chips 2.. from chip 1 (default 0 nm)")
    pp.add_argument("--criterion", default="100 MHz", help="match criterion (default 100 MHz)")
    pp.add_argument("--chips", type=int, default=2, help="number of chips (default 2)")
    pp.add_argument("--wavelength", default="1550 nm", help="where the criterion is converted to nm (default 1550 nm)")
    pp.add_argument("--method", choices=("analytic", "montecarlo"), default="analytic")
    pp.add_argument("--group", choices=("all", "reference"), default="all",
                    help="montecarlo, >2 chips: all pairs within the criterion, or all within it of chip 1's device")
    pp.add_argument("--samples", type=int, default=20000, help="montecarlo samples (default 20000)")
    pp.add_argument("--seed", type=int, default=0, help="montecarlo seed (default 0)")
    pp.add_argument("--json", action="store_true", help="machine-readable output")
    pp.set_defaults(func=_run_probability)


def _no_procedure(args: argparse.Namespace) -> int:
    args._parser.print_help(sys.stderr)
    return 2


def _quantity(text: str, dim: str, option: str) -> float:
    return _units.parse_as(text, dim, where=option)


def _emit(result: Any, as_json: bool) -> int:
    d = result.to_dict()
    if as_json:
        sys.stdout.write(json.dumps(d, indent=2, allow_nan=False) + "\n")
    else:
        print(f"{d['name']}: {'PASSED' if d['passed'] else 'FAILED'} — {d['reason']}")
        for section in ("measured", "settings"):
            if d[section]:
                print(f"{section}:")
                for k, v in d[section].items():
                    print(f"  {k}: {v}")
    if not d["passed"]:
        print(f"labctl: calibration {d['name']} failed: {d['reason']}", file=sys.stderr)
        return EXIT_FAULT
    return 0


def _station(args: argparse.Namespace, names: list[str] | None):
    from ..config import load_station
    from ..station import Station

    cfg = load_station(args.config)
    if names:
        missing = [n for n in names if n not in cfg.instruments]
        if missing:
            raise InputError(f"the station has no instrument {', '.join(map(repr, missing))}", file=args.config,
                             fix="instruments: " + ", ".join(cfg.instruments))
    return cfg, Station(cfg, sim=args.sim, seed=args.seed).connect(names)


def _run_wavelength(args: argparse.Namespace) -> int:
    from ..calibrations import set_laser_wavelength
    from ..config import load_station

    target = _quantity(args.wavelength, "m", "--wavelength")
    tol = _quantity(args.tolerance, "m", "--tolerance")
    timeout = _quantity(args.timeout, "s", "--timeout")
    cfg = load_station(args.config)
    laser = args.laser
    if laser is None:
        lasers = cfg.instruments_with_role("laser")
        laser = "read_laser" if "read_laser" in lasers else (lasers[0] if len(lasers) == 1 else None)
        if laser is None:
            raise InputError("which laser? the station has " + (", ".join(lasers) or "no lasers"), file=args.config,
                             fix="pass --laser NAME")
    _, station = _station(args, [laser])
    with station:
        result = set_laser_wavelength(station, target, laser=laser, tolerance=tol, settle_timeout_s=timeout)
    return _emit(result, args.json)


def _run_bias(args: argparse.Namespace) -> int:
    from ..calibrations import check_detectors, station_detectors
    from ..config import load_station

    latch = _quantity(args.latch_rate, "Hz", "--latch-rate")
    settle = _quantity(args.settle, "s", "--settle")
    if args.max_resets < 0:
        raise InputError("--max-resets must be >= 0")
    cfg = load_station(args.config)
    chans = cfg.model.channels
    bias_roles = sorted(r for r in chans if r.startswith("detector_") and r.endswith("_bias"))
    if not bias_roles:
        raise InputError("the station maps no 'detector_<n>_bias' channels", file=args.config,
                         fix="add e.g. 'detector_1_bias: {instrument: snspd_bias, output: 1}' under channels")
    counters = {}
    for role in bias_roles:
        det = role[: -len("_bias")]
        if det not in chans or chans[det].output is None:
            raise InputError(f"no channel '{det}' (tagger instrument and input) for the count rate of {det}",
                             file=args.config, fix=f"add '{det}: {{instrument: tagger, output: 0}}' under channels")
        counters[det] = (chans[det].instrument, int(chans[det].output))
    names = sorted({chans[r].instrument for r in bias_roles} | {inst for inst, _ in counters.values()})
    _, station = _station(args, names)
    with station:
        def count_rate(det: str) -> float:
            inst, ch = counters[det]
            return station[inst].count_rate(ch)

        result = check_detectors(station, count_rate, detectors=station_detectors(station), latch_rate_hz=latch,
                                 settle_s=settle, max_resets=args.max_resets, apply_bias=args.apply)
    return _emit(result, args.json)


def _run_fringe(args: argparse.Namespace) -> int:
    from ..calibrations import calibrate_fringe
    from ..config import load_station

    cfg = load_station(args.config)
    names = sorted({cfg.channel("lock_detector").instrument, cfg.channel("phase_actuator").instrument})
    _, station = _station(args, names)
    with station:
        result = calibrate_fringe(station)
    return _emit(result, args.json)


def _run_pairs(args: argparse.Namespace) -> int:
    from ..calibrations import find_pairs, load_resonances

    crit = _quantity(args.criterion, "Hz", "--criterion")
    if crit < 0:
        raise InputError("--criterion must be >= 0", fix="e.g. --criterion 100MHz")
    a, la = load_resonances(args.chip_a)
    b, lb = load_resonances(args.chip_b)
    pairs = find_pairs(a, b, crit, labels_a=la, labels_b=lb)
    if args.json:
        out = {"criterion_hz": crit, "chip_a": {"file": args.chip_a, "devices": int(a.size)},
               "chip_b": {"file": args.chip_b, "devices": int(b.size)}, "count": len(pairs),
               "pairs": [p.to_dict() for p in pairs]}
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
        return 0
    print(f"{len(pairs)} pair(s) within {crit / 1e6:g} MHz ({a.size} x {b.size} devices)")
    if pairs:
        print(f"{'device A':>10} {'lambda A (nm)':>14} {'device B':>10} {'lambda B (nm)':>14} {'nu_A - nu_B (MHz)':>18}")
        for p in pairs:
            print(f"{p.label_a:>10} {p.wavelength_a_nm:>14.5f} {p.label_b:>10} {p.wavelength_b_nm:>14.5f} "
                  f"{p.detuning_hz / 1e6:>18.2f}")
    return 0


def _percent(p: float) -> str:
    """Enough digits that the distance from 100 % shows: 99.9996, 92.533."""
    import math

    miss = 1.0 - p
    digits = 5 if miss <= 0 else max(5, int(math.ceil(-math.log10(miss))) + 2)
    return f"{p * 100:.{digits}g}"


def _run_probability(args: argparse.Namespace) -> int:
    from ..calibrations import pair_probability

    try:
        devs = [int(x) for x in str(args.devices).split(",")]
    except ValueError:
        raise InputError(f"--devices {args.devices!r}: a whole number or a comma list", fix="e.g. --devices 234") from None
    devices: Any = devs[0] if len(devs) == 1 else devs
    offsets = [x for x in str(args.offset).split(",")]
    offset: Any = offsets[0] if len(offsets) == 1 else offsets
    res = pair_probability(devices, args.spread, args.criterion, offset, chips=args.chips,
                           wavelength_m=args.wavelength, method=args.method, samples=args.samples, seed=args.seed,
                           group=args.group)
    d = res.to_dict()
    if args.json:
        sys.stdout.write(json.dumps(d, indent=2, allow_nan=False) + "\n")
        return 0
    what = "pair" if res.chips == 2 else f"matching set of {res.chips}"
    line = (f"P(at least one {what}) = {_percent(res.probability)} %  ({res.method}; {','.join(map(str, res.devices))} "
            f"devices, spread {res.spread_m * 1e9:g} nm, offset(s) {', '.join(f'{o * 1e9:g}' for o in res.offsets_m)} nm, "
            f"criterion {res.criterion_hz / 1e6:g} MHz = {res.criterion_m * 1e12:.4g} pm)")
    print(line)
    if res.expected_matches is not None:
        print(f"expected number of matches: {res.expected_matches:.4g}")
    if res.stderr is not None:
        print(f"Monte Carlo: {res.samples} samples, seed {res.seed}, standard error {res.stderr * 100:.2g} %")
    return 0
