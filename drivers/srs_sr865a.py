"""Stanford Research Systems SR865A 4 MHz DSP lock-in amplifier: the quadrature readout of the
steady-state parametric-entanglement experiment (one lock-in per oscillator, referenced at the
half drive frequency ω_d, capturing X and Y into its internal buffer).

Command set: *SR865A DSP Lock-in Amplifier Operation Manual*, chapter 4 "Programming" (the
SR860-series command set; "Data Capture Commands", manual pp. 134–139). Checked against public
drivers written from it (none of their code is used here):

* QCoDeS ``qcodes/instrument_drivers/stanford_research/SR86x.py`` (and ``SR865A.py``: the
  SR86x class with a 4 MHz frequency limit): ``FREQ``, ``PHAS``, ``HARM``, ``SLVL``, ``SOFF``,
  ``SCAL`` (0 = 1 V … 27 = 1 nV), ``OFLT`` (0 = 1 µs … 21 = 30 ks), ``OFSL`` (0…3 = 6…24 dB/oct),
  ``SYNC``, ``ADVFILT``, ``ENBW?``, ``IVMD``, ``ISRC``, ``ICPL``, ``IGND``, ``IRNG``, ``RSRC``,
  ``RTRG``, ``REFZ``, ``OUTP? 0…3``, ``SNAP? 0,1``, ``AUXV i, v`` (i = 0…3), ``CAPTURELEN``
  (kB, even, ≤ 4096), ``CAPTURECFG`` (0 X, 1 XY, 2 RT, 3 XYRT), ``CAPTURERATEMAX?``,
  ``CAPTURERATE n`` (rate = max/2^n, n = 0…20; the query answers Hz), ``CAPTURESTART ONE|CONT,
  IMM|TRIG|SAMP``, ``CAPTURESTOP``, ``CAPTURESTAT?``, ``CAPTUREBYTES?``, ``CAPTUREPROG?``,
  ``CAPTUREGET? i,j`` read with ``is_big_endian=False`` and *no* terminator after the block;
* Stanford Research Systems' own ``thinkSRS/srsinst.sr860`` (``instruments/components.py``): the
  same commands and index tables, ``TBMODE``, ``CAPTUREVAL?``;
* PyMeasure ``pymeasure/instruments/srs/sr860.py``: ``OUTP?``, ``SNAP?``, ``OFLT``, ``OFSL``,
  ``ISRC``, ``RSRC`` (its ascending ``SENSITIVITIES`` list contradicts the manual's and both
  other drivers' 0 = 1 V order; not followed).

Manual text used directly (SR865A manual p. 134, 139): the capture buffer holds 2 kB … 4 MB in
2 kB blocks, "stored and transferred in little endian byte order", 32-bit floats; "the maximum
capture rate is determined by the time constant … up to a limit of 1.25 MHz … the maximum
allowed rate divided by factors of 2"; ``CAPTUREGET? i,j`` returns j ≤ 64 kB from offset i kB as
``#nccc…`` and "capture must be stopped … or a range error is generated". (srsinst unpacks the
block big-endian; the manual and QCoDeS — tested on SR860/SR865 hardware — say little endian.)

Errors: SRS instruments have no ``SYST:ERR?`` queue. The IEEE-488.2 standard event status
register ``*ESR?`` (read clears it) flags bit 2 QRY (query error), bit 4 EXE (execution error:
out-of-range parameter, CAPTUREGET? while capturing), bit 5 CMD (unrecognised command); the
driver reads it after every set. ``LIAS?`` (LIA status: overloads, reference unlock) is returned
raw by :meth:`SR865A.lia_status` — its bit assignment was not verified against the manual here.

Assumptions: commands are sent in the manual's short forms, integer indices for enumerated
settings (the instrument also accepts tokens), ``*CLS`` on connect clears stale status bits.

Driver options: ``oscillator`` (1 or 2: which oscillator this lock-in measures, for the
parametric runner and the simulator), ``capture_timeout`` (default ``"30 s"`` beyond the capture
time), ``poll_interval`` (default ``"50 ms"``).

``safe_state()``: capture stopped, sine output to 0 V amplitude and 0 V offset, aux outputs 0 V.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from labctl import units as _units
from labctl.errors import InputError, InstrumentError, SettingError
from labctl.instrument.base import Component, Instrument, Setting, on_off

MAX_FREQUENCY = 4e6                      #: SR865A reference frequency limit (Hz)
MIN_FREQUENCY = 1e-3
MAX_CAPTURE_RATE = 1.25e6                #: Hz (manual p. 134)
CAPTURE_KB = (2, 4096)                   #: even kB
MAX_GET_KB = 64                          #: per CAPTUREGET?
RATE_EXPONENTS = (0, 20)
#: SCAL index -> full scale (V): 0 = 1 V, 1 = 500 mV, 2 = 200 mV, … 27 = 1 nV
SENSITIVITIES = tuple(float(f"{m}e{-e}") for e in range(0, 10) for m in ((1,) if e == 0 else (5, 2, 1)))[:28]
#: OFLT index -> time constant (s): 0 = 1 µs, 1 = 3 µs … 21 = 30 ks
TIME_CONSTANTS = tuple(float(f"{m}e{e}") for e in range(-6, 5) for m in (1, 3))
SLOPES = {6: "0", 12: "1", 18: "2", 24: "3"}
CAPTURE_CONFIGS = {"X": "0", "XY": "1", "RT": "2", "XYRT": "3"}
CAPTURE_VARS = {"X": ("X",), "XY": ("X", "Y"), "RT": ("R", "theta"), "XYRT": ("X", "Y", "R", "theta")}
ACQ_MODES = {"one": "ONE", "continuous": "CONT"}
TRIGGER_MODES = {"immediate": "IMM", "trigger": "TRIG", "sample": "SAMP"}
OUTPUTS = {"X": 0, "Y": 1, "R": 2, "theta": 3}
ESR_BITS = {2: "query error (QRY)", 4: "execution error (EXE): parameter out of range or not "
            "allowed now", 5: "command error (CMD): command not recognised"}

assert len(SENSITIVITIES) == 28 and SENSITIVITIES[0] == 1.0 and SENSITIVITIES[-1] == 1e-9
assert len(TIME_CONSTANTS) == 22


def _index_map(values: tuple[float, ...]) -> dict[float, str]:
    return {v: str(i) for i, v in enumerate(values)}


class _TableSetting(Setting):
    """A setting sent as an index into a table of physical values (SCAL, OFLT, IRNG).

    Accepts numbers or strings with units (``"10 us"``) and matches them to the table to 1e-9
    relative — ``10 us`` parses to 9.999999999999999e-06, which an exact lookup would refuse;
    anything else is a SettingError naming the allowed values, before anything is written."""

    def validate(self, comp: Any, value: Any) -> Any:
        v = value
        if isinstance(v, str):
            v = _units.parse_as(v, self.dim or "1", where=f"{comp.full_name}.{self.name}")
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise SettingError(comp.full_name, self.name, value, self._allowed(), self.unit)
        for key in self.mapping or {}:
            if abs(float(v) - key) <= 1e-9 * abs(key):
                return key
        raise SettingError(comp.full_name, self.name, value, self._allowed(), self.unit)

    def _allowed(self) -> str:
        keys = list(self.mapping or {})
        u = f" {self.unit}" if self.unit else ""
        return f"the values {keys[0]:g}{u} … {keys[-1]:g}{u} of the table ({len(keys)} steps)"


class AuxOut(Component):
    """Rear-panel auxiliary output ``AUXV {ch}`` (ch = 0…3), ±10.5 V."""

    voltage = Setting("AUXV? {ch}", "AUXV {ch}, {value}", unit="V", limits=(-10.5, 10.5),
                      fmt="{:.4f}", doc="aux output voltage")


@dataclass
class Capture:
    """One capture read back: ``data`` has one column per captured variable (``names``)."""

    data: np.ndarray
    names: tuple[str, ...]
    rate: float                   #: samples per second
    config: str

    def column(self, name: str) -> np.ndarray:
        return self.data[:, self.names.index(name)]

    @property
    def times(self) -> np.ndarray:
        return np.arange(len(self.data)) / self.rate


class SR865A(Instrument):
    """SRS SR865A lock-in amplifier; role ``lockin`` (:meth:`acquire_xy`)."""

    model = "Stanford Research Systems SR865A"
    roles = ("lockin",)
    read_termination = "\n"
    write_termination = "\n"
    timeout = 5.0
    error_query = "*ESR?"
    idn_query = "*IDN?"
    simulator = "sim_instruments.models.sr865a:SR865AModel"
    components = {f"aux{i}": (AuxOut, {"ch": i}) for i in range(4)}

    # -- reference ------------------------------------------------------------------------------
    frequency = Setting("FREQ?", "FREQ {value}", unit="Hz", limits=(MIN_FREQUENCY, MAX_FREQUENCY),
                        doc="reference frequency (internal reference; with an external reference "
                            "the query returns the measured one)")
    phase = Setting("PHAS?", "PHAS {value}", unit="deg", dim="", limits=(-360000.0, 360000.0),
                    fmt="{:.7g}", doc="reference phase shift in degrees")
    harmonic = Setting("HARM?", "HARM {value}", limits=(1, 99), step=1, fmt="{:.0f}",
                       parse=lambda t: int(float(t)), doc="detection harmonic")
    reference_source = Setting("RSRC?", "RSRC {value}",
                               mapping={"internal": "0", "external": "1", "dual": "2", "chop": "3"},
                               doc="reference source")
    reference_trigger = Setting("RTRG?", "RTRG {value}",
                                mapping={"sine": "0", "positive": "1", "negative": "2"},
                                doc="external reference: sine zero crossing or TTL edge")
    reference_impedance = Setting("REFZ?", "REFZ {value}", mapping={"50 Ohm": "0", "1 MOhm": "1"},
                                  doc="external reference input impedance")
    sine_amplitude = Setting("SLVL?", "SLVL {value}", unit="V", limits=(0.0, 2.0), fmt="{:.9g}",
                             doc="sine output amplitude")
    sine_offset = Setting("SOFF?", "SOFF {value}", unit="V", limits=(-5.0, 5.0), fmt="{:.4f}",
                          doc="sine output DC offset")
    timebase = Setting("TBMODE?", "TBMODE {value}", mapping={"auto": "0", "internal": "1"},
                       doc="10 MHz timebase: auto (lock to the rear input when present) or internal")
    # -- signal ---------------------------------------------------------------------------------
    input_mode = Setting("IVMD?", "IVMD {value}", mapping={"voltage": "0", "current": "1"},
                         doc="voltage or current input")
    input_config = Setting("ISRC?", "ISRC {value}", mapping={"A": "0", "A-B": "1"},
                           doc="voltage input A or differential A−B")
    input_coupling = Setting("ICPL?", "ICPL {value}", mapping={"ac": "0", "dc": "1"},
                             doc="input coupling")
    input_shield = Setting("IGND?", "IGND {value}", mapping={"float": "0", "ground": "1"},
                           doc="input shield grounding")
    input_range = _TableSetting("IRNG?", "IRNG {value}", unit="V",
                                mapping={1.0: "0", 0.3: "1", 0.1: "2", 0.03: "3", 0.01: "4"},
                                doc="voltage input range (V)")
    sensitivity = _TableSetting("SCAL?", "SCAL {value}", unit="V", mapping=_index_map(SENSITIVITIES),
                                doc="full-scale sensitivity (V in voltage mode)")
    time_constant = _TableSetting("OFLT?", "OFLT {value}", unit="s", mapping=_index_map(TIME_CONSTANTS),
                                  doc="output filter time constant (s)")
    filter_slope = Setting("OFSL?", "OFSL {value}", mapping=SLOPES,
                           doc="output filter slope (dB/oct): 6 dB per RC stage")
    sync_filter = Setting("SYNC?", "SYNC {value}", mapping=on_off("1", "0"),
                          doc="synchronous filter (below 4 kHz)")
    advanced_filter = Setting("ADVFILT?", "ADVFILT {value}", mapping=on_off("1", "0"),
                              doc="advanced filter (changes the filter response; keep off for the "
                                  "parametric analysis, which models plain RC stages)")
    noise_bandwidth = Setting("ENBW?", None, unit="Hz", doc="equivalent noise bandwidth")
    # -- outputs --------------------------------------------------------------------------------
    x = Setting("OUTP? 0", None, unit="V", snapshot=False, doc="X output")
    y = Setting("OUTP? 1", None, unit="V", snapshot=False, doc="Y output")
    r = Setting("OUTP? 2", None, unit="V", snapshot=False, doc="R output")
    theta = Setting("OUTP? 3", None, unit="deg", dim="", snapshot=False, doc="θ output (degrees)")
    # -- capture --------------------------------------------------------------------------------
    capture_length_kb = Setting("CAPTURELEN?", "CAPTURELEN {value}", limits=CAPTURE_KB, step=2,
                                fmt="{:.0f}", parse=lambda t: int(float(t)),
                                doc="capture buffer length (kB, even)")
    capture_config = Setting("CAPTURECFG?", "CAPTURECFG {value}", mapping=CAPTURE_CONFIGS,
                             doc="captured quantities")
    capture_rate = Setting("CAPTURERATE?", None, unit="Hz", doc="capture rate")
    capture_rate_max = Setting("CAPTURERATEMAX?", None, unit="Hz",
                               doc="largest capture rate at the present time constant")
    capture_rate_exponent = Setting(None, "CAPTURERATE {value}", limits=RATE_EXPONENTS, step=1,
                                    fmt="{:.0f}", doc="capture rate = maximum / 2^n")

    def __init__(self, name: str, transport: Any, **options: Any) -> None:
        super().__init__(name, transport, **options)
        osc = options.get("oscillator")
        if osc is not None and osc not in (1, 2):
            raise InputError(f"{name}: option oscillator = {osc!r} must be 1 or 2",
                             fix="oscillator: 1 (or 2): which oscillator this lock-in measures")
        self.oscillator: int | None = osc
        self.capture_timeout = _units.parse_as(options.get("capture_timeout", "30 s"), "s",
                                               where=f"{name}.capture_timeout")
        self.poll_interval = _units.parse_as(options.get("poll_interval", "50 ms"), "s",
                                             where=f"{name}.poll_interval")

    # -- errors ---------------------------------------------------------------------------------
    def parse_error(self, reply: str) -> str | None:
        """``*ESR?`` → None if no error bit (QRY, EXE, CMD) is set, else their names."""
        text = reply.strip()
        try:
            value = int(float(text))
        except ValueError:
            return f"unexpected *ESR? reply {text!r}"
        bad = [msg for bit, msg in ESR_BITS.items() if value & (1 << bit)]
        return f"*ESR? = {value}: " + "; ".join(bad) if bad else None

    def check_errors(self, command: str | None = None) -> None:
        """Read ``*ESR?`` once (reading clears it) and raise if an error bit was set."""
        msg = self.parse_error(self.query(self.error_query))
        if msg:
            raise InstrumentError(self.name, command, msg)

    def connect(self) -> None:
        self.write("*CLS")

    # -- reading --------------------------------------------------------------------------------
    def snap(self, *names: str) -> tuple[float, ...]:
        """2 or 3 outputs sampled at the same instant (``SNAP? 0,1`` for X, Y)."""
        names = names or ("X", "Y")
        if not 2 <= len(names) <= 3 or any(n not in OUTPUTS for n in names):
            raise InputError(f"snap() takes 2 or 3 of {', '.join(OUTPUTS)}, not {names!r}")
        cmd = "SNAP? " + ",".join(str(OUTPUTS[n]) for n in names)
        reply = self.query(cmd)
        try:
            vals = tuple(float(v) for v in reply.strip().split(","))
        except ValueError:
            raise InstrumentError(self.name, cmd, f"unexpected reply {reply!r}") from None
        if len(vals) != len(names):
            raise InstrumentError(self.name, cmd, f"expected {len(names)} values, got {reply!r}")
        return vals

    def xy(self) -> tuple[float, float]:
        x, y = self.snap("X", "Y")
        return x, y

    def lia_status(self) -> int:
        """``LIAS?``: the LIA status register (overloads, unlock), raw; reading clears it."""
        reply = self.query("LIAS?")
        try:
            return int(float(reply))
        except ValueError:
            raise InstrumentError(self.name, "LIAS?", f"unexpected reply {reply!r}") from None

    # -- configuration helpers ------------------------------------------------------------------
    def set_time_constant(self, seconds: float | str) -> float:
        """Set one of the table's time constants (1, 3, 10, 30 … × 10^k s, 1 µs … 30 ks);
        returns it. Anything else is refused, never rounded."""
        self.time_constant = seconds
        return self._cache["time_constant"]

    def configure_reference(self, frequency: float | str, *, phase_deg: float = 0.0,
                            source: str = "internal", harmonic: int = 1) -> None:
        """Reference for quadrature detection at ω_d: frequency, phase, source, harmonic."""
        self.reference_source = source
        if source == "internal":
            self.frequency = frequency
        self.harmonic = harmonic
        self.phase = phase_deg

    def configure_filter(self, time_constant: float | str, slope_db: int = 12) -> None:
        self.set_time_constant(time_constant)
        self.filter_slope = slope_db
        self.advanced_filter = False
        self.sync_filter = False

    # -- capture --------------------------------------------------------------------------------
    def configure_capture(self, n_samples: int, rate_hz: float | str, config: str = "XY") -> float:
        """Buffer for ``n_samples`` of ``config`` at ``rate_hz``; returns the exact rate.

        The rate must be CAPTURERATEMAX?/2^n (n = 0…20) to 1e-6; the buffer length is the
        samples' bytes rounded up to an even number of kB (≤ 4096 kB). Everything is checked
        before the first write.
        """
        if config not in CAPTURE_CONFIGS:
            raise SettingError(self.name, "capture_config", config, "choices " + ", ".join(CAPTURE_CONFIGS))
        if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
            raise SettingError(self.name, "capture samples", n_samples, "whole numbers ≥ 1")
        rate = _units.parse_as(rate_hz, "Hz", where=f"{self.name}.capture_rate") if isinstance(rate_hz, str) else float(rate_hz)
        nvars = len(CAPTURE_VARS[config])
        kb = math.ceil(n_samples * nvars * 4 / 1024)
        kb += kb % 2
        kb = max(kb, CAPTURE_KB[0])
        if kb > CAPTURE_KB[1]:
            raise SettingError(self.name, "capture samples", n_samples,
                               f"at most {CAPTURE_KB[1] * 1024 // (4 * nvars)} samples of {config}")
        if not (rate > 0 and math.isfinite(rate)):
            raise SettingError(self.name, "capture_rate", rate_hz, "positive rates", "Hz")
        rmax = float(self.capture_rate_max)
        k = math.log2(rmax / rate)
        n = int(round(k))
        if abs(k - n) > 1e-6 or not RATE_EXPONENTS[0] <= n <= RATE_EXPONENTS[1]:
            allowed = ", ".join(f"{rmax / 2 ** i:g}" for i in range(0, 6))
            raise SettingError(self.name, "capture_rate", rate_hz,
                               f"CAPTURERATEMAX/2^n = {allowed}, … Hz at this time constant", "Hz")
        self.capture_config = config
        self.capture_length_kb = kb
        self.capture_rate_exponent = n
        return rmax / 2 ** n

    def start_capture(self, mode: str = "one", trigger: str = "immediate") -> None:
        """``CAPTURESTART ONE|CONT, IMM|TRIG|SAMP``."""
        if mode not in ACQ_MODES:
            raise SettingError(self.name, "capture mode", mode, "choices " + ", ".join(ACQ_MODES))
        if trigger not in TRIGGER_MODES:
            raise SettingError(self.name, "capture trigger", trigger, "choices " + ", ".join(TRIGGER_MODES))
        cmd = f"CAPTURESTART {ACQ_MODES[mode]}, {TRIGGER_MODES[trigger]}"
        self.write(cmd)
        self.check_errors(cmd)

    def stop_capture(self) -> None:
        self.write("CAPTURESTOP")

    def captured_bytes(self) -> int:
        reply = self.query("CAPTUREBYTES?")
        try:
            return int(float(reply))
        except ValueError:
            raise InstrumentError(self.name, "CAPTUREBYTES?", f"unexpected reply {reply!r}") from None

    def capture_status(self) -> int:
        """``CAPTURESTAT?`` bits: 0 capturing, 1 triggered, 2 wrapped (buffer full)."""
        reply = self.query("CAPTURESTAT?")
        try:
            return int(float(reply))
        except ValueError:
            raise InstrumentError(self.name, "CAPTURESTAT?", f"unexpected reply {reply!r}") from None

    def wait_capture(self, n_bytes: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            got = self.captured_bytes()
            if got >= n_bytes:
                return
            if time.monotonic() > deadline:
                raise InstrumentError(self.name, "CAPTUREBYTES?",
                                      f"only {got} of {n_bytes} bytes captured after {timeout_s:g} s "
                                      "(no trigger? reference unlocked?)")
            time.sleep(self.poll_interval)

    def _read_block(self, command: str) -> bytes:
        """Write ``command`` and read the IEEE-488.2 definite-length block that answers it (no
        terminator follows the block on the SR86x). Reads are accumulated, so a transport that
        returns more than was asked for (or less) is handled."""
        self.write(command)
        buf = bytearray()

        def need(n: int) -> None:
            while len(buf) < n:
                chunk = self.transport.read_raw(n - len(buf))
                if not chunk:
                    raise InstrumentError(self.name, command, f"block ended after {len(buf)} bytes")
                buf.extend(chunk)

        need(2)
        if buf[:1] != b"#" or not buf[1:2].isdigit() or buf[1:2] == b"0":
            raise InstrumentError(self.name, command, f"expected a binary block, got {bytes(buf[:40])!r}")
        nd = int(buf[1:2])
        need(2 + nd)
        try:
            length = int(buf[2:2 + nd])
        except ValueError:
            raise InstrumentError(self.name, command, f"bad block length {bytes(buf[2:2 + nd])!r}") from None
        need(2 + nd + length)
        if len(buf) > 2 + nd + length:
            raise InstrumentError(self.name, command,
                                  f"{len(buf) - 2 - nd - length} unexpected bytes after the block")
        return bytes(buf[2 + nd:])

    def read_capture(self, n_samples: int, config: str = "XY", rate: float | None = None) -> Capture:
        """The first ``n_samples`` of the (stopped) capture buffer, via ``CAPTUREGET?`` in ≤ 64 kB
        pieces of little-endian float32."""
        nvars = len(CAPTURE_VARS[config])
        need = n_samples * nvars * 4
        kb = math.ceil(need / 1024)
        chunks = []
        for off in range(0, kb, MAX_GET_KB):
            j = min(MAX_GET_KB, kb - off)
            chunks.append(self._read_block(f"CAPTUREGET? {off},{j}"))
        raw = b"".join(chunks)
        if len(raw) < need:
            raise InstrumentError(self.name, "CAPTUREGET?", f"{len(raw)} bytes read, {need} needed")
        self.check_errors("CAPTUREGET?")
        data = np.frombuffer(raw[:need], dtype="<f4").astype(np.float64).reshape(n_samples, nvars)
        return Capture(data, CAPTURE_VARS[config], rate if rate is not None else float(self.capture_rate), config)

    def acquire(self, n_samples: int, rate_hz: float | str, *, config: str = "XY",
                trigger: str = "immediate", timeout_s: float | None = None,
                start_hook: Any = None) -> Capture:
        """Capture ``n_samples`` at ``rate_hz`` and read them back.

        ``trigger="trigger"`` arms the capture to start on the rear-panel trigger input (use it
        to start two lock-ins together); ``start_hook()`` is called after arming (e.g. fire the
        trigger). Waits up to the capture time + ``timeout_s`` (default option ``capture_timeout``).
        """
        rate = self.configure_capture(n_samples, rate_hz, config)
        nvars = len(CAPTURE_VARS[config])
        self.start_capture("one", trigger)
        try:
            if start_hook is not None:
                start_hook()
            limit = n_samples / rate + (self.capture_timeout if timeout_s is None else timeout_s)
            self.wait_capture(n_samples * nvars * 4, limit)
        finally:
            self.stop_capture()
        return self.read_capture(n_samples, config, rate)

    def acquire_xy(self, n_samples: int, rate_hz: float | str, **kw: Any) -> np.ndarray:
        """(n_samples, 2) array of X, Y in volts (the ``lockin`` role's method)."""
        return self.acquire(n_samples, rate_hz, config="XY", **kw).data

    # -- safety ---------------------------------------------------------------------------------
    def safe_state(self) -> None:
        """Stop capturing; sine output amplitude and offset to 0 V; aux outputs to 0 V."""
        errors = []
        for action in (self.stop_capture,
                       lambda: setattr(self, "sine_amplitude", 0.0),
                       lambda: setattr(self, "sine_offset", 0.0),
                       *[(lambda i=i: setattr(getattr(self, f"aux{i}"), "voltage", 0.0)) for i in range(4)]):
            try:
                action()
            except Exception as e:  # keep going: every output must be tried
                errors.append(str(e))
        if errors:
            raise InstrumentError(self.name, "safe_state", "; ".join(errors))
