"""Ready-made simulated set-ups for tests, benchmarks and acceptance checks.

:func:`witness_setup` builds the simulated station of ``configs/lab.yaml``, compiles a sequence,
applies a sweep point's programs through the drivers and switches the outputs on (what
``labctl run --sim`` does) and attaches the twin. :class:`SimpleLock` is a minimal fibre-stretcher
lock through the unchanged Red Pitaya and MDT694 drivers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Setup:
    """A simulated station with a compiled sequence and the twin attached."""

    station: Any
    compiled: Any
    twin: Any
    point: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def lab(self) -> Any:
        return self.station.lab

    def apply(self, k: int) -> None:
        """Program sweep point ``k`` (outputs on), as the runner does before a point."""
        apply_point(self.station, self.compiled.points[k])
        self.point = k

    def windows(self, k: int | None = None) -> tuple[tuple[float, float], tuple[float, float]]:
        """(herald, read) windows of a point's tagger program (s from the sync)."""
        pt = self.compiled.points[self.point if k is None else k]
        prog = next(p for p in pt.values() if p.get("role") == "time_tagger")
        kinds = {pl.name: pl.kind for pl in self.compiled.sequence.points[self.point if k is None else k].pulses}
        win = {kinds.get(w["covers"]): (w["start"], w["stop"]) for w in prog["windows"].values()}
        return win["pump"], win["read"]

    def close(self) -> None:
        self.station.close()


def apply_point(station: Any, programs: dict[str, dict[str, Any]]) -> None:
    """Apply one point's programs and switch the outputs on (what the runner does)."""
    from labctl.sequence.apply import apply_program, enable_outputs

    for name, prog in programs.items():
        apply_program(station[name], prog)
    for name, prog in programs.items():
        enable_outputs(station[name], prog)


def witness_setup(sequence: str | Path = "sequences/dlcz_witness.yaml", *, seed: int | None = 2018,
                  params: Any = None, point: int = 0, config: str | Path = "configs/lab.yaml",
                  attach: bool = True) -> Setup:
    """Station + compiled sequence + point applied + twin attached (see the module docstring)."""
    from labctl.config import load_station
    from labctl.sequence import load_sequence
    from labctl.sequence.compile import compile_sequence
    from labctl.station import Station

    from .twin import Twin

    cfg = load_station(REPO / config if not Path(config).is_absolute() else config)
    seq = load_sequence(REPO / sequence if not Path(sequence).is_absolute() else sequence)
    compiled = compile_sequence(seq, cfg, check=False)
    station = Station(cfg, sim=True, seed=seed).connect()
    twin = Twin.attach(station.lab, params=params if params is not None else (cfg.model.twin or None),
                       seed=seed) if attach else None
    s = Setup(station, compiled, twin)
    s.apply(point)
    return s


class SimpleLock:
    """An integrating fibre-stretcher lock through the drivers (for tests): reads the aux-pulse
    fringe with ``RedPitaya.acquire`` (external trigger), holds its mean at the offset measured
    before the pulse (quadrature), writes the stretcher with ``MDT694.set_voltage``."""

    def __init__(self, station: Any, aux_start: float, aux_stop: float, *, gain_v_per_v: float = 4.0,
                 redpitaya: str = "redpitaya", stretcher: str = "stretcher", start_v: float = 75.0) -> None:
        self.rp = station[redpitaya]
        self.md = station[stretcher]
        dt = 8e-9
        self.i0 = int(math.ceil(aux_start / dt)) + 1
        self.i1 = int(math.floor(aux_stop / dt)) - 1
        self.n = self.i1 + 8
        self.gain = gain_v_per_v
        self.v = start_v
        self.md.set_voltage(round(self.v, 1))
        self.errors: list[float] = []

    def cycle(self) -> float:
        tr = self.rp.acquire(self.n, 1, "EXT_PE")
        base = float(np.mean(tr[: max(8, self.i0 - 8)]))
        err = float(np.mean(tr[self.i0:self.i1])) - base
        lo, hi = self.md.voltage_range
        self.v = min(max(self.v - self.gain * err, lo + 5), hi - 5)
        self.md.set_voltage(round(self.v, 1))
        self.errors.append(err)
        return err

    def run(self, cycles: int) -> list[float]:
        return [self.cycle() for _ in range(cycles)]
