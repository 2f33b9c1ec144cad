"""``labctl parametric``: theory of steady-state entanglement by detuned parametric amplification.

  labctl parametric theory  --gamma 1 --chi 25 --delta 25.5 --nbar 5 --eta 1 --mu 5.5 [--json]
  labctl parametric optimum --gamma 1 --chi 25 --delta 25.5 --nbar 5 --eta 1 [--json]
  labctl parametric figure2 --out fig2.png

All rates (γ, χ, Δ or Γ, μ) in one unit of your choice (s⁻¹, or units of γ with --gamma 1).
Model and equations: ``labctl/physics/parametric.py`` and ``docs/parametric.md``.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from ..errors import EXIT_INPUT, InputError

PAPER = "Szorkovszky et al. 2014, arXiv:1402.6392"


def _model_args(p: argparse.ArgumentParser, *, with_mu: bool) -> None:
    p.add_argument("--gamma", type=float, required=True, metavar="G",
                   help="mechanical damping rate γ (> 0; the mean (γ1+γ2)/2 with --gamma-diff)")
    p.add_argument("--chi", type=float, required=True, metavar="X",
                   help="parametric drive rate χ (≥ 0, below the threshold √(γ²+Δ²))")
    p.add_argument("--delta", type=float, required=True, metavar="D",
                   help="detuning Δ (modulated model) or coupling Γ (constant model)")
    p.add_argument("--nbar", type=float, required=True, metavar="N", help="bath occupation N ≥ 0")
    p.add_argument("--eta", type=float, required=True, metavar="E",
                   help="detection efficiency η in (0, 1]")
    if with_mu:
        p.add_argument("--mu", type=float, required=True, metavar="M",
                       help="measurement strength μ (> 0, same unit as γ)")
    p.add_argument("--model", choices=("modulated", "constant"), default="modulated",
                   help="modulated coupling (Eq. 1–8, default) or constant coupling with "
                        "single-mode drives (Eq. 19–28)")
    p.add_argument("--gamma-diff", type=float, default=0.0, metavar="GD",
                   help="damping asymmetry γ1 − γ2 (constant model only, Eq. 25–28; default 0)")
    p.add_argument("--exact-noise", action="store_true",
                   help="constant model with γ1 ≠ γ2: keep the pair-noise correlation "
                        "(γ1−γ2)(N+1/2) that the paper's Eq. 25 drops (numerical S only)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "parametric", help="theory of steady-state parametric entanglement (S, threshold, figure 2)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="parametric_command", metavar="SUBCOMMAND")
    from ._parametric_sim import add_simulate_parser

    add_simulate_parser(sub)  # labctl parametric simulate: simulate records, estimate, compare with theory

    t = sub.add_parser("theory", help="separability S, V_α±, α and threshold for one parameter set",
                       description="Steady-state conditional covariance (Riccati Eq. 12, solved "
                                   "numerically) and the closed form Eq. 16–18 of " + PAPER + ".")
    _model_args(t, with_mu=True)
    t.set_defaults(func=cmd_theory)

    o = sub.add_parser("optimum", help="measurement strength μ that minimises S",
                       description="Minimise S over μ at fixed γ, χ, Δ, N, η (" + PAPER + ").")
    _model_args(o, with_mu=False)
    o.set_defaults(func=cmd_optimum)

    f = sub.add_parser(
        "figure2", help="reproduce the paper's Fig. 2 (S against μ/γ) as an image",
        description="Fig. 2 of " + PAPER + ": S against μ/γ for χ/γ = 25 and 50, N = 5, η = 1; "
                    "solid symmetric damping, dashed constant coupling with γ_D = 0.5 γ_S "
                    "(γ_S = γ1+γ2, γ_D = γ1−γ2). Detuning: at threshold (the optimum over Δ) "
                    "unless --margin is given.")
    f.add_argument("--out", required=True, metavar="FILE.png", help="image to write (.png/.pdf/.svg)")
    f.add_argument("--chi", type=float, nargs="+", default=[25.0, 50.0], metavar="X",
                   help="drive strengths χ/γ (default 25 50)")
    f.add_argument("--nbar", type=float, default=5.0, metavar="N", help="bath occupation (default 5)")
    f.add_argument("--eta", type=float, default=1.0, metavar="E", help="efficiency (default 1)")
    f.add_argument("--asymmetry", type=float, default=0.5, metavar="R",
                   help="γ_D/γ_S = (γ1−γ2)/(γ1+γ2) of the dashed curves (default 0.5; 0: none)")
    f.add_argument("--margin", type=float, default=0.0, metavar="F",
                   help="distance below threshold, χ = (1−F)·χ_th (default 0: the threshold limit)")
    f.add_argument("--mu-min", type=float, default=1e-2, metavar="M", help="smallest μ/γ (0.01)")
    f.add_argument("--mu-max", type=float, default=1e3, metavar="M", help="largest μ/γ (1000)")
    f.add_argument("--json", action="store_true", help="print the curves' minima as JSON")
    f.set_defaults(func=cmd_figure2)

    def _help(_args) -> int:
        p.print_help()
        return EXIT_INPUT

    p.set_defaults(func=_help)


def _theory_kw(args) -> dict:
    return dict(model=args.model, gamma_diff=args.gamma_diff)


def _summary(r, title: str) -> str:
    q = r.params
    if r.model == "modulated":
        head = (f"  γ = {q['gamma']:g}, χ = {q['chi']:g}, Δ = {q['delta']:g}, N = {q['nbar']:g}, "
                f"η = {q['eta']:g}, μ = {q['mu']:.6g}   (all rates in one unit)")
        thr = (f"  threshold χ_th = √(γ² + Δ²) = {r.threshold:.6g}   "
               f"(χ/χ_th = {q['chi'] / r.threshold:.4f})")
        pairs = "X±, Y±"
    else:
        head = (f"  γ1 = {q['gamma1']:g}, γ2 = {q['gamma2']:g} (γ = {q['gamma']:g}), χ = {q['chi']:g}, "
                f"Γ = {q['splitting']:g}, N = {q['nbar']:g}, η = {q['eta']:g}, μ = {q['mu']:.6g}")
        c1, c2 = r.chi_effective
        thr = (f"  threshold χ_th = √(γ² + Γ²) = {r.threshold:.6g}; effective drives "
               f"χ1 = {c1:g}, χ2 = {c2:g}")
        pairs = "(U1,U2), (V1,V2)"
    verdict = (f"entangled (S < 1), E_N = −ln S = {r.E_N:.4f}" if r.entangled
               else "not entangled by this criterion (S ≥ 1)")
    lines = [title, head, thr,
             f"  V0 = N + 1/2 + μ/2γ = {r.V0:.6g},  SNR = {r.SNR:.6g}",
             f"  best-quadrature variances ({pairs}): V_α+ = {r.V_plus:.6g}, V_α− = {r.V_minus:.6g}"
             "  (vacuum 1/2)",
             f"  squeezing angle α = {r.alpha:.6g} rad ({math.degrees(r.alpha):.4g}°, Eq. 18)",
             f"  S = 2√(V_α+ V_α−) = {r.S:.6f}  →  {verdict}"]
    if r.S_closed_form is not None:
        lines.append(f"  closed form (Eq. 16): S = {r.S_closed_form:.6f}   "
                     f"(numerical − closed = {r.S - r.S_closed_form:.1e})")
    else:
        lines.append("  (correlated pair noise: no closed form, numerical Riccati only)")
    return "\n".join(lines)


def _model_title(r) -> str:
    name = "modulated coupling" if r.model == "modulated" else "constant coupling"
    return f"Steady-state parametric entanglement, {name} ({PAPER})"


def cmd_theory(args) -> int:
    from ..physics import parametric as pt

    r = pt.theory(args.gamma, args.chi, args.delta, args.nbar, args.eta, args.mu,
                  exact_noise=args.exact_noise, **_theory_kw(args))
    if args.json:
        print(json.dumps(r.as_dict(), indent=2))
    else:
        print(_summary(r, _model_title(r)))
    return 0


def cmd_optimum(args) -> int:
    from ..physics import parametric as pt

    mu, r = pt.optimal_mu(args.gamma, args.chi, args.delta, args.nbar, args.eta,
                          **_theory_kw(args))
    if args.exact_noise:
        r = pt.theory(args.gamma, args.chi, args.delta, args.nbar, args.eta, mu,
                      exact_noise=True, **_theory_kw(args))
    if args.json:
        d = r.as_dict()
        d["mu_opt"] = mu
        print(json.dumps(d, indent=2))
    else:
        print(f"optimal measurement strength μ = {mu:.6g} (μ/γ = {mu / args.gamma:.4g}; "
              f"γ(N + 1/2) = {args.gamma * (args.nbar + 0.5):.4g})")
        print(_summary(r, _model_title(r)))
    return 0


def cmd_figure2(args) -> int:
    from ..physics import parametric as pt

    out = Path(args.out)
    if out.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise InputError(f"--out {args.out}: unknown image type {out.suffix or '(none)'!r}",
                         fix="name the file *.png (or .pdf, .svg)")
    if not 0 <= args.margin < 1:
        raise InputError(f"--margin {args.margin:g} must be in [0, 1)", fix="e.g. --margin 0.01")
    if not 0 <= args.asymmetry < 1:
        raise InputError(f"--asymmetry {args.asymmetry:g} must be in [0, 1) (γ_D/γ_S)",
                         fix="e.g. --asymmetry 0.5")
    if not 0 < args.mu_min < args.mu_max:
        raise InputError(f"μ range {args.mu_min:g}…{args.mu_max:g} is empty or not positive",
                         fix="give 0 < --mu-min < --mu-max")
    for chi in args.chi:  # χ ≥ 0, N ≥ 0, 0 < η ≤ 1 (the detuning is chosen below)
        pt.validate(1.0, chi, pt.threshold_detuning(1.0, chi), args.nbar, args.eta,
                    allow_threshold=True)
    try:
        curves = pt.plot_figure2(out, mu_min=args.mu_min, mu_max=args.mu_max, chis=args.chi,
                                 nbar=args.nbar, eta=args.eta, asymmetry=args.asymmetry,
                                 margin=args.margin)
    except OSError as e:
        raise InputError(f"cannot write {out}: {e.strerror or e}",
                         fix="choose a writable --out path") from e
    import numpy as np

    mus = np.logspace(math.log10(args.mu_min), math.log10(args.mu_max), len(curves[0]["S"]))
    rows = []
    for c in curves:
        i = int(np.argmin(c["S"]))
        rows.append(dict(chi=c["chi"], damping=c["damping"], delta=c["delta"],
                         gamma_diff=c["gamma_diff"], S_min=float(c["S"][i]), mu_at_min=float(mus[i]),
                         entangled_mu_range=_range(mus, c["S"])))
    if args.json:
        print(json.dumps(dict(out=str(out), curves=rows), indent=2))
    else:
        print(f"wrote {out}  (Fig. 2 of {PAPER}; N = {args.nbar:g}, η = {args.eta:g}, "
              + ("detuning at threshold)" if args.margin == 0 else f"χ = {1 - args.margin:g} χ_th)"))
        for r in rows:
            rng = r["entangled_mu_range"]
            end = " (end of scan)" if rng and rng[1] == float(mus[-1]) else ""
            ent = f"S < 1 for μ/γ in {rng[0]:.3g}…{rng[1]:.3g}{end}" if rng else "never S < 1"
            kind = "γ1 = γ2" if r["damping"] == "symmetric" else f"γ1 − γ2 = {r['gamma_diff']:g} γ"
            print(f"  χ/γ = {r['chi']:g}, {kind}, Δ (or Γ) = {r['delta']:.6g}: "
                  f"min S = {r['S_min']:.4f} at μ/γ ≈ {r['mu_at_min']:.3g}; {ent}")
    return 0


def _range(mus, s):
    inside = [m for m, v in zip(mus, s) if v < 1]
    return [float(inside[0]), float(inside[-1])] if inside else None
