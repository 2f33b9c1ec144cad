"""Parameters of the digital twin (SI units), with their sources in the seed.

Seed: Riedinger et al., "Remote quantum entanglement between two micromechanical oscillators",
Nature 556, 473 (2018), main text and Supplementary Information
(``/work/shared/seeds/riedinger2018_remote_entanglement.txt``); equations as in
``/work/shared/docs/physics.md``. "S2" is the supplement's single-device cross-correlation,
"pump-probe" the supplement's section on the devices' thermal response.

:class:`TwinParams` is one flat dataclass. :meth:`TwinParams.from_mapping` reads the station's
``twin:`` section: numbers are SI, strings carry units (``"4 us"``, ``"45 MHz"``, ``"0.56 %"``);
per-device entries are ``[A, B]`` and per-detector entries ``[detector 1, detector 2]`` (a single
value applies to both). Unknown keys, wrong units and out-of-range values are reported together,
each with a fix.

Where the seed's numbers are not mutually consistent the choice is stated at the field (see
``swap_probability`` and ``collection_efficiency``); ``docs/twin.md`` derives the defaults.
"""
from __future__ import annotations

import difflib
import math
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any, Mapping

from labctl.errors import InputError, raise_input_errors

Pair = tuple[float, float]

#: ``kind`` of a field: "pair" (two floats), "float", "int", "str", "choice", "bool"
_CHOICES = {"lock_mode": ("auto", "observed", "ideal", "free")}


def _p(default: Any, unit: str, doc: str, kind: str = "float", lo: float | None = None,
       hi: float | None = None) -> Any:
    """A parameter field: default, unit (labctl.units dimension, or a compound SI unit that
    accepts plain numbers only), docstring, kind and allowed range."""
    meta = {"unit": unit, "doc": doc, "kind": kind, "lo": lo, "hi": hi}
    if isinstance(default, (list, tuple)):
        return field(default=tuple(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class TwinParams:
    """Every parameter of the twin (see the module docstring). Index 0/1 of a pair is device A/B
    or detector 1/2 as stated."""

    # ---- optomechanical devices [A, B] ----------------------------------------------------------
    mechanical_frequency: Pair = _p((5.1e9, 5.145e9), "Hz",
        "Ω_m/2π of devices A, B; B is higher by ΔΩ_m/2π = 45 MHz (main text, Fig. 1b)", "pair", 1e6, 1e11)
    decay_time: Pair = _p((4.0e-6, 5.8e-6), "s",
        "1/Γ, mechanical energy decay time (supplement, pump-probe: 4.0 us, 5.8 us)", "pair", 1e-9, 1.0)
    heating_delay: Pair = _p((0.5e-6, 0.5e-6), "s",
        "1/γ, decay of the hot-phonon bath that delays absorption heating (pump-probe: 0.5 us)",
        "pair", 1e-10, 1.0)
    cavity_wavelength: Pair = _p((1553.8e-9, 1553.8e-9), "m",
        "optical resonance wavelength (main text: 1553.8 nm, matched within 10 % of a linewidth)",
        "pair", 1e-6, 2e-6)
    optical_q: Pair = _p((2.2e5, 2.2e5), "1", "optical quality factor (Fig. 1a: Q = 2.2e5)",
                         "pair", 1.0, 1e9)
    cryostat_temperature: float = _p(0.060, "K",
        "bath temperature; initial occupation 1/(exp(hΩ/kT) − 1) (main text: 60 mK)", "float", 0.0, 300.0)
    excess_occupation: Pair = _p((0.050, 0.0), "1",
        "phonons of unidentified origin, imperfect thermalisation (supplement: ~4e-2 in A, ~0 in B; "
        "5e-2 here so that n_th,A = 0.119 at 123 ns)", "pair", 0.0, 1e3)
    pump_probability: Pair = _p((0.0056, 0.0080), "1",
        "Stokes scattering probability per pump pulse at the reference pump pulse "
        "(supplement S2 calibration: p_pump,A = 0.56 %, p_pump,B = 0.80 %; mean ~0.7 %)", "pair", 0.0, 0.5)
    swap_probability: Pair = _p((0.0371, 0.0529), "1",
        "anti-Stokes state-swap probability of the reference read pulse. The main text gives "
        "'about 3.4 %'; with the seed's own p_pump, n_th, n_leak and n_bg the measured read/herald "
        "count ratios C(r_i)/C(p_i) = 0.98, 0.91 need s·η ≈ 1.33× that, which is put here "
        "(mean 4.5 %, A:B = 0.7 as for the pump, pump-probe: 5.6 %/8.0 %)", "pair", 0.0, 0.999)
    pump_heating: Pair = _p((0.020, 0.020), "1",
        "phonons added by absorption of the reference pump pulse, seen at the reference delay "
        "(supplement: n_pump ~ 3e-2; rate equation dn/dt = −Γn + k e^{−γt})", "pair", 0.0, 1e3)
    read_heating: Pair = _p((0.032, 0.032), "1",
        "phonons added during the reference read pulse itself (supplement: n_read ~ 5e-2; here "
        "chosen with pump_heating so that n_th = 0.119 (A), 0.069 (B) at 123 ns)", "pair", 0.0, 1e3)
    heating_reference_delay: float = _p(123e-9, "s",
        "delay at which pump_heating is specified (main text: tau = 123 ns)", "float", 1e-10, 1.0)

    # ---- drive calibration: the 'true' AOM calibration of the twin ------------------------------
    pump_reference_level: float = _p(0.5, "V",
        "AOM drive (AFG high level) of the reference pump pulse (configs/lab.yaml calibration.aom)",
        "float", 1e-3, 10.0)
    read_reference_level: float = _p(0.6, "V",
        "AOM drive of the reference read pulse (configs/lab.yaml calibration.aom)", "float", 1e-3, 10.0)
    reference_pulse_duration: float = _p(40e-9, "s",
        "duration of the reference pulses; scattering ∝ ∫V² dt (small-signal AOM, linear optomechanics)",
        "float", 1e-10, 1e-3)
    laser_reference_power: float = _p(0.020, "W",
        "laser output power at which the probabilities are specified (TLB-6700 model default current)",
        "float", 1e-6, 10.0)

    # ---- optics ----------------------------------------------------------------------------------
    collection_efficiency: Pair = _p((0.01789, 0.01252), "1",
        "device-to-beam-splitter efficiency of arm A, B (circulators, fibres, filter losses). B/A = "
        "0.7 balances the heralds p_A η_A = p_B η_B (main text: 'balanced by adjusting the energy "
        "of the pump pulses'); the scale reproduces the seed's herald rates", "pair", 0.0, 1.0)
    detector_efficiency: Pair = _p((0.50, 0.8285), "1",
        "SNSPD 1, 2 detection efficiency on the plateau; the ratio is the seed's C(p2)/C(p1) = 1.657",
        "pair", 0.0, 1.0)
    beamsplitter_reflectivity: float = _p(0.5015, "1",
        "power fraction of arm A sent to detector 2 (and of B to detector 1); supplement: measured "
        "deviation of 0.6 % from 50/50", "float", 0.0, 1.0)
    voa_balanced: float = _p(0.0, "dB",
        "VOA attenuation (in the drive path of arm B) at which the pump/read probabilities above "
        "hold; the VRC does the coarse balance (supplement, Fig. S2)", "float", 0.0, 100.0)
    filter_bandwidth: float = _p(50e6, "Hz",
        "FWHM of each FFP-TF2 filter stage in front of the detectors (supplement: 50 MHz)",
        "float", 1e3, 1e12)
    filter_stages: int = _p(2, "1", "filters in series per detection arm (supplement: two)", "int", 0, 10)
    eom_v_pi: float = _p(3.5, "V", "true RF Vπ of the phase EOM (configs/lab.yaml eom.v_pi_rf)",
                         "float", 1e-3, 1e3)
    amplifier_gain: float = _p(13.0, "dB", "true gain of the EOM driver amplifier (configs/lab.yaml)",
                               "float", -100.0, 100.0)
    eom_polarity: int = _p(1, "1", "+1: a rising AWG ramp raises the optical frequency "
                           "(labctl.serrodyne convention)", "int", -1, 1)
    awg_trigger_delay: float = _p(0.0, "s", "AWG sequence start after the AFG trigger (triggered mode)",
                                  "float", 0.0, 1e-3)
    detection_delay: float = _p(0.0, "s",
        "optical + electronic delay from AOM gate to tagger input (sequence 'detection.delay')",
        "float", -1e-6, 1e-3)
    awg_phase_samples: int = _p(32, "1",
        "sync offsets averaged over when the AWG free-runs (not triggered): its ramps then fall at "
        "random times relative to the pulses", "int", 1, 4096)

    # ---- detection -------------------------------------------------------------------------------
    leak_per_phonon: Pair = _p((4.2e-2, 3.2e-2), "1",
        "n_leak: leaked drive photons per transferred phonon on detector 1, 2 (supplement S2)",
        "pair", 0.0, 1e3)
    background_per_phonon: Pair = _p((2.9e-3, 3.2e-3), "1",
        "n_bg: background clicks per detected phonon on detector 1, 2 (supplement: 2.9e-3, 3.2e-3)",
        "pair", 0.0, 1e3)
    herald_leak: Pair = _p((0.0, 0.0), "1",
        "leaked pump photons per Stokes photon on detector 1, 2 (not given in the seed)", "pair", 0.0, 1e3)
    dark_count_rate: Pair = _p((1.0, 1.0), "Hz",
        "dark counts of SNSPD 1, 2 at nominal bias, uniform in time", "pair", 0.0, 1e9)
    dead_time: float = _p(50e-9, "s", "SNSPD recovery time: a click within it after a click is lost",
                          "float", 0.0, 1e-3)
    timing_jitter: float = _p(50e-12, "s", "rms timing jitter of detector + tagger", "float", 0.0, 1e-6)
    bias_nominal: float = _p(1.0, "V", "SIM928 bias of the SNSPDs on their efficiency plateau",
                             "float", 0.0, 20.0)
    bias_half: float = _p(0.8, "V", "bias at half the plateau efficiency (sigmoid)", "float", 0.0, 20.0)
    bias_width: float = _p(0.04, "V", "width of the efficiency sigmoid", "float", 1e-6, 20.0)
    bias_dark_scale: float = _p(0.1, "V", "dark rate ∝ exp((V − V_nominal)/scale)", "float", 1e-6, 20.0)
    latch_bias: float = _p(1.5, "V", "bias above which an SNSPD latches (switches to the normal state)",
                           "float", 0.0, 20.0)
    latch_count_rate: float = _p(5e6, "Hz", "click rate above which an SNSPD latches", "float", 0.0, 1e12)
    latch_rate: float = _p(0.0, "Hz", "spontaneous latching events per second and detector (faults)",
                           "float", 0.0, 1e6)

    # ---- interferometer and phase lock ------------------------------------------------------------
    drift_diffusion: float = _p(0.5, "rad^2/s",
        "random-walk diffusion D of the interferometer phase: Var φ(t) = 2 D t", "float", 0.0, 1e9)
    drift_rate: float = _p(0.05, "rad/s", "linear thermal drift of the interferometer phase",
                           "float", -1e6, 1e6)
    drift_amplitude: float = _p(1.0, "rad", "amplitude of a sinusoidal (air-conditioning) drift",
                                "float", 0.0, 1e6)
    drift_period: float = _p(900.0, "s", "period of the sinusoidal drift", "float", 1e-3, 1e9)
    initial_phase: float = _p(0.3, "rad", "interferometer phase φ0 at time 0 with 0 V on the stretcher",
                              "float", -1e6, 1e6)
    stretcher_gain: float = _p(0.5, "rad/V", "fiber-stretcher phase per volt of the MDT694 output",
                               "float", -1e3, 1e3)
    fringe_amplitude: float = _p(0.3, "V",
        "balanced-detector fringe amplitude for the reference read level, balanced arms", "float", 0.0, 100.0)
    fringe_offset: float = _p(0.05, "V", "balanced-detector offset (Red Pitaya IN1)", "float", -10.0, 10.0)
    fringe_noise: float = _p(0.002, "V", "rms noise per sample of the balanced detector", "float", 0.0, 10.0)
    lock_offset: float = _p(0.0, "rad", "phase of the aux-pulse fringe relative to φ0", "float", -1e3, 1e3)
    setup_phase: float = _p(5.654866776461628, "rad",
        "interference phase θ (θ = π: cross-detector maximum) with the fringe locked at quadrature, "
        "Δφ = 0 and serrodyne ramps whose starts are a whole number of ramp periods apart "
        "(θ = setup_phase + arg O_pump O_read); 1.8π puts the compiled dlcz_witness (Δφ = 0.2π on "
        "the read ramp, ramps referenced to their pulses) at the cross-detector maximum, where the "
        "seed found θ_opt (a simulated phase sweep puts the maximum at Δφ = 0.26π ± 0.06π)",
        "float", -1e3, 1e3)
    lock_mode: str = _p("auto", "", "how the residual phase during data blocks is obtained: "
                        "'observed' (statistics of the lock cycles seen since the last block), "
                        "'ideal' (Gaussian residual of ideal_lock_residual about the quadrature), "
                        "'free' (no lock: the drift runs through the block), 'auto' (observed if any "
                        "lock cycle was seen, else ideal)", "choice")
    ideal_lock_residual: float = _p(0.1, "rad", "rms residual of an ideal lock (φ0 around the lock point)",
                                    "float", 0.0, 10.0)
    lock_window: int = _p(1000, "1", "most recent lock cycles used for the residual statistics",
                          "int", 1, 10**7)
    lock_min_cycles: int = _p(20, "1", "lock cycles since the previous data block needed to take new "
                              "statistics from them (fewer: the previous statistics are kept; none "
                              "yet: 'auto' uses the ideal lock)", "int", 1, 10**7)
    boxcar_pin: str = _p("AIN0", "", "Red Pitaya slow input carrying a boxcar (sample-and-hold) of "
                         "the aux-pulse fringe; '' for none", "str")
    boxcar_center: float = _p(1.65, "V", "boxcar output at zero fringe", "float", 0.0, 3.3)

    # ---- wiring and run behaviour -----------------------------------------------------------------
    standing_state: bool = _p(True, "", "on attach, bring instruments still in their power-up state "
                              "to where the lab leaves them between runs (lasers on their sidebands, "
                              "SNSPDs biased)", "bool")
    max_chunk_trials: int = _p(1_000_000_000, "1", "largest number of trials sampled in one piece",
                               "int", 1, 10**12)

    # ------------------------------------------------------------------------------------------------
    @property
    def delta_omega(self) -> float:
        """ΔΩ_m = Ω_B − Ω_A (rad/s)."""
        return 2 * math.pi * (self.mechanical_frequency[1] - self.mechanical_frequency[0])

    def replace(self, **changes: Any) -> "TwinParams":
        """A copy with some values changed (validated like :meth:`from_mapping`)."""
        return TwinParams.from_mapping({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        """Plain values (lists for pairs), e.g. for a run file."""
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)}

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None, *, file: str | None = None,
                     lines: Mapping[str, int] | None = None) -> "TwinParams":
        """Parameters from a mapping (the station's ``twin:`` section); missing keys keep their
        defaults. Raises :class:`~labctl.errors.InputError` listing every problem."""
        if data is None:
            return cls()
        if isinstance(data, TwinParams):
            return data
        if not isinstance(data, Mapping):
            raise InputError(f"the twin section must be a mapping, not {type(data).__name__}", file=file,
                             fix="write 'twin: {decay_time: [4 us, 5.8 us], ...}'")
        known = {f.name: f for f in fields(cls)}
        errors: list[InputError] = []
        values: dict[str, Any] = {}
        for key, raw in data.items():
            line = (lines or {}).get(str(key))
            f = known.get(str(key))
            if f is None:
                close = difflib.get_close_matches(str(key), list(known), n=3)
                fix = (f"did you mean {' or '.join(repr(c) for c in close)}?" if close else
                       "see docs/twin.md for the parameters")
                errors.append(InputError(f"twin: unknown parameter {key!r}", file=file, line=line, fix=fix))
                continue
            try:
                values[f.name] = _convert(f, raw)
            except InputError as e:
                errors.append(InputError(e.what, file=file, line=line, fix=e.fix))
        raise_input_errors(errors)
        return replace(cls(), **values)


def _convert(f: Any, raw: Any) -> Any:
    m = f.metadata
    kind, unit, name = m["kind"], m["unit"], f.name
    where = f"twin.{name}"
    if kind == "bool":
        if isinstance(raw, bool):
            return raw
        raise InputError(f"{where}: {raw!r} is not true/false", fix="write true or false")
    if kind == "str":
        if isinstance(raw, str):
            return raw
        raise InputError(f"{where}: {raw!r} is not a text", fix="write it as a string")
    if kind == "choice":
        ok = _CHOICES[name]
        if raw in ok:
            return raw
        raise InputError(f"{where}: {raw!r} is not one of {', '.join(ok)}", fix=f"use one of {', '.join(ok)}")
    if kind == "pair":
        items = list(raw) if isinstance(raw, (list, tuple)) else [raw, raw]
        if len(items) != 2:
            raise InputError(f"{where}: needs two values [A, B] (or one for both), got {len(items)}",
                             fix=f"e.g. {name}: [{_fmt(f.default[0], unit)}, {_fmt(f.default[1], unit)}]")
        return tuple(_number(x, unit, where, m) for x in items)
    v = _number(raw, unit, where, m)
    if kind == "int":
        if v != int(v):
            raise InputError(f"{where}: {raw!r} must be a whole number", fix=f"e.g. {f.default}")
        return int(v)
    return v


def _number(x: Any, unit: str, where: str, meta: Mapping[str, Any]) -> float:
    from labctl.errors import UnitError
    from labctl.units import parse_as

    if isinstance(x, bool):
        raise InputError(f"{where}: {x!r} is not a number", fix="give a number")
    if isinstance(x, (int, float)):
        v = float(x)
    elif isinstance(x, str) and unit in ("s", "Hz", "V", "K", "m", "rad", "dB", "W", "1"):
        try:
            v = parse_as(x, unit, where=where)
        except (UnitError, InputError) as e:
            raise InputError(getattr(e, "what", str(e)), fix=getattr(e, "fix", None)) from None
    elif isinstance(x, str):
        try:
            v = float(x)
        except ValueError:
            raise InputError(f"{where}: {x!r} must be a plain number in SI units ({unit})",
                             fix=f"write e.g. {where.split('.')[-1]}: 0.5") from None
    else:
        raise InputError(f"{where}: {x!r} is not a number", fix=f"give a number in {unit or 'SI units'}")
    if not math.isfinite(v):
        raise InputError(f"{where}: {x!r} is not finite", fix="give a finite number")
    lo, hi = meta.get("lo"), meta.get("hi")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise InputError(f"{where}: {x!r} is outside {lo:g} … {hi:g} {unit}".rstrip(),
                         fix="give a value in that range")
    return v


def _fmt(v: float, unit: str) -> str:
    return f"{v:g}" if unit in ("", "1") else f"{v:g} {unit}"


def describe() -> list[tuple[str, str, Any, str]]:
    """(name, unit, default, doc) of every parameter, for docs and ``--help`` texts."""
    out = []
    for f in fields(TwinParams):
        d = f.default if f.default is not MISSING else None
        out.append((f.name, f.metadata["unit"], d, f.metadata["doc"]))
    return out
