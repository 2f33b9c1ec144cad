"""The fibre Mach-Zehnder interferometer: phase drift, fiber stretcher, the aux-pulse fringe on
the balanced detector, and the residual-phase statistics of a block of trials.

Phase (rad) of the interferometer at drift-clock time t (s)::

    φ0(t) = φ_init + w(t) + r·t + a·sin(2π t / P) + k_V · V_stretcher

with w a random walk of diffusion constant D (Var w(t) = 2 D t), r a linear thermal drift and a
slow sinusoid (parameters in :class:`~sim_instruments.twin.params.TwinParams`).

The balanced detector behind the filters sees the auxiliary pulse (read laser, no serrodyne,
~5 us after the read pulse; supplement, "Phase stabilization")::

    V(t) = A · (P/P_ref) · sqrt(t_B) · Re[g e^{i(φ0 + φ_lock)}] + offset + noise

A the fringe amplitude, P/P_ref the pulse power (∝ drive²) relative to the reference read level,
t_B the VOA transmission of arm B, g the coherence the EOM leaves between the arms during that
pulse (1 for the aux pulse).

DLCZ interference phase. Pump and read both traverse the interferometer, so the heralded
two-photon term carries θ = θ_r + θ_m with θ_m(0) = φ0 and θ_r = φ0 + Δφ (main text): twice φ0.
Over a block the coincidence probability is linear in e^{iθ}, so a block needs only the complex
mean ``c2 = ⟨e^{2iφ0}⟩`` over its trials (exact for the linear terms; the double-read terms,
O(10⁻⁸) per trial, use the same mean). How c2 is obtained (``lock_mode``):

* ``observed``: the mean of e^{2iφ0} over the lock cycles run since the previous data block
  (the last ``lock_window`` of them). A lock is running when, since that block, at least
  ``lock_min_cycles`` fringe reads *and* as many stretcher set points (MDT694 writes) were seen;
  otherwise the previous block's statistics are kept. Each repetition period covered by a Red
  Pitaya acquisition, and each boxcar read, is one fringe read (a monitor reading the detector
  without writing the stretcher is no lock). The lock is assumed to keep this performance through the
  following data block, so 1e8-trial blocks need not emulate every 50 us cycle. The drift clock
  is not advanced through such a block: the lock tracks the drift, and its next cycle continues
  where it stopped.
* ``ideal``: a lock holding the fringe at quadrature with a Gaussian residual of rms σ:
  c2 = e^{2iφ_q} e^{−2σ²}. ``auto`` uses this until a lock has run (see above).
* ``free``: no lock; the drift runs through the block and c2 is its time average, computed on a
  sub-grid fine compared with 1/(4D) and the drift period.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

RP_RATE = 125e6          #: Red Pitaya ADC rate (Sa/s)
RP_BUFFER = 16384        #: samples per buffer


@dataclass(frozen=True)
class PhaseStats:
    """Residual-phase statistics of a block: ``c2 = ⟨e^{2iφ0}⟩``; ``mean_phase`` = arg(c2)/2;
    ``cos_2dphi`` = |c2| = ⟨cos 2δφ⟩ about that mean; ``source`` how it was obtained."""

    c2: complex
    source: str
    cycles: int = 0

    @property
    def mean_phase(self) -> float:
        return 0.5 * math.atan2(self.c2.imag, self.c2.real)

    @property
    def cos_2dphi(self) -> float:
        return abs(self.c2)


@dataclass(frozen=True)
class FringePulse:
    """A light pulse on the balanced detector: [start, end) in the period, complex amplitude (V)
    multiplying e^{i(φ0 + φ_lock)}."""

    start: float
    end: float
    amplitude: complex


class Interferometer:
    """Phase state of the interferometer. ``rng``: numpy Generator for the random walk and the
    detector noise."""

    def __init__(self, params: Any, rng: np.random.Generator) -> None:
        self.p = params
        self.rng = rng
        self.t = 0.0            #: drift clock (s)
        self.walk = 0.0         #: random-walk part (rad)
        self.observed: deque[float] = deque(maxlen=int(params.lock_window))
        self.cycles = 0         #: lock cycles seen in total
        self.cycles_since_block = 0
        self.last_observed: PhaseStats | None = None

    # -- phase ---------------------------------------------------------------------------------
    def drift(self, t: float | np.ndarray | None = None) -> Any:
        """Deterministic drift part at drift-clock time t (default: now)."""
        tt = self.t if t is None else t
        p = self.p
        return p.drift_rate * tt + p.drift_amplitude * np.sin(2 * math.pi * np.asarray(tt) / p.drift_period)

    def phase(self, stretcher_v: float) -> float:
        """φ0 now (rad)."""
        return float(self.p.initial_phase + self.walk + self.drift() + self.p.stretcher_gain * stretcher_v)

    def advance(self, dt_s: float) -> None:
        """Move the drift clock by ``dt_s`` (s): random walk plus deterministic drift."""
        if dt_s <= 0:
            return
        if self.p.drift_diffusion > 0:
            self.walk += float(self.rng.normal(0.0, math.sqrt(2.0 * self.p.drift_diffusion * dt_s)))
        self.t += dt_s

    def lock_point(self) -> float:
        """φ0 at which the aux fringe sits at quadrature (the lock point, one of the two)."""
        return 0.5 * math.pi - self.p.lock_offset

    # -- balanced detector -----------------------------------------------------------------------
    def fringe_voltage(self, phase: float, pulse: FringePulse | None, noise: bool = True) -> float:
        """Balanced-detector voltage during ``pulse`` at interferometer phase ``phase`` (rad)."""
        v = self.p.fringe_offset
        if pulse is not None:
            v += float((pulse.amplitude * np.exp(1j * (phase + self.p.lock_offset))).real)
        if noise and self.p.fringe_noise > 0:
            v += float(self.rng.normal(0.0, self.p.fringe_noise))
        return v

    def render_trace(self, n: int, dt: float, t0: float, period: float, pulses: Sequence[FringePulse],
                     phases: Sequence[float], first_rep: int) -> np.ndarray:
        """``n`` samples (V) of the balanced detector, each the mean over [t0 + k dt, t0 + (k+1) dt)
        (the Red Pitaya averages when decimating); ``t0`` is measured from the start of period 0;
        ``phases[m]`` is φ0 during period ``first_rep + m``."""
        edges = t0 + np.arange(n + 1) * dt
        out = np.full(n, float(self.p.fringe_offset))
        if pulses and period > 0 and len(phases):
            reps = (first_rep + np.arange(len(phases))) * period
            rot = np.exp(1j * (np.asarray(phases, float) + self.p.lock_offset))
            for fp in pulses:
                v = (fp.amplitude * rot).real
                if not np.any(v):
                    continue
                a = reps + fp.start
                b = reps + fp.end
                cov = _covered_weighted(edges, a, b, v)
                out += np.diff(cov) / dt
        if self.p.fringe_noise > 0:
            out += self.rng.normal(0.0, self.p.fringe_noise, n)
        return out

    # -- lock cycles and block statistics -------------------------------------------------------
    def lock_cycle(self, stretcher_v: float, cycle_s: float) -> float:
        """One lock cycle: record φ0 (what the trials of this cycle see) and advance one cycle."""
        ph = self.phase(stretcher_v)
        self.observed.append(ph)
        self.cycles += 1
        self.cycles_since_block += 1
        self.advance(cycle_s)
        return ph

    def block_stats(self, duration_s: float, stretcher_v: float, writes: int | None = None) -> PhaseStats:
        """``⟨e^{2iφ0}⟩`` for a data block of ``duration_s`` (see the module docstring); advances
        the drift clock in ``free`` mode. ``writes``: stretcher set points written since the
        previous block (None: unknown, taken as a lock when enough cycles were read)."""
        mode = self.p.lock_mode
        k = self.cycles_since_block
        active = k >= self.p.lock_min_cycles and (writes is None or writes >= self.p.lock_min_cycles)
        fresh = active or (mode == "observed" and k > 0 and self.last_observed is None)
        if mode in ("auto", "observed") and fresh:
            n = min(k, len(self.observed))
            ph = np.fromiter(self.observed, float)[-n:]
            self.last_observed = PhaseStats(complex(np.mean(np.exp(2j * ph))), "observed", ph.size)
        self.cycles_since_block = 0
        if mode in ("auto", "observed") and self.last_observed is not None:
            return self.last_observed
        if mode in ("ideal", "observed", "auto"):
            s = self.p.ideal_lock_residual
            return PhaseStats(complex(np.exp(2j * self.lock_point()) * math.exp(-2 * s * s)), "ideal")
        return PhaseStats(self._free_average(duration_s, stretcher_v), "free")

    def peek_stats(self, stretcher_v: float, writes: int | None = None) -> PhaseStats:
        """What :meth:`block_stats` would return now, without changing anything (free mode: the
        phase now)."""
        mode = self.p.lock_mode
        k = self.cycles_since_block
        active = k >= self.p.lock_min_cycles and (writes is None or writes >= self.p.lock_min_cycles)
        if mode in ("auto", "observed") and (active or (mode == "observed" and k and self.last_observed is None)):
            ph = np.fromiter(self.observed, float)[-min(k, len(self.observed)):]
            return PhaseStats(complex(np.mean(np.exp(2j * ph))), "observed", ph.size)
        if mode in ("auto", "observed") and self.last_observed is not None:
            return self.last_observed
        if mode == "free":
            return PhaseStats(complex(np.exp(2j * self.phase(stretcher_v))), "free")
        s = self.p.ideal_lock_residual
        return PhaseStats(complex(np.exp(2j * self.lock_point()) * math.exp(-2 * s * s)), "ideal")

    def _free_average(self, duration: float, stretcher_v: float) -> complex:
        if duration <= 0:
            return complex(np.exp(2j * self.phase(stretcher_v)))
        p = self.p
        scales = [duration * 64 * p.drift_diffusion, duration / p.drift_period * 64,
                  duration * abs(p.drift_rate) * 8]
        n = int(min(200_000, max(16, *scales)))
        h = duration / n
        steps = self.rng.normal(0.0, math.sqrt(2.0 * p.drift_diffusion * h), n) if p.drift_diffusion > 0 \
            else np.zeros(n)
        walk = self.walk + np.cumsum(steps) - 0.5 * steps      # mid-step values
        tm = self.t + (np.arange(n) + 0.5) * h
        ph = p.initial_phase + walk + self.drift(tm) + p.stretcher_gain * stretcher_v
        # within a step the walk spreads by Var = 2D h/4 about the mid value on average
        damp = math.exp(-2.0 * 2.0 * p.drift_diffusion * h / 4.0)
        c2 = complex(np.mean(np.exp(2j * ph))) * damp
        self.walk += float(steps.sum())
        self.t += duration
        return c2


def _covered_weighted(edges: np.ndarray, a: np.ndarray, b: np.ndarray, w: np.ndarray) -> np.ndarray:
    """∫ from −∞ to each edge of Σ_i w_i·1[a_i ≤ t < b_i] dt for disjoint sorted intervals."""
    lens = (b - a) * w
    cum = np.concatenate([[0.0], np.cumsum(lens)])
    k = np.searchsorted(a, edges, side="right")          # intervals starting at or before edge
    j = np.maximum(k - 1, 0)
    full = cum[j]
    part = np.where(k > 0, np.clip(edges - a[j], 0.0, b[j] - a[j]) * w[j], 0.0)
    return full + part
