"""Compile a sequence and a station into per-instrument programs.

A program is plain data (JSON-printable) that ``labctl.sequence.apply`` writes to an instrument
through its driver's role methods. ``compile_sequence`` builds one set of programs per sweep
point; ``CompiledSequence.as_json()`` gives the form ``labctl compile --json`` prints: an object
keyed by instrument name holding the first point's program and, for sweeps, the settings that
change from point to point.

Programs by role (see ``docs/sequences.md``):

- pulse generator (AOM gates): per output, ``mode: pulse`` (one pulse per period: width, delay,
  levels) or ``mode: arbitrary`` (several pulses on one output, e.g. read and lock pulse on the
  read AOM: a 1 GSa/s waveform played once per trigger); the generator's internal timer
  triggers every period and is the experiment's master clock (20 kHz for 50 µs).
- waveform generator (serrodyne EOM drive): exact sawtooth segments for each shifted pulse
  (``labctl.serrodyne``), a DC segment, and a sequence table placing the ramps around their
  pulses; amplitude from Vπ and the amplifier gain, offset from Δφ.
- time tagger: mode, sync divider, detection windows.

With ``check=True`` every program is also applied to the simulated instruments, so the drivers'
own limits and the instruments' own rules are enforced — before anything reaches hardware.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .. import serrodyne as srd
from .. import units
from ..config import StationConfig
from ..errors import InputError, InstrumentError
from .model import Point, Pulse, Sequence

AFG_ARB_RATE = 1e9          #: AFG3152C arbitrary sample rate for short records (1 GSa/s)
AFG_ARB_MAX_POINTS = 16384  #: longest record played at 1 GSa/s
AWG_MAX_RATE = 4.2e9


@dataclass
class CompiledSequence:
    """Per-point programs: ``points[k][instrument] -> program``."""

    sequence: Sequence
    points: list[dict[str, dict[str, Any]]]
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        if not self.points:
            return {}
        first = self.points[0]
        out: dict[str, Any] = {}
        for name, prog in first.items():
            entry = dict(prog)
            if len(self.points) > 1:
                changes = []
                for k, pt in enumerate(self.points[1:], start=1):
                    diff = {key: val for key, val in pt[name].items() if prog.get(key) != val}
                    changes.append({"point": k + 1, "parameters": self.sequence.points[k].parameters,
                                    "changes": diff})
                entry["sweep"] = changes
            out[name] = entry
        return out


def _err(seq: Sequence, path: tuple, what: str, fix: str) -> InputError:
    return InputError(what, file=seq.path, line=seq.doc.line(path), fix=fix)


def _pulse_index(seq: Sequence, name: str) -> int:
    for i, p in enumerate(seq.raw.get("pulses") or []):
        if isinstance(p, dict) and p.get("name") == name:
            return i
    return 0


# -- pulse levels ----------------------------------------------------------------------------------
def pulse_level(seq: Sequence, cfg: StationConfig, p: Pulse) -> float:
    """The drive level (V) of a pulse: its ``amplitude``, or from its ``probability`` through the
    station's AOM calibration p = p_ref·(V/V_ref)² (small-signal AOM: diffracted power ∝ RF power)."""
    if p.amplitude is not None:
        return p.amplitude
    cal = ((cfg.model.calibration or {}).get("aom") or {}).get(p.channel)
    i = _pulse_index(seq, p.name)
    if cal is None:
        raise _err(seq, ("pulses", i), f"pulse '{p.name}' gives no amplitude and the station has no AOM "
                   f"calibration for '{p.channel}'",
                   f"add 'amplitude: 0.5 V' to the pulse, or 'calibration: {{aom: {{{p.channel}: "
                   f"{{amplitude: 0.5 V, probability: 0.7 %}}}}}}' to {cfg.path}")
    try:
        v_ref = units.parse_as(cal["amplitude"], "V", where=f"calibration.aom.{p.channel}.amplitude")
        p_ref = units.parse_as(cal["probability"], "1", where=f"calibration.aom.{p.channel}.probability")
    except (KeyError, TypeError):
        raise InputError(f"calibration.aom.{p.channel} needs 'amplitude' and 'probability'",
                         file=cfg.path, line=cfg.doc.line(("calibration", "aom", p.channel)),
                         fix="e.g. {amplitude: 0.5 V, probability: 0.7 %}") from None
    if p.probability is None:
        return v_ref
    if p_ref <= 0 or v_ref <= 0:
        raise InputError(f"calibration.aom.{p.channel} must have positive amplitude and probability",
                         file=cfg.path, line=cfg.doc.line(("calibration", "aom", p.channel)),
                         fix="measure the scattering probability at a known drive level")
    return v_ref * math.sqrt(p.probability / p_ref)


# -- pulse generators ------------------------------------------------------------------------------
def _pulse_generator_program(seq: Sequence, cfg: StationConfig, pt: Point, inst: str,
                             outputs: dict[Any, list[Pulse]]) -> dict[str, Any]:
    T = seq.period
    prog: dict[str, Any] = {"role": "pulse_generator", "driver": cfg.instruments[inst].config.driver,
                            "trigger": {"source": "timer", "period": T, "rate": 1.0 / T},
                            "outputs": {}}
    for out, pulses in sorted(outputs.items(), key=lambda kv: str(kv[0])):
        pulses = sorted(pulses, key=lambda p: p.start)
        levels = [pulse_level(seq, cfg, p) for p in pulses]
        edge = next((p.edge for p in pulses if p.edge is not None), None)
        if len(pulses) == 1:
            p = pulses[0]
            prog["outputs"][str(out)] = {"mode": "pulse", "pulses": [p.name], "period": T, "width": p.duration,
                                         "delay": p.start, "high": levels[0], "low": 0.0, "edge": edge,
                                         "burst_cycles": 1}
            continue
        start = pulses[0].start
        span = pulses[-1].end - start
        n = int(math.ceil(span * AFG_ARB_RATE)) + 2
        if n > AFG_ARB_MAX_POINTS:
            i = _pulse_index(seq, pulses[-1].name)
            raise _err(seq, ("pulses", i, "start"),
                       f"pulses {', '.join(p.name for p in pulses)} share {inst} output {out} and span "
                       f"{units.format_quantity(span, 's')}; one arbitrary record at 1 GSa/s holds "
                       f"{units.format_quantity(AFG_ARB_MAX_POINTS / AFG_ARB_RATE, 's')}",
                       "move the pulses closer together or give one of them its own output")
        high = max(levels)
        if high <= 0:
            raise _err(seq, ("pulses", _pulse_index(seq, pulses[0].name)), "pulse levels must be positive",
                       "give positive amplitudes")
        segs = [{"name": p.name, "start": round((p.start - start) * AFG_ARB_RATE),
                 "stop": round((p.end - start) * AFG_ARB_RATE), "level": lvl / high}
                for p, lvl in zip(pulses, levels)]
        prog["outputs"][str(out)] = {"mode": "arbitrary", "pulses": [p.name for p in pulses], "period": T,
                                     "delay": start, "sample_rate": AFG_ARB_RATE, "points": n,
                                     "record_length": n / AFG_ARB_RATE, "high": high, "low": 0.0,
                                     "segments": segs, "user_slot": int(out) if str(out).isdigit() else 1,
                                     "burst_cycles": 1}
    return prog


def arbitrary_samples(program: dict[str, Any]):
    """The record (0..1, 1 = ``high``) of an ``arbitrary`` output program."""
    import numpy as np

    x = np.zeros(int(program["points"]))
    for s in program["segments"]:
        x[int(s["start"]):int(s["stop"])] = float(s["level"])
    return x


# -- serrodyne -------------------------------------------------------------------------------------
def _serrodyne_program(seq: Sequence, cfg: StationConfig, pt: Point, inst: str, output: Any) -> dict[str, Any]:
    ser = seq.serrodyne or {}
    try:
        dom = units.parse_as(ser.get("shift", seq.device.get("mechanical_splitting")), "Hz", where="serrodyne.shift")
    except InputError as e:
        raise _err(seq, ("serrodyne", "shift"), e.what, e.fix or "e.g. shift: 45 MHz") from None
    names = ser.get("pulses") or [p.name for p in pt.pulses if p.kind in ("pump", "read")]
    gates = []
    for name in names:
        p = next((q for q in pt.pulses if q.name == name), None)
        if p is None:
            raise _err(seq, ("serrodyne", "pulses"), f"serrodyne names unknown pulse '{name}'",
                       "list pulse names of this sequence")
        if p.shift is not None:
            f = p.shift
        elif p.kind in ("pump", "read"):
            f = srd.shift_for(p.kind, dom)
        else:
            raise _err(seq, ("pulses", _pulse_index(seq, name)), f"pulse '{name}' of kind '{p.kind}' needs "
                       "an explicit 'shift' to be serrodyned", "add 'shift: 45 MHz' (signed) to the pulse")
        gates.append((p, f))
    gates.sort(key=lambda g: g[0].start)
    # segments must end before the next shifted pulse starts: bound their length
    max_len = 16_000_000
    for (a, _), (b, _) in zip(gates, gates[1:]):
        room = b.start - a.start
        max_len = min(max_len, int(room * AWG_MAX_RATE) // 32 * 32)
    if max_len < 320:
        raise _err(seq, ("pulses", _pulse_index(seq, gates[1][0].name), "start"),
                   "serrodyne pulses are too close for the AWG's 320-point minimum segment",
                   f"keep shifted pulses at least {units.format_quantity(320 / AWG_MAX_RATE, 's')} apart")
    # The optical phase each ramp gives its pulse is referenced to the pulse's start: the EOM phase
    # there is dphi for read pulses (theta_r = phi0 + dphi, main text) and 0 for pump pulses, so
    # the heralded state's phase evolves as Delta Omega_m tau between them (a fringe every 22 ns,
    # Fig. 4) and dphi sets the read phase (Fig. 3). The offset is a shift of the sawtooth's start
    # phase: the AC-coupled amplifier (0.5-1000 MHz) passes no DC bias.
    def phase_at_pulse(p: Pulse) -> float:
        return float(pt.phase_offset) if p.kind == "read" else 0.0

    shifts = sorted({f for _, f in gates} | {0.0})
    try:
        plans = srd.plan_segments(shifts, max_length=max_len)
    except InputError as e:
        raise _err(seq, ("serrodyne",), e.what, e.fix or "") from None
    by_shift = {f: pl for f, pl in zip(shifts, plans)}
    rate = plans[0].sample_rate
    v_pi = cfg.quantity("eom", "v_pi_rf", "V")
    gain = cfg.quantity("amplifier", "gain", "dB")
    damage = units.parse_as(cfg.model.eom.max_rf_power, "W", where="eom.max_rf_power")
    p1db = None
    if cfg.model.amplifier and cfg.model.amplifier.max_output_power is not None:
        p1db = 10 * math.log10(units.parse_as(cfg.model.amplifier.max_output_power, "W") / 1e-3)
    try:
        drive = srd.drive_levels(v_pi, gain, damage_dbm=10 * math.log10(damage / 1e-3), amp_p1db_dbm=p1db)
    except InputError as e:
        raise _err(seq, ("serrodyne",), e.what, e.fix or "") from None
    amp = drive.awg_vpp
    offset = 0.0
    # sequence table: DC fillers (multiples of 32 points, >= 320) and ramps covering their pulses
    steps: list[dict[str, Any]] = []
    placed: list[dict[str, Any]] = []
    t = 0.0
    q = 32 / rate
    for p, f in gates:
        d = by_shift[f].segment_length / rate
        gap = p.start - t
        if gap >= 320 / rate:
            n = int(math.floor(gap / q + 1e-9)) * 32
            steps.append({"length": n, "loops": 1, "purpose": "idle"})
            t += n / rate
        s0 = t
        loops = max(1, int(math.ceil((p.end - s0) / d - 1e-9)))
        ph = (phase_at_pulse(p) - 2 * math.pi * f * (p.start - s0)) % (2 * math.pi)
        steps.append({"key": (f, round(ph, 12)), "loops": loops, "purpose": p.name})
        t = s0 + loops * d
        placed.append({"pulse": p.name, "shift_frequency": f, "ramp_start": s0, "ramp_end": t,
                       "pulse_start": p.start, "pulse_end": p.end, "phase_at_pulse": phase_at_pulse(p)})
    for g1, g2 in zip(placed, placed[1:]):
        if g1["ramp_end"] > g2["pulse_start"] + 1e-15:
            raise _err(seq, ("pulses", _pulse_index(seq, g2["pulse"]), "start"),
                       f"the serrodyne ramp for '{g1['pulse']}' runs until {units.format_quantity(g1['ramp_end'], 's')}, "
                       f"after '{g2['pulse']}' starts", "put the shifted pulses further apart")
    segments: list[dict[str, Any]] = []
    seg_of: dict[Any, int] = {}

    def add_segment(key: Any, plan: srd.SegmentPlan, length: int | None, phase: float, purpose: str) -> int:
        if key in seg_of:
            seg = segments[seg_of[key] - 1]
            if purpose not in seg["purpose"].split("+"):
                seg["purpose"] += "+" + purpose
            return seg_of[key]
        entry = srd.segment_entry(plan, amplitude_vpp=amp, offset_v=offset)
        if length is not None:
            entry["segment_length"] = length
        entry.update(segment=len(segments) + 1, phase=phase, purpose=purpose)
        segments.append(entry)
        seg_of[key] = entry["segment"]
        return entry["segment"]

    add_segment(("dc", by_shift[0.0].segment_length), by_shift[0.0], None, 0.0, "dc")
    for st in steps:
        if "key" in st:
            f, ph = st.pop("key")
            st["segment"] = add_segment((f, ph), by_shift[f], None, ph, st["purpose"])
        else:
            n = st.pop("length")
            st["segment"] = add_segment(("dc", n), by_shift[0.0], n, 0.0, "idle")
    spec = srd.optical_spectrum(by_shift[gates[0][1]], srd.sawtooth(by_shift[gates[0][1]], amplitude_vpp=amp,
                                                                     offset_v=0.0), v_pi=v_pi, gain_db=gain)
    return {"role": "waveform_generator", "driver": cfg.instruments[inst].config.driver, "output": output,
            "mode": "sequence", "sample_rate": rate, "amplitude": amp, "offset": offset,
            "phase_offset": float(pt.phase_offset), "eom_drive_vpp": drive.eom_vpp, "eom_power_dbm": drive.eom_power_dbm,
            "segments": segments, "sequence": steps, "gates": placed, "trigger": "external (pulse generator sync)",
            "spectrum": {"carrier_suppression_db": spec.carrier_suppression_db,
                         "spur_suppression_db": spec.spur_suppression_db, "efficiency": spec.efficiency}}


# -- time tagger -----------------------------------------------------------------------------------
def _tagger_program(seq: Sequence, cfg: StationConfig, pt: Point, inst: str) -> dict[str, Any]:
    tg = seq.tagger or {}
    mode = str(tg.get("mode", "T3")).upper()
    if mode not in ("T2", "T3"):
        raise _err(seq, ("tagger", "mode"), f"tagger mode {tg.get('mode')!r} is not T2 or T3", "use mode: T3")
    div = tg.get("sync_divider", 1)
    if div not in (1, 2, 4, 8):
        raise _err(seq, ("tagger", "sync_divider"), f"sync_divider {div!r} is not 1, 2, 4 or 8",
                   "with one trial per sync period use 1")
    binning = tg.get("binning", 0)
    if isinstance(binning, bool) or not isinstance(binning, int) or not 0 <= binning <= 15:
        raise _err(seq, ("tagger", "binning"), f"binning {binning!r} must be a whole number 0..15",
                   "0 is the finest resolution")
    return {"role": "time_tagger", "driver": cfg.instruments[inst].config.driver, "mode": mode,
            "sync_divider": div, "binning": binning, "sync_rate": 1.0 / seq.period,
            "windows": {w.name: {"start": w.start + 0.0, "stop": w.end, "covers": w.covers,
                                 "detectors": list(w.detectors)} for w in pt.windows},
            "detection_delay": seq.detection_delay}


# -- driver ----------------------------------------------------------------------------------------
def compile_point(seq: Sequence, cfg: StationConfig, pt: Point) -> dict[str, dict[str, Any]]:
    progs: dict[str, dict[str, Any]] = {}
    by_inst: dict[str, dict[Any, list[Pulse]]] = {}
    for p in pt.pulses:
        ch = cfg.channel(p.channel)
        roles = cfg.instruments[ch.instrument].config.roles()
        if "pulse_generator" in roles:
            by_inst.setdefault(ch.instrument, {}).setdefault(ch.output if ch.output is not None else 1, []).append(p)
        else:
            raise _err(seq, ("pulses", _pulse_index(seq, p.name), "channel"),
                       f"channel '{p.channel}' maps to '{ch.instrument}', which is not a pulse generator",
                       "map pulse channels to a pulse_generator instrument in the station")
    for inst, outputs in by_inst.items():
        progs[inst] = _pulse_generator_program(seq, cfg, pt, inst, outputs)
    if seq.serrodyne:
        ch = cfg.channel(seq.serrodyne.get("channel", "serrodyne"))
        if "waveform_generator" not in cfg.instruments[ch.instrument].config.roles():
            raise _err(seq, ("serrodyne", "channel"), f"serrodyne channel maps to '{ch.instrument}', "
                       "which is not a waveform generator", "map it to the AWG in the station")
        progs[ch.instrument] = _serrodyne_program(seq, cfg, pt, ch.instrument, ch.output or 1)
    for inst in cfg.instruments_with_role("time_tagger"):
        progs[inst] = _tagger_program(seq, cfg, pt, inst)
    return progs


def _parametric_point(seq: Sequence, cfg: StationConfig, pt: Point) -> dict[str, dict[str, Any]]:
    """The continuous parametric drive (Szorkovszky et al.: modulation at 2ω_d) on the channel's
    waveform generator: a sine segment holding a whole number of periods, played continuously."""
    from ..physics.estimation import parametric_settings

    try:
        ps = parametric_settings(seq)
    except (ValueError, KeyError, TypeError) as e:
        raise _err(seq, ("parametric",), f"parametric settings: {e}", "see docs/parametric-experiment.md") from None
    progs: dict[str, dict[str, Any]] = {}
    for p in pt.pulses:
        ch = cfg.channel(p.channel)
        if "waveform_generator" not in cfg.instruments[ch.instrument].config.roles():
            raise _err(seq, ("pulses", _pulse_index(seq, p.name), "channel"),
                       f"the parametric drive '{p.channel}' maps to '{ch.instrument}', not a waveform generator",
                       "map it to the AWG in the station")
        f = ps.drive_frequency
        if not f:
            raise _err(seq, ("parametric",), "the parametric drive needs mechanical_frequency and delta",
                       "add parametric.mechanical_frequency")
        plan = srd.plan_segment(f)
        amp = 2 * (p.amplitude if p.amplitude is not None else 0.1)
        progs[ch.instrument] = {"role": "waveform_generator", "driver": cfg.instruments[ch.instrument].config.driver,
                                "output": ch.output or 1, "mode": "continuous_sine", "frequency": plan.realised_shift,
                                "sample_rate": plan.sample_rate, "amplitude": amp, "offset": 0.0,
                                "segments": [{**srd.segment_entry(plan, amplitude_vpp=amp, offset_v=0.0),
                                              "segment": 1, "purpose": p.name, "waveform": "sine"}]}
    return progs


def compile_sequence(seq: Sequence, cfg: StationConfig, *, check: bool = True) -> CompiledSequence:
    """Programs for every sweep point; with ``check`` also applied to simulated instruments."""
    from .validate import check_against_station

    check_against_station(seq, cfg)
    if seq.experiment == "parametric":
        points = [_parametric_point(seq, cfg, pt) for pt in seq.points]
        compiled = CompiledSequence(seq, points)
        if check:
            check_on_simulators(compiled, cfg)
        return compiled
    points = [compile_point(seq, cfg, pt) for pt in seq.points]
    compiled = CompiledSequence(seq, points)
    if check:
        check_on_simulators(compiled, cfg)
    return compiled


def check_on_simulators(compiled: CompiledSequence, cfg: StationConfig) -> None:
    """Apply every distinct program to the simulated instruments; instrument limits and rules
    raise here, mapped to the sequence line of the pulse they come from."""
    from ..station import Station
    from .apply import apply_program

    names = sorted({n for pt in compiled.points for n in pt})
    seq = compiled.sequence
    with Station(cfg, sim=True).connect(names) as station:
        seen: set[str] = set()
        for k, pt in enumerate(compiled.points):
            for name, prog in pt.items():
                key = name + repr(sorted((kk, repr(vv)) for kk, vv in prog.items()))
                if key in seen:
                    continue
                seen.add(key)
                try:
                    apply_program(station[name], prog)
                except (InputError, InstrumentError) as e:
                    msg = e.what if isinstance(e, InputError) else str(e)
                    pulses = [p for o in prog.get("outputs", {}).values() for p in o.get("pulses", [])]
                    path = ("pulses", _pulse_index(seq, pulses[0])) if pulses else (
                        ("serrodyne",) if prog.get("role") == "waveform_generator" else ("tagger",))
                    where = f"at sweep point {k + 1}: " if len(compiled.points) > 1 else ""
                    raise _err(seq, path, f"{where}{name} ({prog['driver'].rsplit('.', 1)[-1]}) refuses the "
                               f"program: {msg}",
                               getattr(e, "fix", None) or "change the pulse so it fits the instrument's limits") from None
