"""Sercalo VP1 electrically driven variable optical attenuator (balances the interferometer arms).

Two ways the seed's VOA can be driven, two classes:

* ``SercaloVP1`` — a VP1 with a serial (UART/USB) controller. **Its protocol is not public.** The
  command words live in the one table ``COMMANDS`` below and are a guess to be checked against
  the device (or Sercalo support) before first use; everything else in the driver only uses the
  table. The guess follows the one public Sercalo ASCII protocol found, the official .NET library
  of the Sercalo TF tunable filter (``SercaloMicrotechnology/tf-net``, ``Sercalo.TF/TunableFilter.cs``,
  ``TFQueryHelper.cs``, ``SerialDevice.cs``): 9600 baud 8N1, lines end with ``\\r\\n`` both ways;
  a query is the bare command word and is answered ``<WORD> <value>`` (``WVL`` ->
  ``WVL 1550.000``); a set is ``<WORD> <value>`` with three decimals and the device answers by
  repeating it (the library checks the repeated value); errors are answered ``ERR <n>`` or
  ``ERR <text>``; ``ID`` is answered ``ID <part>|<serial>|<firmware>``. Sercalo's switch cards use
  a SCPI-like set instead (``*IDN?``, ``:ROUT:CLOS``, ``:SYST:ERR?``) and the RSC switches a
  binary one (``0xEF 0xEF`` frames, GroeblacherLab ``Sercalo_1xN_switch``): if the VP1 controller
  turns out to be one of those, change the table (and ``_reply_value``).
* ``AnalogVOA`` — the analog-voltage VP1 driven by another instrument's analog output
  (``resource: via:redpitaya/AOUT1``), with a calibration curve dB(V) from the station file.

Attenuation limits: no VP1 datasheet was found in the reference sources; Sercalo MEMS VOAs are
sold with a few tens of dB of dynamic range, so ``SercaloVP1`` defaults to 0–40 dB (driver options
``min_db``/``max_db`` — set them from the unit's datasheet), and ``AnalogVOA`` takes its range
from the calibration curve.
"""
from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from labctl.errors import InputError, InstrumentError
from labctl.instrument.base import Instrument, Setting

log = logging.getLogger("labctl.drivers.vp1")

#: Command words of the serial VP1 — ASSUMED (modelled on the Sercalo TF protocol), check them.
COMMANDS: dict[str, str] = {
    "identify": "ID",        # query -> "ID <part>|<serial>|<firmware>"
    "attenuation": "ATT",    # query "ATT" -> "ATT 12.345"; set "ATT 12.345" -> "ATT 12.345"
    "error": "ERR",          # reply word of an error: "ERR <n>" or "ERR <text>"
}

#: Error numbers of Sercalo's serial devices (RSC switch manual codes as used by the
#: GroeblacherLab driver; assumed to carry over to the ASCII "ERR <n>" replies).
ERROR_CODES = {1: "invalid command", 2: "invalid parameter", 3: "command failed", 4: "checksum error"}


class SercaloVP1(Instrument):
    """Sercalo VP1 VOA on a serial port (role ``attenuator``).

    Driver options: ``min_db`` (default 0), ``max_db`` (default 40) — the unit's attenuation range.
    Station limits narrow it: ``limits: {attenuation_db: [0 dB, 25 dB]}``.
    """

    model = "Sercalo VP1"
    roles = ("attenuator",)
    read_termination = "\r\n"
    write_termination = "\r\n"
    timeout = 1.0
    baud_rate = 9600
    error_query = None          # errors come back as the reply to the command itself
    idn_query = COMMANDS["identify"]
    transport_kind = "serial"
    simulator = "sim_instruments.models.sercalo_vp1:SercaloVP1Model"

    attenuation_db = Setting(
        COMMANDS["attenuation"], COMMANDS["attenuation"] + " {value}", unit="dB",
        limits=lambda inst: inst._range, fmt="{:.3f}",
        doc="attenuation (dB); the device repeats a set, which is checked")

    def __init__(self, name: str, transport: Any, **options: Any) -> None:
        super().__init__(name, transport, **options)
        unknown = set(options) - {"min_db", "max_db"}
        if unknown:
            raise InputError(f"{name}: unknown SercaloVP1 option(s) {', '.join(sorted(unknown))}",
                             fix="use min_db, max_db")
        lo, hi = options.get("min_db", 0.0), options.get("max_db", 40.0)
        for what, v in (("min_db", lo), ("max_db", hi)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise InputError(f"{name}: {what} must be a number of dB, got {v!r}", fix="e.g. max_db: 40")
        if not 0.0 <= lo < hi:
            raise InputError(f"{name}: attenuation range {lo:g}..{hi:g} dB is empty or negative",
                             fix="set 0 <= min_db < max_db from the datasheet")
        self._range = (float(lo), float(hi))

    # -- protocol ---------------------------------------------------------------------------------
    def _reply_value(self, command: str, reply: str) -> str:
        """The value part of ``<WORD> <value>``; raise InstrumentError for ``ERR`` or a mismatch."""
        text = reply.strip()
        word = command.split(" ", 1)[0]
        head, _, value = text.partition(" ")
        if head == COMMANDS["error"]:
            code = value.strip()
            msg = ERROR_CODES.get(int(code), f"error {code}") if code.isdigit() else code
            raise InstrumentError(self.name, command, f"the VP1 answered {text!r} ({msg})")
        if head != word or not value:
            raise InstrumentError(self.name, command, f"unexpected reply {reply!r} (expected '{word} <value>')")
        return value.strip()

    def query(self, command: str) -> str:
        return self._reply_value(command, self.transport.query(command))

    def check_errors(self, command: str | None = None) -> None:
        """Read the device's answer to the set just written: it must repeat the value."""
        if command is None:
            return
        value = self._reply_value(command, self.transport.read())
        sent = command.split(" ", 1)[1] if " " in command else ""
        try:
            same = math.isclose(float(value), float(sent), abs_tol=5e-4)
        except ValueError:
            same = value == sent
        if not same:
            raise InstrumentError(self.name, command, f"the VP1 confirmed {value!r} instead of {sent!r}")

    def idn(self) -> str:
        """``Sercalo <part>, s/n <serial>, firmware <fw>`` from ``ID``."""
        if self._idn is None:
            value = self.query(COMMANDS["identify"])
            parts = value.split("|")
            if len(parts) == 3:
                self._idn = f"Sercalo {parts[0]}, s/n {parts[1] or '?'}, firmware {parts[2] or '?'}"
            else:
                self._idn = f"Sercalo {value}"
        return self._idn

    # -- the Attenuator role ----------------------------------------------------------------------
    @property
    def attenuation_range(self) -> tuple[float, float]:
        """(low, high) dB allowed: the unit's range narrowed by the station limits."""
        lim = type(self).attenuation_db.limits_for(self)
        assert lim is not None
        return lim

    def set_attenuation(self, db: float | str) -> None:
        """Set the attenuation (dB); validated before anything is written; the echo is checked."""
        spec = type(self).attenuation_db
        value = spec.validate(self, db)
        lo, hi = self.attenuation_range
        spec.write(self, min(max(value, lo), hi) + 0.0)  # no "ATT -0.000" from the 1e-12 tolerance

    def attenuation(self) -> float:
        """Attenuation (dB) as reported by the device."""
        return self.attenuation_db

    def safe_state(self) -> None:
        """Maximum allowed attenuation."""
        self.set_attenuation(self.attenuation_range[1])


# ---------------------------------------------------------------------------------------------------
class Calibration:
    """A monotonic dB(V) curve, linearly interpolated both ways (numpy ``interp``).

    ``points``: ``[[volts, dB], ...]``, at least two, finite, with distinct voltages (any order)
    and attenuation strictly increasing or strictly decreasing with voltage.
    """

    def __init__(self, points: Any, where: str = "calibration") -> None:
        fix = "write calibration: [[0.0, 0.5], [1.0, 3.0], [2.0, 12.0], ...] as [volts, dB] pairs, monotonic in dB"
        try:
            arr = np.asarray(points, dtype=float)
        except (TypeError, ValueError):
            raise InputError(f"{where}: cannot read {points!r} as [volts, dB] pairs", fix=fix) from None
        if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] < 2:
            raise InputError(f"{where}: need at least two [volts, dB] pairs, got {points!r}", fix=fix)
        if not np.all(np.isfinite(arr)):
            raise InputError(f"{where}: calibration values must be finite numbers", fix=fix)
        order = np.argsort(arr[:, 0], kind="stable")
        volts, db = arr[order, 0], arr[order, 1]
        if np.any(np.diff(volts) == 0):
            dup = volts[np.nonzero(np.diff(volts) == 0)[0][0]]
            raise InputError(f"{where}: voltage {dup:g} V appears twice", fix=fix)
        if np.any(db < 0):
            raise InputError(f"{where}: negative attenuation {db.min():g} dB", fix="attenuation is >= 0 dB")
        d = np.diff(db)
        if not (np.all(d > 0) or np.all(d < 0)):
            i = int(np.nonzero(d <= 0)[0][0] if d[0] > 0 else np.nonzero(d >= 0)[0][0])
            raise InputError(
                f"{where}: attenuation is not monotonic in voltage "
                f"({volts[i]:g} V -> {db[i]:g} dB, {volts[i + 1]:g} V -> {db[i + 1]:g} dB)",
                fix="drop or re-measure the point; the inverse (dB -> V) needs a monotonic curve")
        self.volts = volts
        self.db = db
        self.increasing = bool(d[0] > 0)
        # for the inverse, np.interp needs increasing x
        self._db_inc = db if self.increasing else db[::-1]
        self._v_inc = volts if self.increasing else volts[::-1]

    @property
    def db_range(self) -> tuple[float, float]:
        return float(self.db.min()), float(self.db.max())

    @property
    def volt_range(self) -> tuple[float, float]:
        return float(self.volts[0]), float(self.volts[-1])

    def db_at(self, volts: float) -> float:
        """Attenuation (dB) at a control voltage (clamped to the curve's ends)."""
        return float(np.interp(volts, self.volts, self.db))

    def volts_for(self, db: float) -> float:
        """Control voltage for an attenuation (dB); raise ValueError outside the curve."""
        lo, hi = self.db_range
        if not lo <= db <= hi:
            raise ValueError(f"{db:g} dB is outside the calibrated {lo:g}..{hi:g} dB")
        return float(np.interp(db, self._db_inc, self._v_inc))


class AnalogVOA(Instrument):
    """The analog-voltage VP1, driven through another instrument's analog output.

    ``resource: via:<instrument>/<pin>`` (e.g. ``via:redpitaya/AOUT1``); the partner, found in
    ``bind(station)``, must have ``set_voltage(pin, volts)``. Driver option ``calibration``:
    ``[[volts, dB], ...]`` measured on the unit (monotonic; interpolated linearly; the allowed
    attenuation range is the curve's range, narrowed by station limits on ``attenuation_db``).
    """

    model = "Sercalo VP1 (analog)"
    roles = ("attenuator",)
    error_query = None
    idn_query = None

    attenuation_db = Setting(None, None, unit="dB", limits=lambda inst: inst.calibration.db_range,
                             doc="attenuation (dB), set through the partner's analog output")

    def __init__(self, name: str, transport: Any, **options: Any) -> None:
        super().__init__(name, transport, **options)
        unknown = set(options) - {"calibration"}
        if unknown:
            raise InputError(f"{name}: unknown AnalogVOA option(s) {', '.join(sorted(unknown))}",
                             fix="the only option is calibration: [[volts, dB], ...]")
        if "calibration" not in options:
            raise InputError(f"{name}: the analog VP1 needs a calibration curve",
                             fix="add options: {calibration: [[0 V value, dB], [volts, dB], ...]}")
        self.calibration = Calibration(options["calibration"], where=f"{name}.calibration")
        self.partner_name, self.pin = self.parse_resource(transport.resource, name)
        self.partner: Any = None
        self._volts: float | None = None

    @classmethod
    def open_transport(cls, resource: str, **kw: Any) -> Any:
        """``via:`` resources get a NullTransport (the station does this too); anything else is a
        configuration error, reported before any connection is tried."""
        from labctl.instrument.transport import NullTransport

        cls.parse_resource(resource, kw.get("name", "voa"))
        return NullTransport(resource, **kw)

    @staticmethod
    def parse_resource(resource: str, name: str = "voa") -> tuple[str, str]:
        """``"via:redpitaya/AOUT1"`` -> ``("redpitaya", "AOUT1")``."""
        body = resource[len("via:"):] if resource.startswith("via:") else None
        inst, _, pin = (body or "").partition("/")
        if body is None or not inst or not pin or "/" in pin:
            raise InputError(f"{name}: resource {resource!r} is not via:<instrument>/<pin>",
                             fix="e.g. resource: via:redpitaya/AOUT1")
        return inst, pin

    def bind(self, station: Any) -> None:
        instruments = getattr(station, "instruments", {})
        partner = instruments.get(self.partner_name)
        if partner is None:
            names = ", ".join(sorted(n for n in instruments if n != self.name)) or "none"
            raise InputError(f"{self.name}: resource via:{self.partner_name}/{self.pin} names "
                             f"'{self.partner_name}', which is not in the station (instruments: {names})",
                             fix="fix the resource or add the instrument that drives the VOA")
        if not callable(getattr(partner, "set_voltage", None)):
            raise InputError(f"{self.name}: '{self.partner_name}' has no set_voltage(pin, volts)",
                             fix="drive the VOA from an analog-output instrument (role analog_out)")
        self.partner = partner

    def idn(self) -> str:
        return f"Sercalo VP1 (analog) via {self.partner_name}/{self.pin}"

    @property
    def attenuation_range(self) -> tuple[float, float]:
        lim = type(self).attenuation_db.limits_for(self)
        assert lim is not None
        return lim

    def control_voltage(self, db: float) -> float:
        """Voltage the partner must output for ``db`` (validated against the allowed range)."""
        spec = type(self).attenuation_db
        lo, hi = self.attenuation_range
        v = min(max(spec.validate(self, db), lo), hi)   # inside the curve despite the 1e-12 tolerance
        return self.calibration.volts_for(v)

    def set_attenuation(self, db: float | str) -> None:
        """Validate, convert through the calibration, and set the partner's output."""
        lo, hi = self.attenuation_range
        value = min(max(type(self).attenuation_db.validate(self, db), lo), hi)
        volts = self.calibration.volts_for(value)
        if self.partner is None:
            raise InstrumentError(self.name, None, f"not bound to '{self.partner_name}' yet "
                                                   "(the station calls bind() after connecting)")
        self.partner.set_voltage(self.pin, volts)
        self._volts = volts
        self._cache["attenuation_db"] = value

    def attenuation(self) -> float:
        """The attenuation last set (dB); the analog VP1 cannot be read back."""
        if "attenuation_db" not in self._cache:
            raise InstrumentError(self.name, None, "attenuation not set yet (the analog VP1 has no read-back)")
        return self._cache["attenuation_db"]

    def snapshot_settings(self) -> dict[str, Any]:
        return {"attenuation_db": self._cache.get("attenuation_db"), "control_voltage": self._volts,
                "calibration": [[float(v), float(d)] for v, d in zip(self.calibration.volts, self.calibration.db)]}

    def safe_state(self) -> None:
        """Maximum allowed attenuation."""
        self.set_attenuation(self.attenuation_range[1])
