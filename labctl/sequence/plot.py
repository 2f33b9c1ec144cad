"""Timing diagrams of a sequence: a PNG (matplotlib) and a text view for the terminal.

Rows: one per channel role, the serrodyne gate, and the detection windows. The PNG has two panels:
the whole period, and a zoom on the pulses that are close together (pump, read, windows).
"""
from __future__ import annotations

from pathlib import Path

from .. import units
from .model import Point, Sequence

COLORS = {"pump": "#1f77b4", "read": "#d62728", "aux": "#2ca02c", "drive": "#9467bd", "other": "#7f7f7f"}


def _rows(seq: Sequence, pt: Point) -> list[tuple[str, list[tuple[float, float, str, str]]]]:
    """(row label, [(start, end, label, colour key)]) for a point."""
    rows: dict[str, list] = {}
    for p in pt.pulses:
        rows.setdefault(p.channel, []).append((p.start, p.end, p.name, p.kind))
    ser = seq.serrodyne if isinstance(seq.serrodyne, dict) else None
    if ser:
        names = ser.get("pulses") or [p.name for p in pt.pulses if p.kind in ("pump", "read")]
        gate = [(p.start, p.end, f"{p.name} shift", p.kind) for p in pt.pulses if p.name in names]
        if gate:
            rows[f"serrodyne ({ser.get('channel', 'eom')})"] = gate
    for w in pt.windows:
        rows.setdefault("detection windows", []).append((w.start, w.end, w.name, "window"))
    return list(rows.items())


def plot_sequence(seq: Sequence, out: str | Path, point: int = 0) -> Path:
    """Write the timing diagram of sweep point ``point`` to ``out`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pt = seq.points[point]
    rows = _rows(seq, pt)
    fig, axes = plt.subplots(1, 2, figsize=(13, 1.2 + 0.55 * len(rows)), gridspec_kw={"width_ratios": [2, 1.3]})
    pts = sorted(pt.pulses, key=lambda p: p.start)
    close = [p for p in pts if p.kind in ("pump", "read")] or pts[:2]
    z0 = min([p.start for p in close] + [w.start for w in pt.windows]) if close else 0.0
    z1 = max([p.end for p in close] + [w.end for w in pt.windows]) if close else seq.period
    pad = 0.15 * (z1 - z0 or seq.period)
    for ax, (x0, x1), title in ((axes[0], (0.0, seq.period), "whole period"),
                                (axes[1], (z0 - pad, z1 + pad), "zoom on pump and read")):
        scale, unit = (1e6, "µs") if x1 - x0 > 2e-6 else (1e9, "ns")
        for i, (label, spans) in enumerate(rows):
            y = len(rows) - 1 - i
            last_label = -1e9
            for a, b, name, kind in sorted(spans):
                if kind == "window":
                    ax.barh(y, (b - a) * scale, left=a * scale, height=0.6, color="#ffdd88", edgecolor="#aa8800",
                            hatch="//", alpha=0.8)
                else:
                    ax.barh(y, max((b - a) * scale, (x1 - x0) * scale * 0.003), left=a * scale, height=0.6,
                            color=COLORS.get(kind, "#7f7f7f"))
                if x0 <= a <= x1 and (a - last_label) > 0.04 * (x1 - x0):  # no overlapping labels
                    ax.text(a * scale, y + 0.36, name, fontsize=7, va="bottom")
                    last_label = a
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels([r[0] for r in reversed(rows)], fontsize=8)
        ax.set_xlim(x0 * scale, x1 * scale)
        ax.set_ylim(-0.6, len(rows) - 0.1 + 0.4)
        ax.set_xlabel(f"time in period ({unit})")
        ax.set_title(title, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    params = ", ".join(f"{k} = {v:.4g}" for k, v in pt.parameters.items())
    fig.suptitle(f"{seq.name}: period {units.format_quantity(seq.period, 's')}"
                 + (f" — point {point + 1}/{len(seq.points)} ({params})" if params else ""), fontsize=10)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def text_timeline(seq: Sequence, point: int = 0, width: int = 72) -> str:
    """A terminal view: one line per row, the period scaled to ``width`` characters, plus a table."""
    pt = seq.points[point]
    rows = _rows(seq, pt)
    label_w = max(len(r[0]) for r in rows) if rows else 8
    T = seq.period
    lines = [f"{seq.name}: period {units.format_quantity(T, 's')}, {len(seq.points)} sweep point(s)"]
    for label, spans in rows:
        cells = [" "] * width
        for a, b, name, kind in spans:
            i0 = min(width - 1, max(0, int(a / T * width)))
            i1 = min(width - 1, max(i0, int(b / T * width)))
            ch = {"window": "░", "pump": "P", "read": "R", "aux": "A"}.get(kind, "█")
            for i in range(i0, i1 + 1):
                cells[i] = ch
        lines.append(f"{label.rjust(label_w)} |{''.join(cells)}|")
    lines.append(" " * label_w + f"  0{' ' * (width - 2 - len(units.format_quantity(T, 's')))}{units.format_quantity(T, 's')}")
    lines.append("")
    for p in pt.pulses:
        extra = []
        if p.probability is not None:
            extra.append(f"p = {p.probability * 100:.3g} %")
        if p.amplitude is not None:
            extra.append(f"{p.amplitude:g} V")
        lines.append(f"  {p.name:<8} {p.channel:<12} {units.format_quantity(p.start, 's'):>12} → "
                     f"{units.format_quantity(p.end, 's'):>12}  ({units.format_quantity(p.duration, 's')})"
                     + (f"  {', '.join(extra)}" if extra else ""))
    for w in pt.windows:
        lines.append(f"  window {w.name:<8} covers {w.covers:<6} {units.format_quantity(w.start, 's'):>12} → "
                     f"{units.format_quantity(w.end, 's'):>12}")
    return "\n".join(lines)
