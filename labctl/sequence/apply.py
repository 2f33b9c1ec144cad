"""Write compiled programs to instruments through their drivers' role methods.

The same functions configure the lab's instruments, the simulated ones (``--sim``, and the
compile-time check), and emulated ones; drivers validate every value before their first write.
Outputs are configured here but switched on only by ``enable_outputs`` when acquisition starts.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .. import serrodyne as srd
from ..errors import InputError


def apply_program(inst: Any, prog: dict[str, Any]) -> None:
    """Configure ``inst`` for one program (see ``labctl.sequence.compile``)."""
    role = prog.get("role")
    if role == "pulse_generator":
        _apply_pulse_generator(inst, prog)
    elif role == "waveform_generator":
        _apply_waveform_generator(inst, prog)
    elif role == "time_tagger":
        configure = getattr(inst, "configure_program", None)
        if configure is not None:
            configure(prog)
    else:
        raise InputError(f"no way to apply a program of role {role!r} to {getattr(inst, 'name', inst)}",
                         fix="this is a labctl bug: report it with the sequence file")


def _apply_pulse_generator(inst: Any, prog: dict[str, Any]) -> None:
    period = prog["trigger"]["period"]
    for out_s, o in prog["outputs"].items():
        out = int(out_s)
        if o["mode"] == "pulse":
            inst.configure_pulse(out, period_s=o["period"], width_s=o["width"], delay_s=o["delay"],
                                 high_v=o["high"], low_v=o["low"], edge_s=o.get("edge"))
        else:
            from .compile import arbitrary_samples

            x = arbitrary_samples(o)
            inst.upload_arbitrary(2.0 * x - 1.0, o["user_slot"])
            ch = inst.channel(out)
            ch.shape = f"user{o['user_slot']}"
            ch.frequency = 1.0 / o["record_length"]
            ch.high = o["high"]
            ch.low = o["low"]
        inst.configure_burst(out, cycles=o.get("burst_cycles", 1), mode="triggered", source="timer",
                             timer_s=period, delay_s=o["delay"] if o["mode"] == "arbitrary" else None)


def _apply_waveform_generator(inst: Any, prog: dict[str, Any]) -> None:
    out = int(prog.get("output") or 1)
    if prog.get("mode") == "continuous_sine":
        seg = prog["segments"][0]
        n, p = int(seg["segment_length"]), int(seg["periods_per_segment"])
        wave = prog["offset"] + 0.5 * prog["amplitude"] * np.sin(2 * np.pi * p * np.arange(n) / n)
        inst.set_sample_rate(prog["sample_rate"], output=out)
        inst.upload_segment(int(seg["segment"]), wave, amplitude_vpp=prog["amplitude"], offset_v=prog["offset"],
                            output=out)
        inst.channel(out).mode = "user"
        return
    rate = prog["sample_rate"]
    amp, off = prog["amplitude"], prog["offset"]
    inst.set_sample_rate(rate, output=out) if _takes_output(inst.set_sample_rate) else inst.set_sample_rate(rate)
    for seg in prog["segments"]:
        plan = srd.SegmentPlan(shift_hz=seg["shift_frequency"], sample_rate=int(seg["sample_rate"]),
                               segment_length=int(seg["segment_length"]),
                               periods_per_segment=int(seg["periods_per_segment"]),
                               realised_shift=seg["shift_frequency"], error_hz=0.0, exact=True)
        if seg["shift_frequency"] == 0.0:
            wave = np.full(plan.segment_length, off)
        else:
            wave = srd.sawtooth(plan, amplitude_vpp=amp, offset_v=off, phase_rad=float(seg.get("phase", 0.0)))
        inst.upload_segment(int(seg["segment"]), wave, amplitude_vpp=amp, offset_v=off, output=out)
    inst.define_sequence([{"segment": s["segment"], "loops": s["loops"]} for s in prog["sequence"]],
                         output=out)
    # one pass of the table per trigger from the pulse generator, in step with the pulses
    ch = inst.channel(out)
    ch.continuous = False
    ch.trigger_source = "external"


def _takes_output(fn: Any) -> bool:
    import inspect

    try:
        return "output" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def enable_outputs(inst: Any, prog: dict[str, Any], on: bool = True) -> None:
    """Switch the outputs a program uses on (or off)."""
    role = prog.get("role")
    if role == "pulse_generator":
        for out_s in prog["outputs"]:
            inst.set_output(int(out_s), on)
    elif role == "waveform_generator":
        inst.set_output(int(prog.get("output") or 1), on)
