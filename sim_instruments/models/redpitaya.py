"""Simulator of a Red Pitaya STEMlab 125-14 running its SCPI server (TCP port 5000, CR LF).

The plain commands (identity, analog-output set points, acquisition settings) come from
``sim_instruments/visa/redpitaya.yaml``; Python handlers add what YAML cannot express:

* the acquisition state machine: ``ACQ:START`` arms, ``ACQ:TRIG NOW`` triggers at once, any other
  source triggers after ``trigger_polls`` ``ACQ:TRIG:STAT?`` polls (the experiment's trigger
  arriving) unless ``external_trigger`` is False; ``ACQ:TRIG:STAT?`` answers ``WAIT`` / ``TD``;
  ``ACQ:TRIG:FILL?`` 0 / 1; ``ACQ:RST`` restores VOLTS / ASCII as the server does;
* traces: ``ACQ:SOUR<n>:DATA?`` (whole 16384-sample buffer), ``…:DATA:OLD:N? <n>``,
  ``…:DATA:LAT:N? <n>``, ``…:DATA:STArt:N? <start>,<n>`` in ASCII ``{v1,v2,…}`` (volts or raw
  14-bit codes) or as a binary block of big-endian float32 / int16 (``ACQ:DATA:FORMAT BIN``);
* the slow inputs ``ANALOG:PIN? AIN0``–``AIN3`` (0–3.3 V) and fast-input traces computed by the
  digital twin: set ``input_source(pin, t) -> volts`` and ``trace_source(channel, n) -> ndarray``;
  by default they return the YAML constants / a realistic offset, plus noise;
* the server's own errors: an analog output outside 0–1.8 V is refused with
  ``9000,"Failed to set pin value: …"`` in ``SYST:ERR?`` (the server's ``RP_ERR_CODE``), a missing or
  unreadable parameter with ``-109,"Missing parameter"``, unknown commands with ``-113``;
* digital pins ``DIG:PIN``, ``DIG:PIN?``, ``DIG:PIN:DIR``, ``DIG:PIN:DIR?``, ``DIG:RST`` (LED0–7,
  DIO0_P–DIO7_P, DIO0_N–DIO7_N).

State for the twin: ``prop("aout0")`` … (analog-output set points), ``digital`` (pin -> 0/1),
``armed``, ``triggered``.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from .base import YamlScpiModel

BUFFER_SIZE = 16384
MISSING_PARAMETER = '-109,"Missing parameter"'
FULL_SCALE = {"LV": 1.0, "HV": 20.0}
DIGITAL_PINS = [f"LED{i}" for i in range(8)] + [f"DIO{i}_P" for i in range(8)] + [f"DIO{i}_N" for i in range(8)]
TRIGGER_SOURCES = {"DISABLED", "NOW", "CH1_PE", "CH1_NE", "CH2_PE", "CH2_NE", "EXT_PE", "EXT_NE", "AWG_PE", "AWG_NE"}


def _rp_error(text: str) -> str:
    return f'9000,"{text}"'


class RedPitayaModel(YamlScpiModel):
    yaml_file = "redpitaya.yaml"
    yaml_resource = "TCPIP0::rp-f0a1b2.local::5000::SOCKET"
    error_query = "SYST:ERR?"
    in_terminator = b"\r\n"
    out_terminator = b"\r\n"
    handlers = [
        (r"\*RST", "_rst"),
        (r"ANALOG:PIN\s+(AOUT[0-3])\s*,\s*(\S*)", "_set_aout"),
        (r"ANALOG:PIN\s+(\S+?)\s*(?:,.*)?", "_bad_pin"),
        (r"ANALOG:PIN\?\s+(AIN[0-3])", "_get_ain"),
        (r"ACQ:RST", "_acq_rst"),
        (r"ACQ:DEC\s+(\S*)", "_acq_dec"),
        (r"ACQ:START", "_acq_start"),
        (r"ACQ:STOP", "_acq_stop"),
        (r"ACQ:TRIG\s+(\S+)", "_acq_trig"),
        (r"ACQ:TRIG:STAT\?", "_acq_trig_stat"),
        (r"ACQ:TRIG:FILL\?", "_acq_fill"),
        (r"ACQ:SOUR([12]):DATA\?", "_data_all"),
        (r"ACQ:SOUR([12]):DATA:OLD:N\?\s+(\S+)", "_data_old"),
        (r"ACQ:SOUR([12]):DATA:LAT:N\?\s+(\S+)", "_data_latest"),
        (r"ACQ:SOUR([12]):DATA:STA(?:RT)?:N\?\s+(\S+)\s*,\s*(\S+)", "_data_start_n"),
        (r"DIG:RST", "_dig_rst"),
        (r"DIG:PIN\s+(\w+)\s*,\s*(\S*)", "_dig_set"),
        (r"DIG:PIN\?\s+(\w+)", "_dig_get"),
        (r"DIG:PIN:DIR\s+(\w+)\s*,\s*(\w+)", "_dig_dir"),
        (r"DIG:PIN:DIR\?\s+(\w+)", "_dig_dir_q"),
    ]

    def __init__(self, name: str = "", **options: Any) -> None:
        super().__init__(name, **options)
        #: ``(pin, t) -> volts`` for ``ANALOG:PIN? AINn`` (the digital twin sets it); None: default
        self.input_source: Callable[[str, float], float] | None = None
        #: ``(channel, n_samples) -> volts`` for fast-input traces (the twin sets it); None: default
        self.trace_source: Callable[[int, int], np.ndarray] | None = None
        #: the clock passed to ``input_source`` (seconds)
        self.clock: Callable[[], float] = time.monotonic
        self.noise_v = float(options.get("noise_v", 0.002))
        self.offsets_v = {1: float(options.get("in1_offset_v", 0.05)), 2: float(options.get("in2_offset_v", -0.03))}
        self.trigger_polls = int(options.get("trigger_polls", 1))
        self.external_trigger = bool(options.get("external_trigger", True))
        self._rng = np.random.default_rng(options.get("seed"))
        self._reset_runtime()

    def _reset_runtime(self) -> None:
        self.armed = False
        self.triggered = False
        self._polls_left = 0
        self._buffers: dict[int, np.ndarray] = {}
        self.digital = {p: 0 for p in DIGITAL_PINS}
        self.direction = {p: ("OUT" if p.startswith("LED") else "IN") for p in DIGITAL_PINS}

    @property
    def rng(self) -> np.random.Generator:
        return self.lab.rng if self.lab is not None and getattr(self.lab, "rng", None) is not None else self._rng

    def power_cycle(self) -> None:
        super().power_cycle()
        self._reset_runtime()

    # -- defaults for the twin's hooks ---------------------------------------------------------
    def default_input(self, pin: str, t: float) -> float:
        """A slow input: the YAML constant plus 1 mV of noise."""
        return float(self.prop(pin.lower())) + float(self.rng.normal(0.0, 0.001))

    def default_trace(self, channel: int, n: int) -> np.ndarray:
        """A fast input: the balanced detector's offset plus white noise (``noise_v`` rms)."""
        return self.offsets_v[channel] + self.rng.normal(0.0, self.noise_v, n)

    def _trace(self, channel: int, n: int) -> np.ndarray:
        src = self.trace_source or self.default_trace
        data = np.asarray(src(channel, n), dtype=float).reshape(-1)
        if data.size != n:
            raise ValueError(f"trace_source returned {data.size} samples, {n} requested")
        fs = FULL_SCALE[str(self.prop(f"in{channel}_gain"))]
        return np.clip(data, -fs, fs * (8191 / 8192))

    # -- handlers ------------------------------------------------------------------------------
    def _rst(self, m) -> None:
        self.device = self._load_device()
        self._reset_runtime()
        return None

    def _set_aout(self, m) -> None:
        pin, arg = m.group(1).upper(), m.group(2)
        try:
            value = float(arg)
        except ValueError:
            self.push_error(MISSING_PARAMETER)
            return None
        if not (0.0 <= value <= 1.8):
            self.push_error(_rp_error("Failed to set pin value: Value out of range"))
            return None
        self.set_prop(pin.lower(), value)
        return None

    def _bad_pin(self, m) -> None:
        self.push_error(MISSING_PARAMETER)
        return None

    def _get_ain(self, m) -> str:
        pin = m.group(1).upper()
        src = self.input_source or self.default_input
        value = float(np.clip(src(pin, self.clock()), 0.0, 3.3))
        return f"{value:.5g}"

    def _acq_rst(self, m) -> None:
        self.set_prop("data_units", "VOLTS")
        self.set_prop("data_format", "ASCII")
        self.set_prop("trigger_source", "DISABLED")
        self.set_prop("decimation", 1)
        self.set_prop("trigger_delay", 0)
        self.armed = self.triggered = False
        self._buffers.clear()
        return None

    def _acq_dec(self, m) -> None:
        # the server answers an invalid factor with "Parameter decimation is invalid." (-109)
        try:
            self.device._properties["decimation"].validate_value(m.group(1))
        except ValueError:
            self.push_error(MISSING_PARAMETER)
            return None
        self.set_prop("decimation", m.group(1))
        return None

    def _acq_start(self, m) -> None:
        self.armed, self.triggered = True, False
        self._buffers.clear()
        return None

    def _acq_stop(self, m) -> None:
        self.armed = False
        return None

    def _acq_trig(self, m) -> None:
        src = m.group(1).upper()
        if src not in TRIGGER_SOURCES:
            self.push_error(MISSING_PARAMETER)
            return None
        self.set_prop("trigger_source", src)
        self.triggered = False
        if src == "NOW" and self.armed:
            self._fire()
        elif src != "DISABLED":
            self._polls_left = self.trigger_polls
        return None

    def _fire(self) -> None:
        self.triggered = True
        self.set_prop("trigger_source", "DISABLED")
        self._buffers = {ch: self._trace(ch, BUFFER_SIZE) for ch in (1, 2)}

    def _acq_trig_stat(self, m) -> str:
        if not self.triggered and self.armed and self.external_trigger and self.prop("trigger_source") != "DISABLED":
            if self._polls_left <= 0:
                self._fire()
            else:
                self._polls_left -= 1
        return "TD" if self.triggered else "WAIT"

    def _acq_fill(self, m) -> str:
        return "1" if self.triggered else "0"

    def _buffer(self, ch: int) -> np.ndarray:
        if ch not in self._buffers:  # not triggered: whatever the ADC holds now
            self._buffers[ch] = self._trace(ch, BUFFER_SIZE)
        return self._buffers[ch]

    def _count(self, text: str, low: int = 1) -> int | None:
        try:
            n = int(text)
        except ValueError:
            return None
        return n if low <= n <= BUFFER_SIZE else None

    def _format(self, ch: int, data: np.ndarray) -> str | bytes:
        raw = str(self.prop("data_units")) == "RAW"
        binary = str(self.prop("data_format")) == "BIN"
        if raw:
            fs = FULL_SCALE[str(self.prop(f"in{ch}_gain"))]
            codes = np.clip(np.round(data / fs * 8192), -8192, 8191).astype(np.int16)
            if binary:
                payload = codes.astype(">i2").tobytes()
            else:
                return "{" + ",".join(str(int(c)) for c in codes) + "}"
        else:
            if binary:
                payload = data.astype(">f4").tobytes()
            else:
                return "{" + ",".join(f"{v:.6g}" for v in data) + "}"
        length = str(len(payload))
        return f"#{len(length)}{length}".encode() + payload

    def _data_all(self, m) -> str | bytes:
        ch = int(m.group(1))
        return self._format(ch, self._buffer(ch))

    def _data_old(self, m) -> str | bytes | None:
        ch, n = int(m.group(1)), self._count(m.group(2))
        if n is None:
            self.push_error(MISSING_PARAMETER)
            return None
        return self._format(ch, self._buffer(ch)[:n])

    def _data_latest(self, m) -> str | bytes | None:
        ch, n = int(m.group(1)), self._count(m.group(2))
        if n is None:
            self.push_error(MISSING_PARAMETER)
            return None
        return self._format(ch, self._buffer(ch)[-n:])

    def _data_start_n(self, m) -> str | bytes | None:
        ch, start, n = int(m.group(1)), self._count(m.group(2), 0), self._count(m.group(3))
        if start is None or n is None or start >= BUFFER_SIZE:
            self.push_error(MISSING_PARAMETER)
            return None
        buf = self._buffer(ch)
        return self._format(ch, np.take(buf, range(start, start + n), mode="wrap"))

    def _dig_rst(self, m) -> None:
        self.digital = {p: 0 for p in DIGITAL_PINS}
        self.direction = {p: ("OUT" if p.startswith("LED") else "IN") for p in DIGITAL_PINS}
        return None

    def _pin(self, name: str) -> str | None:
        pin = name.upper()
        if pin not in self.digital:
            self.push_error(MISSING_PARAMETER)
            return None
        return pin

    def _dig_set(self, m) -> None:
        pin = self._pin(m.group(1))
        if pin is None:
            return None
        if m.group(2) not in ("0", "1"):
            self.push_error(_rp_error("Failed to set pin state: Value out of range"))
            return None
        self.digital[pin] = int(m.group(2))
        return None

    def _dig_get(self, m) -> str | None:
        pin = self._pin(m.group(1))
        return None if pin is None else str(self.digital[pin])

    def _dig_dir(self, m) -> None:
        direction = m.group(1).upper()
        if direction not in ("IN", "OUT"):
            self.push_error(MISSING_PARAMETER)
            return None
        pin = self._pin(m.group(2))
        if pin is not None:
            self.direction[pin] = direction
        return None

    def _dig_dir_q(self, m) -> str | None:
        pin = self._pin(m.group(1))
        return None if pin is None else self.direction[pin]


def decode_float_block(block: bytes) -> np.ndarray:
    """Big-endian float32 payload of a ``#<n><len><data>`` reply (``ACQ:DATA:FORMAT BIN``)."""
    n = int(block[1:2])
    length = int(block[2:2 + n])
    return np.frombuffer(block[2 + n:2 + n + length], dtype=">f4").astype(float)
