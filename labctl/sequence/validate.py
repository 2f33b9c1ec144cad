"""Timing and physics checks of a resolved sequence (no station needed).

Each check reports the file line of the offending key and how to fix it. Per-point problems name
the sweep point. Checks:

- pulse durations > 0, pulses inside the period [0, period];
- no two pulses overlapping on one channel;
- channel roles known (without a station: ``KNOWN_ROLES``);
- each detection window covers its pulse (shifted by ``detection.delay``) and lies in the period;
- thermalisation: the dark time from the end of the last pulse to the first pulse of the next
  period is at least ``device.thermalization`` (default 7, Supplementary "Entanglement witness
  and systematic errors": "7x the mechanical decay time") times the longest mechanical decay time
  (``device.decay_times``, default the seed's 1/Γ_A = 4.0 µs, 1/Γ_B = 5.8 µs);
- the auxiliary lock pulse starts at least ``lock.min_gap`` (default 1 µs) after the end of every
  read pulse and lies outside every detection window (supplement, "Phase stabilization": the
  auxiliary pulse comes ~5 µs after the read pulse).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .. import units
from ..errors import InputError
from .expr import evaluate, require

if TYPE_CHECKING:
    from .model import Point, Sequence, _Collector

SEED_DECAY_TIMES = (4.0e-6, 5.8e-6)  #: 1/Γ_A, 1/Γ_B (supplement, pump-probe section)
SEED_THERMALIZATION = 7.0
DEFAULT_LOCK_GAP = 1e-6


def _fmt(t: float) -> str:
    return units.format_quantity(t, "s", digits=6)


def _where(seq: "Sequence", pt: "Point") -> str:
    if not pt.parameters:
        return ""
    ps = ", ".join(f"{k} = {_fmt_param(v)}" for k, v in pt.parameters.items())
    return f"at sweep point {pt.index + 1} of {len(seq.points)} ({ps}): "


def _fmt_param(v: float) -> str:
    return f"{v:.6g}"


def device_decay_times(seq: "Sequence", col: "_Collector") -> tuple[float, ...]:
    raw = seq.device.get("decay_times") if isinstance(seq.device, dict) else None
    if raw is None:
        return SEED_DECAY_TIMES
    if not isinstance(raw, list) or not raw:
        col.add(("device", "decay_times"), "decay_times must be a list of times (1/Γ of each device)",
                "e.g. decay_times: [4.0 us, 5.8 us]")
        return SEED_DECAY_TIMES
    out = []
    for i, r in enumerate(raw):
        try:
            t = require(evaluate(r), "s", f"device.decay_times[{i}]", r)
            if t <= 0:
                raise InputError(f"decay time {r!r} must be positive", fix="e.g. 4.0 us")
            out.append(t)
        except InputError as e:
            col.add_exc(("device", "decay_times", i), e)
    return tuple(out) or SEED_DECAY_TIMES


def check_sequence(seq: "Sequence", col: "_Collector") -> None:
    """Run every station-free check on every sweep point."""
    if not isinstance(seq.device, dict):
        col.add(("device",), "'device' must be a mapping", "e.g. device: {decay_times: [4.0 us, 5.8 us]}")
        seq.device = {}
    decay = device_decay_times(seq, col)
    factor = SEED_THERMALIZATION
    if "thermalization" in seq.device:
        f = seq.device["thermalization"]
        if isinstance(f, bool) or not isinstance(f, (int, float)) or f < 0:
            col.add(("device", "thermalization"), "thermalization is a number of decay times (≥ 0)",
                    "e.g. thermalization: 7")
        else:
            factor = float(f)
    delay = 0.0
    det = seq.raw.get("detection") or {}
    if det and not isinstance(det, dict):
        col.add(("detection",), "'detection' must be a mapping", "e.g. detection: {delay: 0 ns}")
        det = {}
    if det.get("delay") is not None:
        try:
            delay = require(evaluate(det["delay"]), "s", "detection.delay", det["delay"])
        except InputError as e:
            col.add_exc(("detection", "delay"), e)
    seq.detection_delay = delay
    gap = DEFAULT_LOCK_GAP
    if isinstance(seq.lock, dict) and seq.lock.get("min_gap") is not None:
        try:
            gap = require(evaluate(seq.lock["min_gap"]), "s", "lock.min_gap", seq.lock["min_gap"])
        except InputError as e:
            col.add_exc(("lock", "min_gap"), e)
    index = {p.get("name"): i for i, p in enumerate(seq.raw.get("pulses") or []) if isinstance(p, dict)}
    windex = {w.get("name"): i for i, w in enumerate(seq.raw.get("windows") or []) if isinstance(w, dict)}
    T = seq.period
    for p in (seq.raw.get("pulses") or []):
        if isinstance(p, dict) and isinstance(p.get("channel"), str) and p["channel"] not in KNOWN_ROLES_ALL():
            i = index[p.get("name")]
            col.add(("pulses", i, "channel"), f"unknown channel role '{p['channel']}'",
                    "roles: " + ", ".join(KNOWN_ROLES_ALL()) + " (or validate with --config to use the station's)")
    for pt in seq.points:
        where = _where(seq, pt)
        n_before = len(col.errors)
        for p in pt.pulses:
            i = index[p.name]
            if p.duration <= 0:
                col.add(("pulses", i, "duration"), f"{where}pulse '{p.name}' has duration {_fmt(p.duration)}",
                        "a pulse needs a positive duration")
            if p.start < 0:
                col.add(("pulses", i, "start"), f"{where}pulse '{p.name}' starts at {_fmt(p.start)}, before the period starts",
                        "start times are measured from the start of the period and must be ≥ 0")
            if p.end > T * (1 + 1e-12):
                col.add(("pulses", i, "start"), f"{where}pulse '{p.name}' ends at {_fmt(p.end)}, outside the period of {_fmt(T)}",
                        "move it earlier, shorten it, or lengthen the period")
            if p.probability is not None and not (0 <= p.probability <= 1):
                col.add(("pulses", i, "probability"), f"{where}pulse '{p.name}' probability {p.probability:g} is not in [0, 1]",
                        "give a probability such as 0.7 %")
        by_channel: dict[str, list] = {}
        for p in pt.pulses:
            by_channel.setdefault(p.channel, []).append(p)
        check_overlaps(seq, pt, by_channel, col, index, where)
        for w in pt.windows:
            wi = windex[w.name]
            pulse = next((p for p in pt.pulses if p.name == w.covers), None)
            if w.duration <= 0:
                col.add(("windows", wi, "duration"), f"{where}window '{w.name}' has duration {_fmt(w.duration)}",
                        "a window needs a positive duration")
                continue
            if pulse is not None:
                a, b = pulse.start + delay, pulse.end + delay
                if w.start > a + 1e-15 or w.end < b - 1e-15:
                    col.add(("windows", wi), f"{where}window '{w.name}' [{_fmt(w.start)}, {_fmt(w.end)}] does not cover "
                            f"pulse '{pulse.name}' [{_fmt(a)}, {_fmt(b)}]" + (f" (with detection delay {_fmt(delay)})" if delay else ""),
                            f"start the window at or before {_fmt(a)} and end it at or after {_fmt(b)}")
            if w.start < 0 or w.end > T:
                col.add(("windows", wi), f"{where}window '{w.name}' [{_fmt(w.start)}, {_fmt(w.end)}] is not inside the period",
                        "windows are measured from the start of the period (the tagger's sync)")
        ws = sorted(pt.windows, key=lambda w: w.start)
        for a, b in zip(ws, ws[1:]):
            if b.start < a.end and set(a.detectors) & set(b.detectors):
                col.add(("windows", windex[b.name], "start"),
                        f"{where}windows '{a.name}' and '{b.name}' overlap on the same detectors; a click would count in both",
                        f"start '{b.name}' at {_fmt(a.end)} or later")
        if pt.pulses and T > 0:
            first = min(p.start for p in pt.pulses)
            last = max(p.end for p in pt.pulses)
            dark = T - last + first
            need = factor * max(decay)
            if dark < need * (1 - 1e-12):
                col.add(("period",), f"{where}the devices rest only {_fmt(dark)} between the last pulse (ends {_fmt(last)}) "
                        f"and the next period's first pulse; thermalisation needs {factor:g} × {_fmt(max(decay))} = {_fmt(need)}",
                        f"lengthen the period to at least {_fmt(last - first + need)} or move the pulses")
        reads = [p for p in pt.pulses if p.kind == "read"]
        for aux in (p for p in pt.pulses if p.kind == "aux"):
            for r in reads:
                if aux.start >= r.start and aux.start - r.end < gap:
                    col.add(("pulses", index[aux.name], "start"),
                            f"{where}lock pulse '{aux.name}' starts {_fmt(aux.start - r.end)} after read pulse '{r.name}' ends; "
                            f"the minimum is {_fmt(gap)}",
                            f"start it at {_fmt(r.end + gap)} or later (the seed uses ~5 us)")
            for w in pt.windows:
                if aux.start + delay < w.end and aux.end + delay > w.start:
                    col.add(("pulses", index[aux.name], "start"),
                            f"{where}lock pulse '{aux.name}' falls in detection window '{w.name}'",
                            "move the lock pulse out of the detection windows")
        if len(col.errors) > n_before:
            break  # one failing point is enough to show the mistake


def check_overlaps(seq: "Sequence", pt: "Point", groups: dict[str, list], col: "_Collector",
                   index: dict, where: str) -> None:
    for key, ps in groups.items():
        ps = sorted(ps, key=lambda p: p.start)
        for a, b in zip(ps, ps[1:]):
            if b.start < a.end - 1e-15:
                col.add(("pulses", index[b.name], "start"),
                        f"{where}pulse '{b.name}' ({_fmt(b.start)}–{_fmt(b.end)}) overlaps pulse '{a.name}' "
                        f"({_fmt(a.start)}–{_fmt(a.end)}) on {key}",
                        f"start '{b.name}' at {_fmt(a.end)} or later, or put it on another channel")


def KNOWN_ROLES_ALL() -> tuple[str, ...]:
    from .model import KNOWN_ROLES

    return KNOWN_ROLES


def check_against_station(seq: "Sequence", cfg) -> None:
    """Checks that need the station file: every channel role is mapped, and pulses on roles that
    share one physical output do not overlap. Instrument limits are checked by compilation."""
    from .model import _Collector

    col = _Collector(seq.doc)
    channels = cfg.model.channels
    index = {p.get("name"): i for i, p in enumerate(seq.raw.get("pulses") or []) if isinstance(p, dict)}
    for p in seq.raw.get("pulses") or []:
        if isinstance(p, dict) and p.get("channel") not in channels:
            col.add(("pulses", index[p.get("name")], "channel"),
                    f"channel role '{p.get('channel')}' is not mapped in the station {cfg.path}",
                    "roles of this station: " + ", ".join(channels))
    col.raise_if_any()
    for pt in seq.points:
        groups: dict[str, list] = {}
        for p in pt.pulses:
            ch = channels[p.channel]
            key = f"{ch.instrument} output {ch.output}" if ch.output is not None else ch.instrument
            groups.setdefault(key, []).append(p)
        n = len(col.errors)
        check_overlaps(seq, pt, groups, col, index, _where(seq, pt))
        if len(col.errors) > n:
            break
    col.raise_if_any()
