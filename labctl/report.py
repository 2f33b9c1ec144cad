"""The run report (``report.json``) and the terminal summary, from per-point counts.

Keys (docs/interfaces.md): ``sequence``, ``trials``, ``points`` (``parameters``, ``counts``,
``g2``, ``Rm``), ``witness`` (the ``labctl witness`` output over all points summed), ``lock``
(``rms_error`` rad, ``locked_fraction``), ``faults`` (each fault met and how it was handled),
``files``. Computed from counts alone, so ``labctl analyze`` reproduces it from ``run.h5``.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from .analysis.counts import Counts
from .analysis.witness import analyze_counts


def _counts(c: dict[str, Any]) -> Counts:
    return Counts(int(c["trials"]), list(c["pump"]), list(c["read"]), [list(r) for r in c["coincidences"]])


def sum_counts(counts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    tot = {"trials": 0, "pump": [0, 0], "read": [0, 0], "coincidences": [[0, 0], [0, 0]]}
    for c in counts:
        tot["trials"] += int(c["trials"])
        for k in ("pump", "read"):
            tot[k] = [a + int(b) for a, b in zip(tot[k], c[k])]
        tot["coincidences"] = [[a + int(b) for a, b in zip(ra, rb)] for ra, rb in zip(tot["coincidences"], c["coincidences"])]
    return tot


def _analysis(c: dict[str, Any]) -> dict[str, Any] | None:
    if int(c["trials"]) <= 0:
        return None
    return analyze_counts(_counts(c))


def build_report(*, sequence: str, experiment: str, points: Sequence[dict[str, Any]], lock: dict[str, Any],
                 faults: Sequence[dict[str, Any]], files: dict[str, Any], status: str,
                 extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """``points``: [{"parameters": {...}, "counts": {...}, "complete": bool}, ...]."""
    out_points = []
    for p in points:
        a = _analysis(p["counts"])
        out_points.append({"parameters": p["parameters"], "counts": p["counts"], "complete": bool(p.get("complete", True)),
                           "g2": a["g2"] if a else None, "Rm": a["Rm"] if a else None,
                           "paused_s": float(p.get("paused_s", 0.0))})
    total = sum_counts([p["counts"] for p in points])
    witness = _analysis(total)
    rep = {"sequence": sequence, "experiment": experiment, "status": status, "trials": int(total["trials"]),
           "points": out_points, "witness": witness, "lock": lock, "faults": list(faults), "files": files}
    if extra:
        rep.update(extra)
    return rep


def lock_summary(blocks_lock: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Combine per-block lock telemetry into ``rms_error`` (rad) and ``locked_fraction``."""
    rms = [(b.get("rms_error"), b.get("cycles", 1)) for b in blocks_lock if b.get("rms_error") is not None]
    fr = [(b.get("locked_fraction"), b.get("cycles", 1)) for b in blocks_lock if b.get("locked_fraction") is not None]
    if not rms:
        return {"rms_error": None, "locked_fraction": None, "note": "no phase lock in this run"}
    w = np.array([c for _, c in rms], dtype=float)
    r = np.array([x for x, _ in rms], dtype=float)
    f = np.array([x for x, _ in fr], dtype=float)
    wf = np.array([c for _, c in fr], dtype=float)
    return {"rms_error": float(math.sqrt(np.sum(w * r ** 2) / np.sum(w))),
            "locked_fraction": float(np.sum(wf * f) / np.sum(wf)) if f.size else None,
            "blocks": len(rms), "jumps": int(sum(b.get("jumps", 0) for b in blocks_lock)),
            "relocks": int(sum(b.get("relocks", 0) for b in blocks_lock))}


def _fmt_interval(d: dict[str, Any] | None) -> str:
    if not d or d.get("value") is None:
        return "undefined"
    if d.get("lower") is None or d.get("upper") is None:
        return f"{d['value']:.3f}"
    if d["lower"] <= d["value"] <= d["upper"]:
        return f"{d['value']:.3f} (+{d['upper'] - d['value']:.3f} / -{d['value'] - d['lower']:.3f})"
    # very few counts: the most likely value can lie outside the 16-84 % interval
    return f"{d['value']:.3f} (68 % interval {d['lower']:.3f} to {d['upper']:.3f})"


def summary_text(rep: dict[str, Any]) -> str:
    """The human summary printed at the end of a run."""
    lines = [f"run of '{rep['sequence']}': {rep['status']}, {rep['trials']:.4g} trials in {len(rep['points'])} point(s)"]
    w = rep.get("witness")
    if w:
        g = w["g2"]
        lines.append(f"  g2 (read i, herald j): [[{g[0][0]:.3g}, {g[0][1]:.3g}], [{g[1][0]:.3g}, {g[1][1]:.3g}]]"
                     if all(x is not None for r in g for x in r) else "  g2: undefined (no clicks)")
        lines.append(f"  R_m(herald 1) = {_fmt_interval(w['Rm'][0])}, R_m(herald 2) = {_fmt_interval(w['Rm'][1])}")
        lines.append(f"  R_m,sym = {_fmt_interval(w['Rm_sym'])}")
        conf = w.get("confidence") or {}
        if conf.get("1.0") is not None:
            lines.append(f"  confidence R_m,sym < 1: {100 * conf['1.0']:.1f} %  (< 0.995: {100 * conf['0.995']:.1f} %)")
    par = (rep.get("parametric") or {}).get("S")
    if isinstance(par, dict) and par.get("S") is not None:
        lines.append(f"  separability S = {par['S']:.4f} ± {par.get('S_err', float('nan')):.4f} (ideal record), "
                     f"{par.get('S_lockin', float('nan')):.4f} ± {par.get('S_lockin_err', float('nan')):.4f} through the "
                     f"lock-in filters; entangled: {par.get('entangled')}")
    lk = rep.get("lock") or {}
    if lk.get("rms_error") is not None:
        lines.append(f"  phase lock: {lk['rms_error']:.3g} rad RMS, locked {100 * (lk.get('locked_fraction') or 0):.1f} % "
                     f"of the time, {lk.get('jumps', 0)} range jumps, {lk.get('relocks', 0)} re-locks")
    every = rep.get("faults") or []
    faults = [f for f in every if f.get("injected") is not False]
    planned = [f for f in every if f.get("injected") is False]
    if faults:
        lines.append(f"  faults met: {len(faults)}")
        for f in faults[:10]:
            lines.append(f"    - {f.get('kind')}: {f.get('instrument', '')} — {f.get('handling', '')}")
        if len(faults) > 10:
            lines.append(f"    … and {len(faults) - 10} more (report.json)")
    else:
        lines.append("  faults met: none")
    if planned:
        lines.append(f"  planned faults never triggered: {len(planned)}")
        for f in planned[:10]:
            where = f" (plan line {f['line']})" if f.get("line") else ""
            lines.append(f"    - {f.get('message', f.get('kind'))}{where}")
    files = rep.get("files") or {}
    if files:
        lines.append(f"  run file: {files.get('run_file')}")
        lines.append(f"  report:   {files.get('report')}")
        for p in files.get("plots", []):
            lines.append(f"  plot:     {p}")
    return "\n".join(lines)
