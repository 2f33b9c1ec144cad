"""``labctl parametric simulate``: simulate lock-in records of the parametric experiment and estimate
everything back from them, side by side with the theory.

  labctl parametric simulate                                   # the shipped sequence's parameters
  labctl parametric simulate sequences/parametric_steady_state.yaml --seed 3 --json
  labctl parametric simulate --chi 1.2kHz --delta 1.3kHz --mu 300Hz --duration 0.5s

Rates are frequencies (``--gamma 50`` or ``50Hz`` means γ/2π = 50 Hz), as in the sequence's
``parametric:`` section; physics in ``labctl/physics/estimation.py``, simulation in
``sim_instruments/twin/parametric.py``, docs in ``docs/parametric-experiment.md``.

The same parser can be hung under ``labctl parametric`` as ``simulate`` with
:func:`add_simulate_parser`.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from ..errors import InputError

DEFAULT_SEQUENCE = Path(__file__).resolve().parents[2] / "sequences" / "parametric_steady_state.yaml"
TWO_PI = 2 * math.pi


def _add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("sequence", nargs="?", metavar="SEQUENCE",
                   help="sequence with a 'parametric:' section (default: the shipped "
                        "sequences/parametric_steady_state.yaml); options below override it")
    p.add_argument("--model", choices=("modulated", "constant"))
    for name, what in (("gamma", "damping γ/2π"), ("chi", "drive χ/2π"),
                       ("delta", "detuning Δ/2π (constant model: coupling Γ/2π)"),
                       ("mu", "measurement strength μ/2π"), ("gamma-diff", "γ1 − γ2 over 2π (constant model)")):
        p.add_argument(f"--{name}", metavar="HZ", help=f"{what}, e.g. 50 or '50 Hz'")
    p.add_argument("--nbar", type=float, metavar="N", help="bath occupation N")
    p.add_argument("--eta", type=float, metavar="E", help="detection efficiency η")
    p.add_argument("--duration", metavar="T", help="record length, e.g. '1 s'")
    p.add_argument("--sample-rate", metavar="HZ", help="capture rate, 1.25 MHz/2^n, e.g. '78.125 kHz'")
    p.add_argument("--time-constant", metavar="T", help="lock-in time constant, e.g. '10 us'")
    p.add_argument("--slope", type=int, choices=(6, 12, 18, 24), help="lock-in slope (dB/oct)")
    p.add_argument("--boxcar", action="store_true",
                   help="ideal record instead of a lock-in (average over each sample interval)")
    p.add_argument("--scale", metavar="V", help="volts per unit quadrature, e.g. '1 mV'")
    p.add_argument("--blocks", type=int, metavar="K", help="blocks for the uncertainties (default 6)")
    p.add_argument("--fix", metavar="LIST",
                   help="parameters held at their true values in the fit: 'delta', 'gamma,delta' "
                        "or 'none' (default: the sequence's analysis.fix)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def add_simulate_parser(sub) -> argparse.ArgumentParser:
    """Hook for ``labctl/commands/parametric.py``: ``add_simulate_parser(sub)`` in its
    ``register`` adds ``labctl parametric simulate`` with the same options."""
    p = sub.add_parser("simulate", help="simulate lock-in records and estimate S, V_α±, γ, Δ, χ, μ",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_args(p)
    return p


def _override(ps, args):
    from dataclasses import replace

    from .. import units
    from ..physics import estimation as est

    kw = {}
    for name in ("gamma", "chi", "delta", "mu", "gamma_diff"):
        v = getattr(args, name)
        if v is not None:
            try:
                kw[name] = TWO_PI * units.parse_as(v if any(c.isalpha() for c in str(v)) else f"{v} Hz",
                                                   "Hz", where=f"--{name.replace('_', '-')}")
            except InputError as e:
                raise InputError(e.what, fix="a frequency such as 50 or '50 Hz' (meaning rate/2π)") from None
    for name in ("nbar", "eta", "model", "blocks"):
        v = getattr(args, name)
        if v is not None:
            kw[name] = v
    for name, dim, attr in (("duration", "s", "duration"), ("sample_rate", "Hz", "sample_rate"),
                            ("time_constant", "s", "time_constant"), ("scale", "V", "scale")):
        v = getattr(args, name)
        if v is not None:
            kw[attr] = units.parse_as(v, dim, where=f"--{name.replace('_', '-')}")
    if args.slope is not None:
        kw["slope_db"] = args.slope
    if args.fix is not None:
        f = [x.strip() for x in args.fix.split(",") if x.strip() and x.strip() != "none"]
        bad = [x for x in f if x not in ("gamma", "delta")]
        if bad:
            raise InputError(f"--fix {args.fix!r}: can only hold gamma and/or delta", fix="e.g. --fix delta")
        kw["fix"] = tuple(f)
    if args.blocks is not None and not 0 <= args.blocks <= 100:
        raise InputError(f"--blocks {args.blocks} must be 0…100", fix="e.g. --blocks 6")
    ps = replace(ps, **kw)
    if "time_constant" in kw:
        match = [t for t in est.TIME_CONSTANTS if abs(ps.time_constant - t) <= 1e-9 * t]
        if not match:
            raise InputError(f"--time-constant {args.time_constant}: not an SR865A time constant",
                             fix="1, 3, 10, 30 … × 10^k s, e.g. 10 us")
        ps = replace(ps, time_constant=match[0])
    if not (ps.duration > 0 and ps.sample_rate > 0 and ps.duration * ps.sample_rate >= 4096):
        raise InputError(f"a record of {ps.duration:g} s at {ps.sample_rate:g} Hz has fewer than "
                         "4096 samples", fix="lengthen --duration or raise --sample-rate")
    if ps.duration * ps.sample_rate > 4_000_000:
        raise InputError("more than 4 million samples: this command is meant to take seconds",
                         fix="shorten --duration")
    if not ps.scale > 0:
        raise InputError("--scale must be positive", fix="e.g. '1 mV'")
    chi_th = math.hypot(ps.gamma, ps.delta) - abs(ps.gamma_diff) / 2
    if ps.chi >= chi_th and ps.gamma > 0:
        sym = "Δ" if ps.model == "modulated" else "Γ"
        d_min = math.sqrt(max((ps.chi + abs(ps.gamma_diff) / 2) ** 2 - ps.gamma ** 2, 0.0))
        raise InputError(
            f"χ/2π = {ps.chi / TWO_PI:g} Hz is at or above the threshold "
            f"χ_th/2π = √(γ² + {sym}²)/2π = {chi_th / TWO_PI:.6g} Hz: no steady state",
            fix=f"lower --chi below {chi_th / TWO_PI:.6g} Hz or raise --delta above "
                f"{d_min / TWO_PI:.6g} Hz")
    ps.physical_model()          # validates the other ranges (γ > 0, 0 < η ≤ 1, …)
    return ps


def simulate_and_estimate(ps, *, seed: int = 1, boxcar: bool = False) -> dict:
    """Simulate one record set for settings ``ps`` (:class:`ParametricSettings`) and analyse it
    like real data; returns the JSON-ready comparison (theory, estimate, truth)."""
    from ..physics import estimation as est
    from sim_instruments.twin.parametric import simulate

    pm = ps.physical_model()
    lk = est.LockinFilter.boxcar(ps.sample_rate) if boxcar else ps.lockin()
    t0 = time.perf_counter()
    run = simulate(pm, lk, n_samples=ps.n_samples, scale=ps.scale, seed=seed)
    t1 = time.perf_counter()
    an = est.analyse_records(run.records, lk, model=ps.model, nbar=ps.nbar, eta=ps.eta,
                             gamma_diff=ps.gamma_diff, blocks=ps.blocks, fix=ps.fixed_values(),
                             truth=run.truth, true_model=pm, true_scale=ps.scale)
    t2 = time.perf_counter()
    out = an.summary()
    out["settings"] = ps.as_dict()
    out["seed"] = seed
    out["samples"] = run.n
    out["runtime_s"] = dict(simulate=t1 - t0, analyse=t2 - t1)
    return out


def _fmt(v: float, e: float | None = None, digits: int = 4) -> str:
    if v is None or not math.isfinite(v):
        return "—"
    if e is None or not math.isfinite(e) or e <= 0:
        return f"{v:.{digits}g}"
    # two significant digits of the error
    dec = max(0, 1 - int(math.floor(math.log10(e))))
    return f"{v:.{dec}f} ± {e:.{dec}f}"


def _table(r: dict) -> str:
    th = r.get("theory", {})
    s = r["S"]
    p = r["parameters"]
    tp = r.get("true_parameters", {})
    tr = (r.get("truth") or {})
    tt, tf = tr.get("true_filter", {}), tr.get("fitted_filter", {})
    lk = r["lockin"]
    hz = 1 / TWO_PI
    fixed = r["settings"].get("fix") or ()
    rows = [("quantity", "theory (inputs)", "estimated from the records", "truth check (sim only)")]
    rows.append(("S = 2√(V_α+ V_α−), ideal record", _fmt(th.get("S")), _fmt(s["S"], s["S_err"]), ""))
    rows.append(("S through the lock-in (Kalman)", _fmt(th.get("S_lockin")), _fmt(s["S_lockin"], s["S_lockin_err"]),
                 _fmt(tt.get("S"), tt.get("S_err")) + " (true-model filter)"))
    rows.append(("S of the filter actually run", "", _fmt(s.get("S_filter_expected")) + " (expected, fit-error penalty)",
                 _fmt(tf.get("S"), tf.get("S_err")) + " (fitted filter)"))
    rows.append(("V_α+", _fmt(th.get("V_plus")), _fmt(s["V_plus"], s["V_plus_err"]),
                 _fmt(tt.get("V_plus"), tt.get("V_plus_err"))))
    rows.append(("V_α−", _fmt(th.get("V_minus")), _fmt(s["V_minus"], s["V_minus_err"]),
                 _fmt(tt.get("V_minus"), tt.get("V_minus_err"))))
    for key, label in (("gamma", "γ/2π [Hz]"), ("delta", "Δ/2π [Hz]" if r["model"] == "modulated" else "Γ/2π [Hz]"),
                       ("chi", "χ/2π [Hz]"), ("mu", "μ/2π [Hz]")):
        tv = tp.get(key)
        v, e = p[key]["value"], p[key]["error"]
        est_txt = _fmt(v * hz) + " (held fixed)" if key in fixed else _fmt(v * hz, e * hz)
        rows.append((label, _fmt(abs(tv) * hz if tv is not None else None), est_txt, ""))
    rows.append(("SNR (Eq. 17)", _fmt(th.get("SNR")), _fmt(p["snr"]["value"], p["snr"]["error"]), ""))
    rows.append(("scale [mV per unit]", _fmt(r["settings"]["scale"] * 1e3),
                 _fmt(p["scale"]["value"] * 1e3, p["scale"]["error"] * 1e3), ""))
    w = [max(len(x[i]) for x in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w[i]) for i, c in enumerate(row)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w[i] for i in range(4)))
    inn = r["innovation"]
    ent = "entangled (S + 2σ < 1)" if s["entangled"] else "not shown to be entangled at 2σ"
    head = (f"Parametric experiment ({r['model']} coupling), {r['samples']} samples at "
            f"{lk['sample_rate']:g} Hz, lock-in τ = {lk['time_constant']:g} s, {lk['slope_db']} dB/oct"
            + (" (boxcar)" if lk["order"] == 0 else "") + f", seed {r['seed']}")
    tail = [f"  → {ent}; E_N = −ln S = {_fmt(s['E_N'])}",
            f"  innovations (whitened): variance within {inn['max_variance_deviation']:.3f} of 1, "
            f"|lag-1 correlation| ≤ {inn['max_abs_lag1']:.3f}",
            f"  errors: standard error over {r['blocks']} refitted blocks; filter burn-in {r['burn_in']} samples",
            f"  runtime: simulate {r['runtime_s']['simulate']:.2f} s, analyse {r['runtime_s']['analyse']:.2f} s"]
    return "\n".join([head, ""] + lines + [""] + tail)


def run(args) -> int:
    from ..physics import estimation as est
    from ..sequence import load_sequence

    path = args.sequence or str(DEFAULT_SEQUENCE)
    seq = load_sequence(path)
    if getattr(seq, "experiment", None) != "parametric":
        raise InputError(f"{path}: not a parametric sequence (experiment: {seq.experiment})",
                         fix="give a sequence with 'experiment: parametric' and a 'parametric:' section")
    ps = _override(est.parametric_settings(seq), args)
    result = simulate_and_estimate(ps, seed=args.seed, boxcar=args.boxcar)
    if args.json:
        print(json.dumps(result, indent=2, default=_json_default))
    else:
        print(_table(result))
    return 0


def _json_default(o):
    import numpy as np

    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")
