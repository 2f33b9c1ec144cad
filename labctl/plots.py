"""Plots of a run, drawn from per-point counts (so ``labctl plot RUN_DIR`` redraws them from the
run file alone): witness probability densities, the phase sweep (main text Fig. 3 style, sine
fits), the delay sweep (Fig. 4 style, visibility inset) and the pump-probe response (Fig. S3)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .analysis.counts import Counts


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def g2_with_errors(c: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """2×2 g2 (read i, herald j) and 1-sigma errors from the coincidence counting (√C)."""
    n = float(c["trials"])
    g = np.full((2, 2), np.nan)
    e = np.full((2, 2), np.nan)
    for i in range(2):
        for j in range(2):
            cr, cp, cc = c["read"][i], c["pump"][j], c["coincidences"][i][j]
            if cr > 0 and cp > 0 and n > 0:
                g[i, j] = cc * n / (cr * cp)
                e[i, j] = max(math.sqrt(cc), 1.0) * n / (cr * cp)
    return g, e


def _sine_fit(x: np.ndarray, y: np.ndarray, period: float) -> tuple[np.ndarray, np.ndarray]:
    k = 2 * np.pi / period
    ok = np.isfinite(y)
    A = np.c_[np.ones(ok.sum()), np.cos(k * x[ok]), np.sin(k * x[ok])]
    coef = np.linalg.lstsq(A, y[ok], rcond=None)[0] if ok.sum() >= 3 else np.array([np.nan] * 3)
    xs = np.linspace(x.min(), x.max(), 400)
    return xs, coef[0] + coef[1] * np.cos(k * xs) + coef[2] * np.sin(k * xs)


def _finish(fig: Any, ax: Any, out: Path, title: str, xlabel: str, ylabel: str, legend_loc: str = "best") -> Path:
    """Labels, legend, layout, save, close: the end of every plot here."""
    plt = _plt()
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8, loc=legend_loc)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _swept(points: Sequence[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Swept values, cross- and same-detector g2 (mean of the two) and their errors."""
    x = np.array([float(list(p["parameters"].values())[0]) for p in points])
    gs = [g2_with_errors(p["counts"]) for p in points]
    cross = np.array([(g[0, 1] + g[1, 0]) / 2 for g, _ in gs])
    same = np.array([(g[0, 0] + g[1, 1]) / 2 for g, _ in gs])
    ecross = np.array([0.5 * math.hypot(e[0, 1], e[1, 0]) for _, e in gs])
    esame = np.array([0.5 * math.hypot(e[0, 0], e[1, 1]) for _, e in gs])
    return x, cross, same, ecross, esame


def classify(manifest: dict[str, Any]) -> str:
    """'witness', 'phase_sweep', 'delay_sweep', 'pump_probe', 'parametric' or 'sweep'."""
    seq = manifest.get("sequence_raw") or {}
    if manifest.get("experiment") == "parametric":
        return "parametric"
    params = manifest.get("sweep_parameters") or []
    if not params:
        return "witness"
    ser = seq.get("serrodyne") or {}
    p = params[0]
    if isinstance(ser, dict) and str(ser.get("phase_offset", "")).strip() == p:
        return "phase_sweep"
    if not ser:
        return "pump_probe"
    reads = [q for q in seq.get("pulses") or [] if isinstance(q, dict) and (q.get("kind") == "read" or str(q.get("name", "")).startswith("read"))]
    if any(p in str(q.get("start", "")) for q in reads):
        return "delay_sweep"
    return "sweep"


def plot_witness(total: dict[str, Any], out: Path, title: str) -> Path:
    from .analysis.witness import witness_densities

    plt = _plt()
    dens = witness_densities(Counts(int(total["trials"]), list(total["pump"]), list(total["read"]),
                                    [list(r) for r in total["coincidences"]]))
    fig, ax = plt.subplots(figsize=(7, 4))
    curves = [("R_m (herald 1)", (dens.get("Rm") or [None, None])[0], 1),
              ("R_m (herald 2)", (dens.get("Rm") or [None, None])[1], 1),
              ("R_m,sym", dens.get("Rm_sym"), 2)]
    for label, d, lw in curves:
        if not d:
            continue
        grid, pdf = np.asarray(d["grid"]), np.asarray(d["density"])
        line, = ax.plot(grid, pdf, label=label, lw=lw)
        if d.get("value") is not None and d.get("lower") is not None:
            band = (grid >= d["lower"]) & (grid <= d["upper"])
            ax.fill_between(grid[band], pdf[band], alpha=0.15, color=line.get_color())
    ax.axvline(1.0, color="k", ls="--", lw=1, label="separability bound 1")
    ax.axvline(0.995, color="grey", ls=":", lw=1, label="with systematics 0.995")
    grids = [np.asarray(d["grid"]) for _, d, _ in curves if d]
    hi = max([2.5] + [float(g[-1]) for g in grids if g.size])
    lo = min([0.0] + [float(g[0]) for g in grids if g.size])
    ax.set_xlim(lo, min(hi, 25.0))
    return _finish(fig, ax, out, title, "entanglement witness R_m", "probability density")


def plot_phase_sweep(points: Sequence[dict[str, Any]], out: Path, title: str) -> Path:
    plt = _plt()
    x, cross, same, ecross, esame = _swept(points)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.errorbar(x / np.pi, cross, ecross, fmt="x", color="C0", label="g2(r_i, p_j), i ≠ j")
    ax.errorbar(x / np.pi, same, esame, fmt="o", mfc="none", color="C3", label="g2(r_i, p_i)")
    if len(x) >= 4:
        for y, c in ((cross, "C0"), (same, "C3")):
            xs, ys = _sine_fit(x, y, 2 * np.pi)
            ax.plot(xs / np.pi, ys, color=c, lw=1)
    return _finish(fig, ax, out, title, "phase offset Δφ (π)", "second-order coherence g2")


def plot_delay_sweep(points: Sequence[dict[str, Any]], out: Path, title: str, period_s: float = 2 * np.pi / (2 * np.pi * 45e6)) -> Path:
    plt = _plt()
    x, cross, same, _, _ = _swept(points)
    o = np.argsort(x)
    x, cross, same = x[o], cross[o], same[o]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(x * 1e6, cross, "x", color="C0", label="g2(r_i, p_j), i ≠ j")
    ax.plot(x * 1e6, same, "o", mfc="none", color="C3", label="g2(r_i, p_i)")
    # clusters of delays (fringes sampled around each delay): visibility per cluster
    clusters, cur = [], [0]
    for i in range(1, len(x)):
        if x[i] - x[i - 1] > 3 * period_s:
            clusters.append(cur)
            cur = []
        cur.append(i)
    clusters.append(cur)
    vis_t, vis = [], []
    for cl in clusters:
        vals = np.concatenate([cross[cl], same[cl]])
        vals = vals[np.isfinite(vals)]
        if vals.size >= 2 and (vals.max() + vals.min()) > 0:
            vis_t.append(float(np.mean(x[cl])))
            vis.append(float((vals.max() - vals.min()) / (vals.max() + vals.min())))
    if vis:
        ins = ax.inset_axes([0.45, 0.45, 0.3, 0.4])
        ins.plot(np.array(vis_t) * 1e6, vis, "s-", color="C2")
        ins.set_xlabel("τ (µs)", fontsize=7)
        ins.set_ylabel("visibility", fontsize=7)
        ins.tick_params(labelsize=7)
    return _finish(fig, ax, out, title, "read delay τ (µs)", "second-order coherence g2", "upper right")


def plot_pump_probe(points: Sequence[dict[str, Any]], out: Path, title: str) -> Path:
    plt = _plt()
    from scipy.optimize import curve_fit

    x = np.array([float(list(p["parameters"].values())[0]) for p in points])
    rate = np.array([sum(p["counts"]["read"]) / max(p["counts"]["trials"], 1) for p in points])
    err = np.array([math.sqrt(max(sum(p["counts"]["read"]), 1)) / max(p["counts"]["trials"], 1) for p in points])
    o = np.argsort(x)
    x, rate, err = x[o], rate[o], err[o]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.errorbar(x * 1e6, rate, err, fmt="o", label="probe click probability per trial")
    if len(x) >= 5:
        def model(t, a, b, G, g, n):  # Supplementary pump-probe: d(t) = a e^{-Γt} - b e^{-γt} + n_final
            return a * np.exp(-G * t) - b * np.exp(-g * t) + n
        try:
            p0 = (rate.max() - rate.min() + 1e-12, rate.max() - rate.min() + 1e-12, 1 / 4e-6, 1 / 0.5e-6, rate.min())
            popt, _ = curve_fit(model, x, rate, p0=p0, sigma=err, maxfev=20000)
            xs = np.linspace(0, x.max(), 400)
            ax.plot(xs * 1e6, model(xs, *popt), "-", label=f"fit: 1/Γ = {1e6 / popt[2]:.2f} µs, 1/γ = {1e6 / popt[3]:.2f} µs")
        except (RuntimeError, ValueError):
            pass
    return _finish(fig, ax, out, title, "probe delay τ (µs)", "probe rate")


def plot_counts(points: Sequence[dict[str, Any]], out: Path, title: str) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    idx = np.arange(1, len(points) + 1)
    for k, lab in (("pump", "herald"), ("read", "read")):
        for d in range(2):
            ax.plot(idx, [p["counts"][k][d] / max(p["counts"]["trials"], 1) for p in points], "o-",
                    label=f"{lab} detector {d + 1}")
    ax.set_yscale("log")
    return _finish(fig, ax, out, title, "sweep point", "clicks per trial")


def draw_all(folder: Path, manifest: dict[str, Any], points: Sequence[dict[str, Any]], total: dict[str, Any]) -> list[str]:
    """Every plot that fits the run; returns the PNG paths."""
    folder = Path(folder)
    name = manifest.get("sequence_name", "run")
    kind = classify(manifest)
    out: list[str] = []
    have = [p for p in points if p["counts"]["trials"] > 0]
    if not have:
        return out
    if kind != "parametric":
        out.append(str(plot_witness(total, folder / "witness_density.png", f"{name}: witness probability densities")))
        out.append(str(plot_counts(have, folder / "rates.png", f"{name}: click rates per point")))
    if kind == "phase_sweep" and len(have) >= 2:
        out.append(str(plot_phase_sweep(have, folder / "phase_sweep.png", f"{name}: g2 versus Δφ (Fig. 3)")))
    elif kind == "delay_sweep" and len(have) >= 2:
        out.append(str(plot_delay_sweep(have, folder / "delay_sweep.png", f"{name}: g2 versus delay (Fig. 4)")))
    elif kind == "pump_probe" and len(have) >= 2:
        out.append(str(plot_pump_probe(have, folder / "pump_probe.png", f"{name}: pump-probe (Fig. S3)")))
    return out
