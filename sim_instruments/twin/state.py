"""What the twin reads from the simulated instruments (never from a sequence file).

:func:`read_state` turns the state of the simulator models in a :class:`~sim_instruments.lab.SimLab`
into a plain :class:`LabState`:

=====================  ==========================================================================
AFG3152C output 1      pump AOM: pulse mode (delay, width, high) or an arbitrary record (USERn
                       samples × levels, played after the burst delay); only when the output is on
AFG3152C output 2      read AOM: the read pulse and the auxiliary lock pulse (same rules)
AFG3152C trigger       the repetition period (timer), i.e. the sync of the time tagger
81180A channel 1       serrodyne drive of the EOM in arm A: segments (DAC codes), sequence table,
                       amplitude, sample rate, output, run mode (triggered or free-running)
Sercalo VP1            attenuation in the drive path of arm B (dB)
MDT694                 fiber-stretcher voltage
TLB-6700 ×2            laser output on/off, wavelength (set point + mode hop), power
SIM900/SIM928          SNSPD bias on the device and the latched flags (ports 1, 2)
=====================  ==========================================================================

Levels: the AOM's diffracted field is proportional to its drive (small signal), so the optical
pulse amplitude is taken ∝ the AFG voltage and the energy ∝ ∫V² dt. An output's low level is
taken as 0 V (the AOM driver's modulation input is gated); nonzero lows are ignored.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: AFG3152C pulse-mode parameters are rendered on this grid (s) for spectra
FINE_DT = 0.25e-9


@dataclass(frozen=True)
class LightPulse:
    """One optical pulse: AOM drive samples ``levels`` (V) of spacing ``dt`` from ``start``."""

    output: int
    start: float
    dt: float
    levels: np.ndarray = field(repr=False)

    @property
    def duration(self) -> float:
        return self.dt * self.levels.size

    @property
    def end(self) -> float:
        return self.start + self.duration

    @property
    def energy(self) -> float:
        """∫V² dt (V² s): the scattering probabilities scale with it."""
        return float(np.sum(self.levels ** 2) * self.dt)

    @property
    def peak(self) -> float:
        return float(np.max(np.abs(self.levels))) if self.levels.size else 0.0

    def fine(self, dt: float = FINE_DT) -> tuple[np.ndarray, np.ndarray]:
        """(times, field amplitude ∝ V) on a grid of spacing ≈ ``dt`` covering the pulse."""
        n = max(1, int(math.ceil(self.duration / dt)))
        t = self.start + (np.arange(n) + 0.5) * (self.duration / n)
        idx = np.minimum(((t - self.start) / self.dt).astype(np.int64), self.levels.size - 1)
        return t, self.levels[idx].astype(float)

    def sample_times(self, u: np.ndarray) -> np.ndarray:
        """Emission times for uniform numbers ``u`` in [0, 1): distributed ∝ V(t)² (the photon
        intensity follows the drive power), uniform within each sample."""
        w = self.levels.astype(float) ** 2
        if w.size == 1 or bool(np.all(w == w[0])):
            return self.start + u * self.duration
        cdf = np.concatenate([[0.0], np.cumsum(w)])
        cdf /= cdf[-1]
        k = np.clip(np.searchsorted(cdf, u, side="right") - 1, 0, w.size - 1)
        frac = (u - cdf[k]) / np.maximum(cdf[k + 1] - cdf[k], 1e-300)
        return self.start + (k + np.clip(frac, 0.0, 1.0)) * self.dt


@dataclass(frozen=True)
class EomDrive:
    """Optical phase (rad) the EOM in arm A imprints, sampled at ``rate`` over one run of the AWG
    sequence starting ``start`` after the AFG trigger; ``free_running``: the sequence repeats
    without the trigger (its timing relative to the pulses is then random)."""

    rate: float
    start: float
    phase: np.ndarray = field(repr=False)
    free_running: bool = False
    segments: tuple[tuple[int, int], ...] = ()

    @property
    def duration(self) -> float:
        return self.phase.size / self.rate

    def phase_at(self, t: np.ndarray, offset: float = 0.0) -> np.ndarray:
        """Phase at times ``t`` (s after the trigger); ``offset`` shifts the sequence (free-running
        AWG). Outside the sequence (triggered mode) the drive idles at its offset: phase 0."""
        x = (np.asarray(t, dtype=float) - self.start - offset) * self.rate
        k = np.floor(x).astype(np.int64)
        if self.free_running:
            return self.phase[np.mod(k, self.phase.size)]
        inside = (k >= 0) & (k < self.phase.size)
        return np.where(inside, self.phase[np.clip(k, 0, self.phase.size - 1)], 0.0)


@dataclass(frozen=True)
class LaserState:
    on: bool
    wavelength: float   #: m (set point plus any mode hop)
    power: float        #: W


@dataclass(frozen=True)
class BiasState:
    volts: float        #: bias on the detector (0 when the SIM928 output is off)
    latched: bool
    port: int | None


@dataclass(frozen=True)
class LabState:
    """Everything the physics needs, read from the instruments at one moment."""

    period: float
    pump_pulses: tuple[LightPulse, ...]
    read_pulses: tuple[LightPulse, ...]
    eom: EomDrive | None
    voa_db: float
    stretcher_v: float
    pump_laser: LaserState
    read_laser: LaserState
    bias: tuple[BiasState, BiasState]
    notes: tuple[str, ...] = ()

    def signature(self) -> tuple:
        """Hashable summary that changes whenever the physics would (for caching)."""
        def ps(p: LightPulse) -> tuple:
            return (p.output, round(p.start, 15), round(p.dt, 15), p.levels.tobytes())
        eom = None if self.eom is None else (self.eom.rate, self.eom.start, self.eom.free_running,
                                             hash(self.eom.phase.tobytes()))
        return (self.period, tuple(map(ps, self.pump_pulses)), tuple(map(ps, self.read_pulses)), eom,
                self.voa_db, self.pump_laser, self.read_laser, self.bias)


# ----------------------------------------------------------------------------------------------
# wiring: which model plays which part
# ----------------------------------------------------------------------------------------------

@dataclass
class Wiring:
    """Names of the models in ``SimLab.models`` and the outputs used (defaults: configs/lab.yaml).
    Any name that is absent from the lab is looked up by the model's class instead."""

    afg: str = "afg"
    pump_output: int = 1
    read_output: int = 2
    awg: str = "awg"
    awg_output: int = 1
    voa: str = "voa"
    stretcher: str = "stretcher"
    redpitaya: str = "redpitaya"
    lock_input: int = 1
    detector_bias: str = "snspd_bias"
    bias_ports: tuple[int, int] = (1, 2)
    pump_laser: str = "pump_laser"
    read_laser: str = "read_laser"
    detector_channels: tuple[int, int] = (0, 1)

    @classmethod
    def from_station(cls, cfg: Any) -> "Wiring":
        """From a :class:`labctl.config.StationConfig`'s ``channels`` map."""
        w = cls()
        ch = getattr(getattr(cfg, "model", None), "channels", {}) or {}

        def get(role: str) -> Any:
            return ch.get(role)

        if get("pump_aom") is not None:
            w.afg, w.pump_output = get("pump_aom").instrument, int(get("pump_aom").output or 1)
        if get("read_aom") is not None:
            w.read_output = int(get("read_aom").output or 2)
        if get("serrodyne") is not None:
            w.awg, w.awg_output = get("serrodyne").instrument, int(get("serrodyne").output or 1)
        if get("arm_balance") is not None:
            w.voa = get("arm_balance").instrument
        if get("phase_actuator") is not None:
            w.stretcher = get("phase_actuator").instrument
        if get("lock_detector") is not None:
            w.redpitaya = get("lock_detector").instrument
            out = str(get("lock_detector").output or "IN1").upper()
            w.lock_input = 2 if out.endswith("2") else 1
        b1, b2 = get("detector_1_bias"), get("detector_2_bias")
        if b1 is not None and b2 is not None:
            w.detector_bias = b1.instrument
            w.bias_ports = (int(b1.output), int(b2.output))
        d1, d2 = get("detector_1"), get("detector_2")
        if d1 is not None and d2 is not None:
            w.detector_channels = (int(d1.output), int(d2.output))
        return w


def _model_classes() -> dict[str, type]:
    from ..models.afg3152c import AFG3152CModel
    from ..models.ks81180a import Keysight81180AModel
    from ..models.mdt694 import MDT694Model
    from ..models.redpitaya import RedPitayaModel
    from ..models.sercalo_vp1 import SercaloVP1Model
    from ..models.sim900 import SIM900Model
    from ..models.tlb6700 import TLB6700Model

    return {"afg": AFG3152CModel, "awg": Keysight81180AModel, "voa": SercaloVP1Model,
            "stretcher": MDT694Model, "redpitaya": RedPitayaModel, "detector_bias": SIM900Model,
            "pump_laser": TLB6700Model, "read_laser": TLB6700Model}


def find_models(lab: Any, wiring: Wiring) -> dict[str, Any]:
    """Role -> model (None when the lab has none). Names from ``wiring`` first, then by class
    (lasers: a name containing 'pump' / 'read', else the first / second laser)."""
    models = getattr(lab, "models", {}) or {}
    out: dict[str, Any] = {}
    for role, cls in _model_classes().items():
        name = getattr(wiring, role)
        m = models.get(name)
        if m is not None and isinstance(m, cls):
            out[role] = m
            continue
        cands = [(n, x) for n, x in models.items() if isinstance(x, cls)]
        if role in ("pump_laser", "read_laser"):
            key = "pump" if role == "pump_laser" else "read"
            named = [x for n, x in cands if key in n.lower()]
            if named:
                out[role] = named[0]
                continue
            idx = 0 if role == "pump_laser" else 1
            out[role] = cands[idx][1] if len(cands) > idx else None
        else:
            out[role] = cands[0][1] if cands else None
    return out


# ----------------------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------------------

def _runs(levels: np.ndarray, thresh: float) -> list[tuple[int, int]]:
    on = np.abs(levels) > thresh
    if not on.any():
        return []
    edges = np.diff(np.concatenate([[0], on.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))


def afg_pulses(afg: Any, output: int, period: float, notes: list[str]) -> list[LightPulse]:
    """Optical pulses of one AFG output within one period (empty when the output is off)."""
    if afg is None:
        return []
    st = afg.pulse(output)
    if not st.output:
        return []
    shape = st.shape.upper()
    high = float(st.high)
    t0 = float(st.burst_delay) if st.burst else 0.0
    if shape.startswith("PULS"):
        if high <= 0:
            return []
        reps = 1 if st.burst else max(1, int(round(period / st.period)))
        return [LightPulse(output, t0 + k * st.period + st.delay, st.width, np.array([high]))
                for k in range(reps) if t0 + k * st.period + st.delay < period]
    if shape.startswith("USER") or shape.startswith("EMEM"):
        if shape.startswith("USER"):
            slot = int(shape[4:] or 1)
            w = afg.waveform(slot)
        else:
            w = afg.ememory.astype(float) / (16382 / 2.0) - 1.0
        if w.size == 0:
            notes.append(f"AFG output {output} plays {shape}, which holds no data: no light")
            return []
        levels = float(st.low) + (high - float(st.low)) * (w + 1.0) / 2.0
        levels = np.where(levels > 0, levels, 0.0)
        rec_period = float(st.period)           # one record per 1/frequency
        dt = rec_period / w.size
        reps = 1 if st.burst else max(1, int(period / rec_period))
        thresh = 1e-3 * max(float(levels.max()), 1e-12)
        out = []
        for k in range(reps):
            for a, b in _runs(levels, thresh):
                start = t0 + k * rec_period + a * dt
                if start < period:
                    out.append(LightPulse(output, start, dt, levels[a:b].copy()))
        return out
    notes.append(f"AFG output {output} plays {shape}: only PULSe and arbitrary records gate the AOM "
                 "in the twin; no light")
    return []


def afg_period(afg: Any) -> float:
    """Repetition period (s): the burst trigger timer, or the pulse period without bursts."""
    if afg is None:
        return 50e-6
    st = afg.pulse(1)
    trig = afg.trigger()
    if st.burst and str(trig.get("source", "TIM")).upper().startswith("TIM"):
        return float(trig["timer"])
    return float(st.period)


def eom_drive(awg: Any, output: int, params: Any, notes: list[str]) -> EomDrive | None:
    """The EOM phase the 81180A produces (None: no modulation)."""
    if awg is None:
        return None
    ch = awg.channel(output)
    if not ch["output"]:
        return None
    play = awg.playing(output)
    if not play:
        return None
    rate = float(ch["sample_rate"])
    amp = float(ch["amplitude"])
    gain = 10 ** (params.amplifier_gain / 20.0)
    scale = params.eom_polarity * math.pi * gain * amp / (2.0 * 2047.0) / params.eom_v_pi
    parts = []
    for seg, loops in play:
        codes = awg.segments[output].get(seg)
        if codes is None:
            continue
        ph = (codes.astype(np.float64) - 2048.0) * scale   # the amplifier blocks DC: offset drops out
        parts.append(np.tile(ph, int(loops)))
    if not parts:
        return None
    phase = np.concatenate(parts)
    free = bool(ch["continuous"])
    if free:
        notes.append(f"AWG output {output} runs continuously (INITiate:CONTinuous ON): its serrodyne "
                     "ramps are not synchronised with the pulses; set it to triggered mode")
    return EomDrive(rate, params.awg_trigger_delay, phase, free, tuple(play))


def read_state(models: dict[str, Any], wiring: Wiring, params: Any) -> LabState:
    notes: list[str] = []
    afg = models.get("afg")
    period = afg_period(afg)
    pump = afg_pulses(afg, wiring.pump_output, period, notes)
    read = afg_pulses(afg, wiring.read_output, period, notes)
    eom = eom_drive(models.get("awg"), wiring.awg_output, params, notes)
    voa = models.get("voa")
    voa_db = float(voa.attenuation_db) if voa is not None else params.voa_balanced
    st = models.get("stretcher")
    stretcher_v = float(st.voltage) if st is not None else 0.0

    def laser(m: Any) -> LaserState:
        if m is None:       # a station without laser control: the lasers sit on their sidebands
            return LaserState(True, math.nan, params.laser_reference_power)
        return LaserState(bool(m.output), (float(m.setpoint_nm) + float(m.mode_hop_nm)) * 1e-9,
                          float(m.power_mW()) * 1e-3)

    sim = models.get("detector_bias")
    biases = []
    for port in wiring.bias_ports:
        mod = getattr(sim, "modules", {}).get(port) if sim is not None else None
        if mod is None:
            biases.append(BiasState(params.bias_nominal, False, None))
        else:
            biases.append(BiasState(float(mod.bias_on_device), bool(mod.latched), port))
    return LabState(period, tuple(pump), tuple(read), eom, voa_db, stretcher_v,
                    laser(models.get("pump_laser")), laser(models.get("read_laser")),
                    (biases[0], biases[1]), tuple(notes))
