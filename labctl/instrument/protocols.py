"""Device contracts as ``typing.Protocol``s (the bluesky ``protocols.py`` idea).

A sequence names roles (``pump_aom``, ``serrodyne``…); the station maps each role to an
instrument (or one output of it); these protocols say what the framework may call on it, so
several models can fill one role. All quantities are SI: seconds, hertz, volts, watts, metres, dB.
"""
from __future__ import annotations

from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np


@runtime_checkable
class Device(Protocol):
    """What every instrument offers."""

    name: str

    def idn(self) -> str: ...
    def snapshot(self) -> dict[str, Any]: ...
    def safe_state(self) -> None: ...
    def close(self) -> None: ...


@runtime_checkable
class Laser(Device, Protocol):
    """A tunable CW laser (pump and read lasers of the seed)."""

    def set_wavelength(self, wavelength_m: float, wait: bool = True) -> None:
        """Move to ``wavelength_m`` (m); with ``wait``, return once the move has finished."""
    def measured_wavelength(self) -> float:
        """Wavelength (m) as measured by the instrument."""
    def set_output(self, on: bool) -> None: ...


@runtime_checkable
class PulseGenerator(Device, Protocol):
    """Gates AOMs with rectangular pulses, one pulse (or burst) per trigger."""

    def configure_pulse(self, output: int, *, period_s: float, width_s: float, delay_s: float,
                        high_v: float, low_v: float, edge_s: float | None = None) -> None: ...
    def set_output(self, output: int, on: bool) -> None: ...


@runtime_checkable
class WaveformGenerator(Device, Protocol):
    """Plays arbitrary waveforms sample by sample (the serrodyne AWG)."""

    def set_sample_rate(self, rate_hz: float) -> None: ...
    def upload_segment(self, segment: int, samples_v: np.ndarray, *, amplitude_vpp: float,
                       offset_v: float) -> None:
        """``samples_v``: volts at the output, within ±amplitude/2 about ``offset_v``."""
    def set_output(self, output: int, on: bool) -> None: ...


@runtime_checkable
class Attenuator(Device, Protocol):
    """A variable optical attenuator (the seed's Sercalo VP1)."""

    def set_attenuation(self, db: float) -> None: ...
    def attenuation(self) -> float:
        """Attenuation in dB."""


@runtime_checkable
class AnalogOut(Device, Protocol):
    def set_voltage(self, pin: str, volts: float) -> None: ...


@runtime_checkable
class AnalogIn(Device, Protocol):
    def read_voltage(self, pin: str) -> float: ...


@runtime_checkable
class PiezoDriver(Device, Protocol):
    """High-voltage piezo driver (fiber stretcher)."""

    def set_voltage(self, volts: float) -> None: ...
    def voltage(self) -> float: ...
    @property
    def voltage_range(self) -> tuple[float, float]: ...


@runtime_checkable
class DetectorBias(Device, Protocol):
    """Bias source of a superconducting nanowire detector."""

    def set_bias(self, volts: float) -> None: ...
    def bias(self) -> float: ...
    def set_output(self, on: bool) -> None: ...
    def reset_latch(self, settle_s: float = 0.1) -> None:
        """Bias to zero and back to un-latch the nanowire."""


@runtime_checkable
class TimeTagger(Device, Protocol):
    """Time-tagging card (TimeHarp 260)."""

    def start(self, acquisition_time_s: float) -> None:
        """Start a measurement of ``acquisition_time_s``; records stream in the background."""
    def stop(self) -> None: ...
    def read_records(self, timeout: float = 0.0) -> np.ndarray:
        """Raw 32-bit TTTR records that arrived since the last call (waits up to ``timeout`` s)."""
    def wait(self, timeout: float | None = None) -> bool:
        """True once the measurement has finished and every record was read out."""


@runtime_checkable
class LockIn(Device, Protocol):
    """Lock-in amplifier recording demodulated quadratures (the parametric experiment)."""

    def configure_reference(self, frequency_hz: float, phase_deg: float = 0.0, source: str = "internal") -> None: ...
    def configure_filter(self, time_constant_s: float, slope_db: int) -> None: ...
    def acquire_xy(self, n_samples: int, rate_hz: float, **kw: Any) -> np.ndarray:
        """(n_samples, 2) array of X, Y in volts."""


ROLES: dict[str, type] = {
    "laser": Laser, "pulse_generator": PulseGenerator, "waveform_generator": WaveformGenerator,
    "attenuator": Attenuator, "analog_out": AnalogOut, "analog_in": AnalogIn,
    "piezo_driver": PiezoDriver, "detector_bias": DetectorBias, "time_tagger": TimeTagger,
    "lockin": LockIn,
}


def check_role(instrument: object, role: str) -> list[str]:
    """Names of the protocol methods ``instrument`` lacks for ``role`` (empty if it fits)."""
    proto = ROLES[role]
    wanted = [n for n in dir(proto) if not n.startswith("_") and n not in ("name",)]
    return [n for n in wanted if not hasattr(instrument, n)]


def roles_list() -> Sequence[str]:
    return tuple(ROLES)
