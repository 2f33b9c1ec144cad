"""Red Pitaya STEMlab 125-14 through its SCPI server: balanced-detector readout and filter piezos.

In the seed's setup the auxiliary-pulse fringe of the balanced detector is digitised for the phase
lock, and slow analog outputs drive the MicronOptics FFP-TF2 filter piezo (amplifier) inputs.

Transport: TCP socket, port 5000, CR LF both ways (``TCPIP::rp-f0a1b2.local::5000::SOCKET``); start
the SCPI server on the board first (web interface, or ``systemctl start redpitaya_scpi``).

Commands (Red Pitaya documentation "SCPI commands" — analog I/O, digital I/O, acquisition — and the
server's command table ``RedPitaya/RedPitaya: scpi-server/src/scpi-commands.cpp``, handlers in
``apin.cpp``, ``dpin.cpp``, ``acquire.cpp``):

* ``ANALOG:PIN AOUT0,1.34`` / ``ANALOG:PIN? AOUT0`` — slow analog outputs AOUT0–AOUT3, 0–1.8 V;
* ``ANALOG:PIN? AIN0`` — slow analog inputs AIN0–AIN3, 0–3.3 V;
* ``DIG:PIN DIO0_P,1`` / ``DIG:PIN? DIO0_P`` / ``DIG:PIN:DIR OUT,DIO0_P`` — LED0–7, DIO0–7_P/N;
* acquisition: ``ACQ:RST``, ``ACQ:DATA:FORMAT ASCII``, ``ACQ:DATA:UNITS VOLTS``, ``ACQ:DEC <n>``
  (1, 2, 4, …, 65536), ``ACQ:SOUR<n>:GAIN LV|HV`` (must match the input jumpers: ±1 V or ±20 V),
  ``ACQ:TRIG:DLY <samples>``, ``ACQ:TRIG:LEV <V>``, ``ACQ:START``, ``ACQ:TRIG NOW|CH1_PE|EXT_PE|…``,
  ``ACQ:TRIG:STAT?`` (``WAIT`` / ``TD``), ``ACQ:TRIG:FILL?`` (1 when the buffer is full, OS ≥ 2.0),
  ``ACQ:SOUR<n>:DATA:OLD:N? <n>`` -> ``{v1,v2,…}``;
* ``SYST:ERR?`` — ``0,"No error"``; SCPI parser errors (``-113``, ``-109``) and the server's own
  (``9000,"Failed to set pin value: …"``); read after every set.

Assumptions: ``ACQ:TRIG:DLY 8192`` puts the trigger at the start of the 16384-sample buffer, so the
oldest ``n`` samples are the ``n`` samples after the trigger (the documented default, 0, puts it in
the middle); the ASCII trace is ``{…}`` with comma-separated volts. Binary transfer
(``ACQ:DATA:FORMAT BIN``) is not used: 16384 ASCII samples are ~150 kB, fast enough for the lock.

Driver options: ``fast_input_gain`` (``{1: LV, 2: LV}``; set it to the jumpers), ``trigger_timeout``
(default ``"5 s"``), ``wait_fill`` (poll ``ACQ:TRIG:FILL?`` after the trigger, default true; set
false for OS < 2.0), ``poll_interval`` (default ``"2 ms"``). Station limits narrow
``aout0.voltage`` … (e.g. to what the filter piezo amplifier accepts).

``safe_state()``: every slow analog output to 0 V.
"""
from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np

from labctl import units as _units
from labctl.errors import InputError, InstrumentError, LabctlError, SettingError
from labctl.instrument.base import Component, Instrument, Setting

log = logging.getLogger("labctl.drivers.redpitaya")

BUFFER_SIZE = 16384
DECIMATIONS = tuple(2 ** k for k in range(17))  # 1 … 65536
TRIGGERS = ("NOW", "CH1_PE", "CH1_NE", "CH2_PE", "CH2_NE", "EXT_PE", "EXT_NE", "AWG_PE", "AWG_NE")
GAINS = ("LV", "HV")
FULL_SCALE = {"LV": 1.0, "HV": 20.0}
AOUT_PINS = tuple(f"AOUT{i}" for i in range(4))
AIN_PINS = tuple(f"AIN{i}" for i in range(4))
FAST_INPUTS = {"IN1": 1, "IN2": 2}
DIGITAL_PINS = tuple([f"LED{i}" for i in range(8)] + [f"DIO{i}_P" for i in range(8)] + [f"DIO{i}_N" for i in range(8)])


class AnalogOutPin(Component):
    """A slow analog output (PWM + filter), 0–1.8 V."""

    voltage = Setting("ANALOG:PIN? {pin}", "ANALOG:PIN {pin},{value}", unit="V", limits=(0.0, 1.8),
                      fmt="{:.5g}", doc="slow analog output voltage")


class AnalogInPin(Component):
    """A slow analog input (XADC), 0–3.3 V."""

    voltage = Setting("ANALOG:PIN? {pin}", None, unit="V", doc="slow analog input voltage")


class RedPitaya(Instrument):
    """Red Pitaya STEMlab 125-14 SCPI server; roles ``analog_in`` and ``analog_out``."""

    model = "Red Pitaya STEMlab 125-14"
    roles = ("analog_in", "analog_out")
    read_termination = "\r\n"
    write_termination = "\r\n"
    timeout = 5.0
    error_query = "SYST:ERR?"
    idn_query = "*IDN?"
    simulator = "sim_instruments.models.redpitaya:RedPitayaModel"
    components = {**{p.lower(): (AnalogOutPin, {"pin": p}) for p in AOUT_PINS},
                  **{p.lower(): (AnalogInPin, {"pin": p}) for p in AIN_PINS}}

    decimation = Setting("ACQ:DEC?", "ACQ:DEC {value}", choices=DECIMATIONS, parse=int, fmt="{:.0f}",
                         doc="acquisition decimation (sample rate 125 MS/s / decimation)")
    trigger_delay = Setting("ACQ:TRIG:DLY?", "ACQ:TRIG:DLY {value}", limits=(-BUFFER_SIZE, 2 ** 31 - 1), step=1,
                            parse=int, fmt="{:.0f}", doc="trigger delay in decimated samples")
    trigger_level = Setting("ACQ:TRIG:LEV?", "ACQ:TRIG:LEV {value}", unit="V", limits=(-20.0, 20.0),
                            fmt="{:.5g}", doc="trigger level for CHn_PE/NE triggers")
    data_units = Setting("ACQ:DATA:UNITS?", "ACQ:DATA:UNITS {value}", choices=("VOLTS", "RAW"), parse=str,
                         doc="units of returned traces")

    def __init__(self, name: str, transport: Any, **options: Any) -> None:
        super().__init__(name, transport, **options)
        gains = {1: "LV", 2: "LV"}
        given = options.get("fast_input_gain", {}) or {}
        if not isinstance(given, dict):
            raise InputError(f"{name}.options.fast_input_gain must map channel to LV or HV",
                             fix="e.g. fast_input_gain: {1: LV, 2: HV}")
        for ch, g in given.items():
            try:
                c = int(str(ch).upper().removeprefix("IN"))
            except ValueError:
                c = 0
            if c not in (1, 2) or str(g).upper() not in GAINS:
                raise InputError(f"{name}.options.fast_input_gain: {ch!r}: {g!r} is not a channel 1/2 with LV or HV",
                                 fix="e.g. fast_input_gain: {1: LV, 2: HV}")
            gains[c] = str(g).upper()
        self.fast_input_gain = gains
        self.trigger_timeout = _units.parse_as(options.get("trigger_timeout", "5 s"), "s",
                                               where=f"{name}.options.trigger_timeout")
        self.poll_interval = _units.parse_as(options.get("poll_interval", "2 ms"), "s",
                                             where=f"{name}.options.poll_interval")
        self.wait_fill = bool(options.get("wait_fill", True))

    def connect(self) -> None:
        """Discard error-queue entries left by earlier sessions."""
        stale = []
        for _ in range(32):
            msg = self.parse_error(self.query(self.error_query))
            if msg is None:
                break
            stale.append(msg)
        if stale:
            log.warning("%s: discarded stale errors: %s", self.name, "; ".join(stale))

    # -- pins -----------------------------------------------------------------------------------
    def _pin(self, pin: Any, allowed: tuple[str, ...], what: str) -> str:
        name = pin.strip().upper() if isinstance(pin, str) else None
        if name not in allowed:
            raise SettingError(self.name, what, pin, "pins " + ", ".join(allowed))
        return name

    def set_voltage(self, pin: str, volts: float | str) -> None:
        """Slow analog output ``AOUT0``–``AOUT3`` to ``volts`` (0–1.8 V, or the station's limits)."""
        p = self._pin(pin, AOUT_PINS, "pin")
        self._components[p.lower()].voltage = volts

    def read_voltage(self, pin: str) -> float:
        """Volts at ``AIN0``–``AIN3`` (slow inputs), ``AOUT0``–``AOUT3`` (set point read back) or
        ``IN1``/``IN2`` (mean of a 1024-sample fast acquisition, decimation 64, trigger NOW)."""
        p = self._pin(pin, AIN_PINS + AOUT_PINS + tuple(FAST_INPUTS), "pin")
        if p in FAST_INPUTS:
            return float(np.mean(self.acquire(1024, decimation=64, trigger="NOW", channel=FAST_INPUTS[p])))
        return self._components[p.lower()].voltage

    def set_digital(self, pin: str, state: bool) -> None:
        """Digital pin ``LED0``–``7``, ``DIO0_P``–``DIO7_N`` high (True) or low."""
        p = self._pin(pin, DIGITAL_PINS, "digital pin")
        if not isinstance(state, bool):
            raise SettingError(self.name, f"digital {p}", state, "True or False")
        cmd = f"DIG:PIN {p},{int(state)}"
        self.write(cmd)
        self.check_errors(cmd)

    def digital(self, pin: str) -> bool:
        p = self._pin(pin, DIGITAL_PINS, "digital pin")
        reply = self.query(f"DIG:PIN? {p}").strip()
        if reply not in ("0", "1"):
            raise InstrumentError(self.name, f"DIG:PIN? {p}", f"unexpected reply {reply!r}")
        return reply == "1"

    def set_digital_direction(self, pin: str, direction: str) -> None:
        p = self._pin(pin, DIGITAL_PINS, "digital pin")
        d = direction.strip().upper() if isinstance(direction, str) else None
        if d not in ("IN", "OUT"):
            raise SettingError(self.name, f"direction of {p}", direction, "IN or OUT")
        cmd = f"DIG:PIN:DIR {d},{p}"
        self.write(cmd)
        self.check_errors(cmd)

    # -- acquisition ------------------------------------------------------------------------------
    def acquire(self, n_samples: int, decimation: int = 1, trigger: str = "NOW", *, channel: int = 1,
                trigger_delay: int | None = None, trigger_level: float | str | None = None,
                timeout_s: float | None = None) -> np.ndarray:
        """One triggered acquisition of ``n_samples`` (≤ 16384) on fast input ``channel``, in volts.

        ``trigger``: ``NOW``, ``CH1_PE``, ``CH1_NE``, ``CH2_PE``, ``CH2_NE``, ``EXT_PE``, ``EXT_NE``,
        ``AWG_PE``, ``AWG_NE``. ``trigger_delay`` (decimated samples) defaults to 8192, so the samples
        start at the trigger. Waits up to ``timeout_s`` (option ``trigger_timeout``) for ``TD``.
        """
        n = self._check_int("n_samples", n_samples, 1, BUFFER_SIZE)
        if isinstance(decimation, bool) or decimation not in DECIMATIONS:
            raise SettingError(self.name, "decimation", decimation, "1, 2, 4, … 65536")
        trig = trigger.strip().upper() if isinstance(trigger, str) else None
        if trig not in TRIGGERS:
            raise SettingError(self.name, "trigger", trigger, ", ".join(TRIGGERS))
        if isinstance(channel, bool) or channel not in (1, 2):
            raise SettingError(self.name, "channel", channel, "1 or 2")
        delay = BUFFER_SIZE // 2 if trigger_delay is None else \
            self._check_int("trigger_delay", trigger_delay, -BUFFER_SIZE, 2 ** 31 - 1)
        level = None if trigger_level is None else type(self).trigger_level.validate(self, trigger_level)
        limit = self.trigger_timeout if timeout_s is None else timeout_s
        if isinstance(limit, bool) or not isinstance(limit, (int, float)) or not (math.isfinite(limit) and limit > 0):
            raise SettingError(self.name, "timeout_s", timeout_s, "positive numbers of seconds", "s")

        setup = ["ACQ:RST", "ACQ:DATA:FORMAT ASCII", "ACQ:DATA:UNITS VOLTS", f"ACQ:DEC {decimation}",
                 f"ACQ:SOUR{channel}:GAIN {self.fast_input_gain[channel]}", f"ACQ:TRIG:DLY {delay}"]
        if level is not None:
            setup.append(f"ACQ:TRIG:LEV {level:.5g}")
        for cmd in setup:
            self.write(cmd)
        self.check_errors("; ".join(setup))
        self.write("ACQ:START")
        self.write(f"ACQ:TRIG {trig}")
        self._wait_for("ACQ:TRIG:STAT?", "TD", limit, f"no {trig} trigger")
        if self.wait_fill:
            self._wait_for("ACQ:TRIG:FILL?", "1", limit, "acquisition buffer not filled")
        query = f"ACQ:SOUR{channel}:DATA:OLD:N? {n}"
        data = self._parse_trace(query, self.query(query))
        self.check_errors(query)
        if data.size != n:
            raise InstrumentError(self.name, query, f"returned {data.size} samples, {n} requested")
        return data

    def _wait_for(self, query: str, wanted: str, limit: float, what: str) -> None:
        deadline = time.monotonic() + limit
        while True:
            reply = self.query(query).strip().upper()
            if reply == wanted:
                return
            if time.monotonic() > deadline:
                self.write("ACQ:STOP")
                raise InstrumentError(self.name, query, f"{what} within {limit:g} s (last reply {reply!r})")
            time.sleep(self.poll_interval)

    def _parse_trace(self, query: str, reply: str) -> np.ndarray:
        text = reply.strip()
        if not (text.startswith("{") and text.endswith("}")):
            raise InstrumentError(self.name, query, f"unexpected trace reply {text[:60]!r}")
        body = text[1:-1].strip()
        if not body:
            return np.zeros(0)
        try:
            return np.array([float(v) for v in body.split(",")], dtype=float)
        except ValueError:
            raise InstrumentError(self.name, query, f"unreadable trace reply {text[:60]!r}…") from None

    def _check_int(self, what: str, value: Any, low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
            raise SettingError(self.name, what, value, f"whole numbers {low} to {high}")
        return int(value)

    # -- safety ---------------------------------------------------------------------------------
    def safe_state(self) -> None:
        """All slow analog outputs to 0 V (each one tried even if another fails)."""
        failures = []
        for p in AOUT_PINS:
            try:
                self._components[p.lower()].voltage = 0.0
            except (LabctlError, OSError) as e:
                failures.append(f"{p}: {e}")
        if failures:
            raise InstrumentError(self.name, "safe_state", "; ".join(failures))
