"""The run: one sequence on one station (the lab, or ``--sim``), from validation to report.

Order of work (docs/running.md)::

    validate + compile (checked on simulators) → preflight of the output folder → manifest
    → connect the station, identities and snapshots → (resume: safe state if the last run died)
    → faults of a plan installed (simulation/emulation) → lasers to their set points, phase lock
    → for each sweep point: apply programs, outputs on, acquire blocks of trials:
        monitors (suspenders) → tagger stream → heralded counting → commit block (journal)
    → safe state (on every exit path) → report.json, plots, run.h5

Faults (docs/faults.md) are met with a defined behaviour — retry with back-off and
reconnection, re-programming after a reboot, discarding and repeating a block whose data are
bad (latched detector, mode hop), pausing while a monitored signal is out of its band — or a clean
stop in the safe state with exit code 3. Every fault met is listed in ``report.json``.
"""
from __future__ import annotations

import logging
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import __version__
from .config import StationConfig, load_station
from .errors import (EXIT_FAULT, EXIT_INTERRUPTED, EXIT_OK, ConnectionLost, InputError, InstrumentError,
                     InstrumentTimeout, Interrupted, LabctlError)
from .report import build_report, lock_summary, summary_text, sum_counts
from .sequence.apply import apply_program, enable_outputs
from .sequence.compile import CompiledSequence, compile_sequence
from .sequence.model import Sequence, parse_sequence
from .station import Station
from .storage import (RECORD_FORMAT, BlockEntry, Journal, RunLock, dumps, git_commit, preflight, vector_to_counts,
                      counts_to_vector, write_atomic, write_run_file)
from .yamlio import loads_yaml

log = logging.getLogger("labctl.run")

#: trials per block: simulated blocks are cheap; lab blocks last at most a minute
SIM_BLOCK_TRIALS = 100_000_000
LAB_BLOCK_SECONDS = 60.0
MAX_RETRIES = 3
BACKOFF_S = (0.05, 0.2, 0.8)
H5_REWRITE_S = 3.0
TAGGER_STALL_S = 10.0           #: a measuring tagger silent this long has no sync (s)
SYNC_SLACK = 4096               #: syncs a block may end short of its trials (T3 overflows come per 1024)
MAX_BLOCK_REPEATS = 3          #: a block repeated this often in a row for one cause stops the run
LOCK_CYCLES_PER_BLOCK = 400    #: lock cycles run before each block (20 ms at 20 kHz): its telemetry
LOCK_ACQUIRE_CYCLES = 40000    #: cycles allowed to (re-)acquire the lock (2 s at 20 kHz)


#: injected fault kind -> the kinds of handled fault it surfaces as (the report lists an injected
#: fault apart unless one of these was met on the same instrument)
SURFACES_AS: dict[str, tuple[str, ...]] = {
    "timeout": ("timeout", "unrecoverable", "fault"),
    "latency": ("latency",),  # always listed: a reply later than the timeout is a timeout of its own
    "dropped_connection": ("connection", "timeout", "unrecoverable", "fault"),
    "cut_reply": ("timeout", "instrument_error", "unrecoverable", "fault"),
    "garbled_reply": ("instrument_error", "timeout", "unrecoverable", "fault"),
    "error_queue": ("instrument_error", "unrecoverable", "fault"),
    "reboot": ("connection", "timeout", "instrument_error", "unrecoverable", "fault"),
    "latched_detector": ("latched_detector",),
    "mode_hop": ("mode_hop",),
    "phase_disturbance": ("lock_lost",),
}


class SyncMismatch(Exception):
    """A block's records hold more or fewer sync periods than its trials: the trigger rate
    changed (a pulse generator lost its settings), so the block cannot be counted."""


@dataclass
class RunOptions:
    sequence: str | None = None
    config: str | None = None
    sim: bool = False
    out: Path | None = None
    trials: float | None = None
    seed: int | None = None
    faults: str | None = None
    resume: bool = False
    block_trials: int | None = None
    progress: bool | None = None
    plots: bool = True


@dataclass
class FaultRecord:
    kind: str
    instrument: str
    handling: str
    point: int | None = None
    block: int | None = None
    message: str = ""
    t: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


class Runner:
    """Runs one sequence; ``run()`` returns the exit code (0, 3 or 130)."""

    def __init__(self, opts: RunOptions, *, out: Callable[[str], None] | None = None) -> None:
        self.opts = opts
        self.say = out or (lambda s: print(s, file=sys.stderr))
        self.faults: list[FaultRecord] = []
        self.station: Station | None = None
        self.journal: Journal | None = None
        self.lock_blocks: list[dict[str, Any]] = []
        self.phase_lock: Any = None
        self.injector: Any = None
        self.plan: Any = None
        self._last_h5 = 0.0
        self._paused = 0.0
        self._counting: dict[str, Any] = {}  #: record format, resolution and windows of the last block
        self._block_photons: list[int] | None = None  #: all clicks of detectors 1, 2 in the last block
        self._programs_applied: dict[str, dict[str, Any]] = {}
        self._lock_started = False
        self._critical = 0            #: >0 while committing a block: a signal waits until it is done
        self._pending_signal: str | None = None
        self._finishing = False       #: True while the run ends (safe state, report, run file)
        self._faults_before = 0       #: faults committed by earlier processes of a resumed run

    # ------------------------------------------------------------------------------------------
    # set-up
    # ------------------------------------------------------------------------------------------
    def _load(self) -> None:
        o = self.opts
        if o.resume:
            folder = Path(o.out)  # type: ignore[arg-type]
            mpath = folder / "manifest.json"
            if not mpath.exists():
                raise InputError(f"{folder} holds no run to resume (no manifest.json)",
                                 fix="give the --out folder of a run started with 'labctl run'")
            import json

            try:
                self.manifest = json.loads(mpath.read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise InputError(f"cannot read {mpath}: {e}", fix="the run folder is damaged; start a new run") from None
            m = self.manifest
            self.seq = parse_sequence(loads_yaml(m["sequence_text"], m["sequence_file"]))
            self.cfg = _station_from_text(m["station_text"], m["station_file"])
            o.sim, o.seed, o.faults = m["sim"], m.get("seed"), m.get("faults_file")
            self.faults_text = m.get("faults_text")
            self.folder = folder
        else:
            from .sequence import load_sequence

            if not o.sequence or not o.config:
                raise InputError("a run needs a SEQUENCE and --config FILE",
                                 fix="labctl run SEQUENCE --config STATION [--sim] [--out DIR]")
            self.seq = load_sequence(o.sequence)
            self.cfg = load_station(o.config)
            self.faults_text = Path(o.faults).read_text() if o.faults else None
            self.folder = Path(o.out) if o.out else Path("runs") / f"{self.seq.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        self.plan = None
        if o.faults or self.faults_text:
            self.plan = _load_fault_plan(o.faults, self.faults_text)
        # trials per point
        if o.resume:
            self.trials = [int(p["trials"]) for p in self.manifest["points"]]
        else:
            t = o.trials if o.trials is not None else self.seq.trials
            if not (t >= 1 and float(t) == math.floor(float(t)) and t <= 1e15):
                raise InputError(f"--trials {t!r} must be a whole number from 1 to 1e15", fix="e.g. --trials 1e8")
            self.trials = [int(t)] * len(self.seq.points)

    def _compile(self) -> None:
        self.compiled = compile_sequence(self.seq, self.cfg)

    def _block_trials(self) -> int:
        if self.opts.block_trials:
            return int(self.opts.block_trials)
        if self.opts.resume and "block_trials" in self.manifest:
            return int(self.manifest["block_trials"])
        if self.opts.sim:
            return SIM_BLOCK_TRIALS
        return max(1, int(LAB_BLOCK_SECONDS / self.seq.period))

    def _write_manifest(self) -> None:
        o = self.opts
        seq_text = Path(o.sequence).read_text()  # type: ignore[arg-type]
        st_text = Path(o.config).read_text()  # type: ignore[arg-type]
        self.manifest = {
            "labctl_version": __version__, "git_commit": git_commit(), "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "command": " ".join(sys.argv), "sequence_file": str(o.sequence), "sequence_text": seq_text,
            "station_file": str(o.config), "station_text": st_text, "sequence_name": self.seq.name,
            "experiment": self.seq.experiment, "sim": bool(o.sim), "seed": o.seed, "period": self.seq.period,
            "block_trials": self._block_trials(), "faults_file": o.faults, "faults_text": self.faults_text,
            "sweep_parameters": self.seq.sweep_parameters, "sequence_raw": self.seq.raw,
            "points": [{"index": p.index, "parameters": p.parameters, "trials": self.trials[p.index]}
                       for p in self.seq.points],
        }
        write_atomic(self.folder / "manifest.json", dumps(self.manifest).encode())

    def _connect(self) -> None:
        seed = self.opts.seed
        self.station = Station(self.cfg, sim=self.opts.sim, seed=seed)
        self.station.connect()
        if self.opts.sim and self.station.lab is not None:
            self.twin = _attach_twin(self.station, self.cfg, seed)
        else:
            self.twin = None
        info = {}
        for row in self.station.rows():
            name = row["name"]
            try:
                snap = self.station[name].snapshot()
            except LabctlError as e:
                snap = {"error": str(e)}
            info[name] = {**row, "snapshot": snap}
        self.instruments_info = info
        self.manifest["instruments"] = info

    # ------------------------------------------------------------------------------------------
    # resilience
    # ------------------------------------------------------------------------------------------
    def fault(self, kind: str, instrument: str, handling: str, *, message: str = "", point: int | None = None,
              block: int | None = None) -> None:
        rec = FaultRecord(kind, instrument, handling, point, block, message)
        self.faults.append(rec)
        log.warning("fault %s on %s: %s (%s)", kind, instrument, message, handling)
        if self.journal is not None:
            self.journal.event("fault", **rec.as_dict())

    def with_retry(self, name: str, what: str, fn: Callable[[], Any], *, reprogram: bool = True,
                   point: int | None = None) -> Any:
        """Run ``fn``; on a timeout or a lost link retry with back-off, reconnecting (and
        re-programming, since a rebooted instrument lost its settings) before each retry."""
        for attempt in range(MAX_RETRIES + 1):
            self.check_interrupt()
            try:
                return fn()
            except (InstrumentTimeout, ConnectionLost) as e:
                if attempt == MAX_RETRIES:
                    self.fault("unrecoverable", name, f"gave up after {MAX_RETRIES} retries: stopping in the safe state",
                               message=str(e), point=point)
                    raise
                kind = "timeout" if isinstance(e, InstrumentTimeout) else "connection"
                # the instrument that failed: ``name`` unless the error names another one of the
                # station (the phase lock reads the Red Pitaya while driving the stretcher)
                failed = str(getattr(e, "instrument", "") or "").split(".")[0]
                who = failed if self.station is not None and failed in self.station.instruments else name
                time.sleep(BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)])
                try:
                    self.station.reconnect(who)  # type: ignore[union-attr]
                    prog = self._programs_applied.get(who)
                    if reprogram and prog is not None:
                        apply_program(self.station[who], prog)  # type: ignore[index]
                    self.fault(kind, who, f"retry {attempt + 1} after reconnecting" +
                               (" and re-programming" if reprogram and prog is not None else ""),
                               message=str(e), point=point)
                except LabctlError as e2:
                    self.fault(kind, who, f"reconnect {attempt + 1} failed", message=str(e2), point=point)
            except InstrumentError as e:
                # the instrument reported an error (error queue): clear it and try once more
                if attempt >= 1:
                    self.fault("instrument_error", name, "persisting instrument error: stopping in the safe state",
                               message=str(e), point=point)
                    raise
                self.fault("instrument_error", name, f"error queue entry during {what}: cleared, command repeated",
                           message=str(e), point=point)
                _drain_errors(self.station[name])  # type: ignore[index]
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------------------------------
    # instruments
    # ------------------------------------------------------------------------------------------
    def _apply_point(self, k: int) -> None:
        if self.compiled is None:
            return
        for name, prog in self.compiled.points[k].items():
            inst = self.station[name]  # type: ignore[index]
            self.with_retry(name, f"programming point {k + 1}", lambda inst=inst, prog=prog: apply_program(inst, prog), point=k)
            self._programs_applied[name] = prog
        for name, prog in self.compiled.points[k].items():
            self.with_retry(name, "switching outputs on", lambda name=name, prog=prog: enable_outputs(self.station[name], prog), point=k)  # type: ignore[index]

    def _lasers_to_setpoints(self) -> None:
        sets = ((self.cfg.model.calibration or {}).get("lasers") or {})
        self.laser_setpoints: dict[str, float] = {}
        from . import units

        for name, value in sets.items():
            if name not in self.station.instruments:  # type: ignore[union-attr]
                continue
            wl = units.parse_as(value, "m", where=f"calibration.lasers.{name}")
            laser = self.station[name]  # type: ignore[index]
            self.with_retry(name, "setting the wavelength", lambda laser=laser, wl=wl: laser.set_wavelength(wl, wait=True))
            self.with_retry(name, "switching the laser on", lambda laser=laser: laser.set_output(True))
            self.laser_setpoints[name] = wl

    def _attenuators_to_setpoints(self) -> None:
        """The arm-balance attenuation from the station's calibration (the safe state raised it)."""
        from . import units

        for name, value in ((self.cfg.model.calibration or {}).get("attenuators") or {}).items():
            if name not in self.station.instruments:  # type: ignore[union-attr]
                continue
            db = units.parse_as(value, "dB", where=f"calibration.attenuators.{name}")
            voa = self.station[name]  # type: ignore[index]
            self.with_retry(name, "setting the attenuation", lambda voa=voa, db=db: voa.set_attenuation(db))

    def _detectors_to_setpoints(self) -> None:
        """Bias the SNSPDs at ``calibration.snspd.detector_<n>.bias`` and switch their sources on
        (a safe state, at the end of the previous run or after a crash, left them at 0 V and off).
        A detector without a calibrated bias must already be biased: otherwise every block would
        be silent, so the run refuses to start."""
        from .calibrations import station_detectors

        try:
            dets = station_detectors(self.station)
        except InputError as e:
            if "maps no 'detector_<n>_bias' channels" in str(e):
                return  # no bias control in this station: nothing to restore
            raise
        for d in dets:
            src = d.source
            inst = self.cfg.model.channels[f"{d.name}_bias"].instrument
            if d.bias_v is not None:
                self.with_retry(inst, f"biasing {d.name}", lambda src=src, v=d.bias_v: src.set_bias(v))
                self.with_retry(inst, f"switching {d.name}'s bias on", lambda src=src: src.set_output(True))
                continue
            bias = float(self.with_retry(inst, f"reading {d.name}'s bias", src.bias))
            out_on = self.with_retry(inst, f"reading {d.name}'s output", lambda src=src: getattr(src, "output", True))
            if not out_on or abs(bias) < 1e-3:
                raise InputError(
                    f"{d.name} is not biased ({bias:g} V, output {'on' if out_on else 'off'}: a safe state "
                    "leaves the SNSPDs at 0 V) and the station gives no bias to restore: every block "
                    "would be silent", file=self.cfg.path, line=self.cfg.doc.line(("calibration",)),
                    fix=f"add calibration: {{snspd: {{{d.name}: {{bias: <V>}}}}}} to the station (the "
                        "bias on the detector's efficiency plateau)")

    def _check_lasers(self, k: int, b: int) -> bool:
        """True when every laser is where it should be; re-sets a laser that hopped."""
        ok = True
        tol = 2e-12  # 2 pm ~ 250 MHz at 1554 nm, far below the 5.1 GHz sideband spacing
        for name, wl in getattr(self, "laser_setpoints", {}).items():
            laser = self.station[name]  # type: ignore[index]
            got = self.with_retry(name, "reading the wavelength", laser.measured_wavelength, point=k)
            if abs(got - wl) > tol:
                ok = False
                self.with_retry(name, "re-setting the wavelength", lambda laser=laser, wl=wl: laser.set_wavelength(wl, wait=True), point=k)
                self.fault("mode_hop", name, "laser re-set to its wavelength; acquisition paused meanwhile",
                           message=f"measured {got * 1e9:.4f} nm, set {wl * 1e9:.4f} nm", point=k, block=b)
        return ok

    def _start_lock(self) -> None:
        """Close the fiber-stretcher phase lock when the sequence has a lock pulse and the
        station the lock hardware (supplement, 'Phase stabilization'): calibrate the fringe by
        sweeping the stretcher, then engage the PID."""
        from .phaselock import PhaseLock

        self.phase_lock = None
        if not any(p.kind == "aux" for p in self.seq.points[0].pulses):
            return
        chans = self.cfg.model.channels
        if "lock_detector" not in chans or "phase_actuator" not in chans:
            return
        if self.opts.sim and getattr(self.station.lab, "twin", None) is None:  # type: ignore[union-attr]
            self.journal.event("note", message="no digital twin: no interferometer to lock in simulation")  # type: ignore[union-attr]
            return
        lock = PhaseLock.from_station(self.station)
        self.with_retry(chans["phase_actuator"].instrument, "calibrating the fringe", lock.calibrate_fringe)
        lock.engage()
        if not lock.wait_locked(LOCK_ACQUIRE_CYCLES):
            self.fault("lock_lost", "phase lock", "could not lock at the start: stopping in the safe state")
            raise InstrumentError("phase lock", None, "the interferometer phase lock did not engage")
        self.phase_lock = lock

    # ------------------------------------------------------------------------------------------
    # acquisition
    # ------------------------------------------------------------------------------------------
    def _tagger(self) -> tuple[str, Any]:
        names = self.cfg.instruments_with_role("time_tagger")
        if not names:
            raise InputError(f"the station {self.cfg.path} has no time tagger", file=self.cfg.path,
                             fix="add an instrument with role: time_tagger")
        return names[0], self.station[names[0]]  # type: ignore[index]

    def _windows(self, k: int) -> tuple[tuple[float, float], tuple[float, float]]:
        pt = self.seq.points[k]
        kinds = {p.name: p.kind for p in pt.pulses}
        pump = [w for w in pt.windows if kinds.get(w.covers) == "pump"]
        read = [w for w in pt.windows if kinds.get(w.covers) == "read"]
        if not pump or not read:
            raise InputError("the sequence needs a detection window covering a pump pulse and one covering a read "
                             "pulse to count heralds", file=self.seq.path, line=self.seq.line("windows"),
                             fix="add windows: [{name: herald, covers: pump, ...}, {name: read, covers: read, ...}]")
        return (pump[0].start, pump[0].end), (read[0].start, read[0].end)

    def _acquire_block(self, k: int, b: int, n: int, sync_start: int) -> tuple[np.ndarray, list[int]]:
        from .tags.herald import HeraldCounter

        name, tagger = self._tagger()
        pw, rw = self._windows(k)
        if self.twin is not None and hasattr(self.twin, "begin_block"):
            self.twin.begin_block(point=k, block=b, sync_start=sync_start, seed=self.opts.seed)
        res = self.with_retry(name, "reading the resolution", tagger.resolution, point=k)
        hc = HeraldCounter.from_windows(RECORD_FORMAT, pw, rw, res)
        #: how the block's records were counted: stored with the block, so ``labctl verify`` can
        #: recount them from the raw records alone
        self._counting = {"record_format": RECORD_FORMAT, "resolution_s": float(res),
                          "pump_window_s": [float(pw[0]), float(pw[1])],
                          "read_window_s": [float(rw[0]), float(rw[1])], "channels": [0, 1]}
        chunks: list[np.ndarray] = []

        def run() -> None:
            chunks.clear()
            hc.tally = type(hc.tally)()
            tagger.start(n * self.seq.period)
            last_data = time.monotonic()
            try:
                while True:
                    self.check_interrupt()  # the tagger is stopped by its safe state
                    recs = tagger.read_records(timeout=0.2)
                    if not recs.size and time.monotonic() - last_data > TAGGER_STALL_S:
                        # a running T3 measurement gives an overflow record every 1024 syncs
                        # (51 ms at 20 kHz) even in the dark: silence means no sync at all
                        raise SyncMismatch(f"no records for {TAGGER_STALL_S:g} s while measuring "
                                           f"(after {int(hc.tally.state[0]):,} syncs of {n:,}): no trigger?")
                    if recs.size:
                        last_data = time.monotonic()
                        hc.feed(recs)
                        chunks.append(recs)
                        if int(hc.tally.state[0]) > n + SYNC_SLACK:  # do not wait for the rest
                            raise SyncMismatch(f"more than {int(hc.tally.state[0]):,} syncs in a block of {n:,} trials")
                    elif tagger.wait(0):
                        tail = tagger.read_records(timeout=0)
                        if tail.size:
                            hc.feed(tail)
                            chunks.append(tail)
                            continue
                        break
            finally:
                tagger.stop()

        self.with_retry(name, f"acquiring block {b + 1} of point {k + 1}", run, reprogram=True, point=k)
        result = hc.result(trials=n)
        seen = max(result.end_sync, (result.last_sync + 1) if result.last_sync is not None else 0)
        if seen > n or seen < n - SYNC_SLACK:
            raise SyncMismatch(f"{seen:,} syncs in a block of {n:,} trials")
        counts = result.counts(channels=(0, 1))
        self._block_photons = [int(result.tally.photons[0]), int(result.tally.photons[1])]
        recs = np.concatenate(chunks) if chunks else np.zeros(0, np.uint32)
        return recs, counts_to_vector(counts)

    def _count_repeat(self, repeats: dict[str, int], cause: str, who: str, k: int, b: int, gave_up: str,
                      error: str, *, message: str = "") -> None:
        """One more repeat of block ``b`` for ``cause``; beyond MAX_BLOCK_REPEATS in a row, record
        the fault as unrecoverable and raise (the run stops in the safe state, exit 3)."""
        repeats[cause] = repeats.get(cause, 0) + 1
        if repeats[cause] > MAX_BLOCK_REPEATS:
            self.fault("unrecoverable", who, f"{gave_up}: stopping in the safe state", message=message,
                       point=k, block=b)
            raise InstrumentError(who, None, error)

    def _latched_detectors(self, vec: list[int], expected: list[float] | None, photons: list[int] | None = None,
                           n: int = 0) -> list[int]:
        """Detectors that went silent in a block (an SNSPD that latched, or lost its bias): their
        herald + read clicks far below their rate in earlier blocks of the point (this process's
        or, after a resume, the journal's), or, in a point's first block, far below the other
        detector's (the arms are balanced, so the two click at similar rates); or, whatever the
        history, all their clicks (``photons``: any time in the period) far below the station's
        ``calibration.snspd.detector_<n>.min_rate`` over the block's duration (``n`` trials)."""
        got = [vec[1] + vec[3], vec[2] + vec[4]]
        if expected is None:
            expected = [float(got[1]), float(got[0])]
        silent = {d for d in range(2) if expected[d] >= 50 and got[d] < 0.1 * expected[d]}
        if photons is not None:
            for d, rate in enumerate(self._min_rates()):
                floor = (rate or 0.0) * n * self.seq.period
                if floor >= 50 and photons[d] < 0.1 * floor:
                    silent.add(d)
        return sorted(silent)

    def _min_rates(self) -> list[float | None]:
        """``calibration.snspd.detector_<n>.min_rate`` (Hz) of detectors 1 and 2, None if not given."""
        from . import units

        cal = ((self.cfg.model.calibration or {}).get("snspd") or {})
        out: list[float | None] = []
        for d in (1, 2):
            v = (cal.get(f"detector_{d}") or {}).get("min_rate") if isinstance(cal.get(f"detector_{d}"), dict) else None
            out.append(None if v is None else units.parse_as(v, "Hz", where=f"calibration.snspd.detector_{d}.min_rate"))
        return out

    def _recover_detectors(self, dets: list[int], k: int, b: int) -> None:
        ports = {d: self.cfg.model.channels.get(f"detector_{d + 1}_bias") for d in dets}
        for d, ch in ports.items():
            if ch is None:
                self.fault("latched_detector", f"detector {d + 1}", "no bias channel in the station to reset it: stopping",
                           point=k, block=b)
                raise InstrumentError(f"detector {d + 1}", None, "detector latched and cannot be reset")
            inst = self.station[ch.instrument]  # type: ignore[index]
            port = inst.port(int(ch.output)) if hasattr(inst, "port") else inst
            self.with_retry(ch.instrument, "resetting the latched detector", lambda port=port: port.reset_latch(0.01), point=k)
            self.fault("latched_detector", f"{ch.instrument} port {ch.output}",
                       "block discarded, bias reset (zero and back), block repeated", point=k, block=b)
        self._detectors_to_setpoints()  # a detector that lost its bias gets the calibrated one back

    def _lock_block(self, k: int, b: int) -> dict[str, Any]:
        """Run the lock for a sample of cycles before a block and return its telemetry; while the
        lock is lost, acquisition waits (suspender) and the paused time is recorded."""
        if self.phase_lock is None:
            return {}
        lock = self.phase_lock
        actuator = self.cfg.model.channels["phase_actuator"].instrument
        tel = self.with_retry(actuator, "running the phase lock", lambda: lock.run_cycles(LOCK_CYCLES_PER_BLOCK),
                              point=k).to_dict()
        if not lock.locked:
            t0 = time.monotonic()
            relocked = lock.wait_locked(LOCK_ACQUIRE_CYCLES)
            if not relocked:  # no fringe: an instrument that rebooted may have stopped the aux pulse
                self.fault("lock_lost", "phase lock", "no fringe to re-lock on: every instrument re-programmed",
                           point=k, block=b)
                self._apply_point(k)
                relocked = lock.wait_locked(LOCK_ACQUIRE_CYCLES)
            self._paused += time.monotonic() - t0
            if not relocked:
                self.fault("lock_lost", "phase lock", "could not re-lock: stopping in the safe state", point=k, block=b)
                raise InstrumentError("phase lock", None, "the interferometer phase lock was lost and did not return")
            self.fault("lock_lost", "phase lock", "acquisition paused until the lock returned", point=k, block=b)
            tel = {**tel, **{kk: v for kk, v in lock.run_cycles(LOCK_CYCLES_PER_BLOCK).to_dict().items()
                             if kk in ("rms_error", "mean_error")}}
        tel.pop("events", None)
        tel["cycles"] = LOCK_CYCLES_PER_BLOCK
        return tel

    # ------------------------------------------------------------------------------------------
    # the run
    # ------------------------------------------------------------------------------------------
    def run(self) -> int:
        """Run (or resume) the sequence; returns the exit code. Ctrl-C and SIGTERM are taken from
        the first moment: a signal is recorded and acted on at the next safe point (between
        instrument exchanges, in the tagger's read loop, between blocks), never in the middle of
        a query or a commit; a second signal outside a commit stops at once."""
        in_main = threading.current_thread() is threading.main_thread()
        old = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)} if in_main else {}
        for sig in old:
            signal.signal(sig, self._on_signal)
        try:
            return self._run()
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        first = self._pending_signal is None
        self._pending_signal = self._pending_signal or name
        if not first and not self._critical and not self._finishing:
            raise Interrupted(name)  # asked twice: do not wait for the next safe point

    def check_interrupt(self) -> None:
        """Raise Interrupted if Ctrl-C / SIGTERM came and no commit is in progress (a safe point)."""
        if self._pending_signal is not None and not self._critical and not self._finishing:
            raise Interrupted(self._pending_signal)

    def _run(self) -> int:
        self._load()
        self._compile()
        self.check_interrupt()
        if not self.opts.resume:
            if (self.folder / "manifest.json").exists() or (self.folder / "journal.jsonl").exists():
                raise InputError(f"{self.folder} already holds a run", fix=f"continue it with 'labctl run --resume "
                                 f"{self.folder}', or give another --out folder")
            est = 64 * 1024 * 1024
            preflight(self.folder, est)
            self._write_manifest()
        self.journal = Journal(self.folder)
        self._history_from_journal()
        lock = RunLock(self.folder)
        died = lock.previous_died()
        self._critical += 1  # from here a signal is handled by the try below, not lost before it
        lock.acquire()
        status, code = "running", EXIT_OK
        previous_status = self.journal.status
        try:
            self._critical -= 1
            self.journal.set_status("running", resumed=bool(self.opts.resume), pid=os.getpid())
            self.check_interrupt()
            self._connect()
            if died or (self.opts.resume and previous_status not in (None, "complete", "interrupted", "failed")):
                problems = self.station.safe_state()  # type: ignore[union-attr]
                self.journal.event("safe_state_after_crash", problems=problems)
                self.say(f"labctl: the previous run in {self.folder} ended without cleaning up; "
                         "instruments were put in their safe state before resuming")
            self.check_interrupt()
            self._write_h5("running", force=True)
            if self.seq.experiment == "parametric":
                self._install_plan()
                code = self._run_parametric()
            else:
                self._lasers_to_setpoints()
                self._attenuators_to_setpoints()
                self._detectors_to_setpoints()
                self._install_plan()  # faults hit the acquisition (times and counts from here)
                self._run_points()
            status = "complete"
        except Interrupted as e:
            status, code = "interrupted", EXIT_INTERRUPTED
            self.say(f"labctl: interrupted ({e}); instruments going to their safe state, data kept")
        except KeyboardInterrupt:
            status, code = "interrupted", EXIT_INTERRUPTED
            self.say("labctl: interrupted; instruments going to their safe state, data kept")
        except InputError:
            status = "failed"
            raise
        except LabctlError as e:
            status, code = "failed", EXIT_FAULT
            gave_up = len(self.faults) > self._faults_before and self.faults[-1].kind == "unrecoverable"
            self.fault("unrecoverable" if gave_up else "fault", getattr(e, "instrument", "run"),
                       "stopped in the safe state", message=str(e))
            self.say(f"labctl: {e}\nlabctl: the run stopped; instruments are in their safe state, data so far kept in {self.folder}")
        except Exception as e:  # a bug: still safe state and keep the data, then report it
            status = "failed"
            self.fault("internal_error", "labctl", "stopped in the safe state; please report this with the run folder",
                       message=f"{type(e).__name__}: {e}")
            raise
        finally:
            self._finishing = True  # signals from here on are noted, never raised: the end must complete
            try:
                self._finish(status)
            finally:
                lock.release()
        if self._pending_signal is not None and code == EXIT_OK:
            self.say(f"labctl: {self._pending_signal} came as the run was ending; the run is complete")
        return code

    def _history_from_journal(self) -> None:
        """After a resume: the lock telemetry of the blocks and the faults that earlier processes
        committed, so the report and the run file describe the whole run, not the last process."""
        assert self.journal is not None
        for b in self.journal.blocks:
            if b.lock:
                self.lock_blocks.append({**b.lock, "point": b.point, "block": b.block})
        for ev in self.journal.events:
            if ev.get("type") == "fault":
                self.faults.append(FaultRecord(str(ev.get("kind", "fault")), str(ev.get("instrument", "")),
                                               str(ev.get("handling", "")), ev.get("point"), ev.get("block"),
                                               str(ev.get("message", "")), float(ev.get("t", 0.0))))
        self._faults_before = len(self.faults)

    def _install_plan(self) -> None:
        if self.plan is not None:
            self.injector = _install_faults(self.plan, self.station)  # type: ignore[arg-type]

    def _run_points(self) -> None:
        from .progress import Progress

        assert self.journal is not None
        block = self._block_trials()
        total = sum(self.trials)
        done_total = sum(b.trials for b in self.journal.blocks)
        prog = Progress(total, len(self.seq.points), done=done_total, enabled=self.opts.progress)
        try:
            for pt in self.seq.points:
                k = pt.index
                if k in self.journal.done_points:
                    continue
                target = self.trials[k]
                blocks = self.journal.point_blocks(k)
                done = sum(b.trials for b in blocks)
                b = len(blocks)
                self._apply_point(k)
                if not self._lock_started:  # the lock needs the aux pulse: after the first programs
                    self._start_lock()
                    self._lock_started = True
                # detector rates of the point's committed blocks (after a resume: the journal's)
                expected: list[float] | None = None
                for prev in blocks:
                    expected = _smoothed_rates(expected, _detector_rates(prev.counts, prev.trials))
                repeats: dict[str, int] = {}  # consecutive repeats per cause, dropped when that check passes
                prog.point(k, pt.parameters)
                while done < target:
                    self.check_interrupt()
                    n = min(block, target - done)
                    t0 = time.monotonic()
                    self._paused = 0.0
                    self._check_lasers(k, b)
                    lock_tel = self._lock_block(k, b)
                    try:
                        recs, vec = self._acquire_block(k, b, n, done)
                    except SyncMismatch as e:
                        self._count_repeat(repeats, "sync", "trigger", k, b,
                                           f"the sync rate stayed wrong after {MAX_BLOCK_REPEATS} re-programmings",
                                           f"the tagger's sync rate does not match the sequence's period ({e})",
                                           message=str(e))
                        self.fault("sync", "trigger", "block discarded (the trigger rate changed: a pulse "
                                   "generator rebooted?); every instrument re-programmed, block repeated",
                                   message=str(e), point=k, block=b)
                        self._apply_point(k)
                        continue
                    repeats.pop("sync", None)
                    rates = _detector_rates(vec, n)
                    dets = self._latched_detectors(vec, None if expected is None else [r * n for r in expected],
                                                   self._block_photons, n)
                    if dets:
                        names = " and ".join(f"detector {d + 1}" for d in dets)
                        self._count_repeat(repeats, "silent", names, k, b,
                                           f"still silent after {MAX_BLOCK_REPEATS} bias resets",
                                           f"{names} stayed silent after {MAX_BLOCK_REPEATS} bias resets (latched, "
                                           "unbiased, or the light does not reach it)")
                        self._recover_detectors(dets, k, b)
                        continue  # the block's data are bad: repeat it
                    repeats.pop("silent", None)
                    if not self._check_lasers(k, b):
                        hops = repeats.get("mode_hop", 0) + 1
                        self._count_repeat(repeats, "mode_hop", "lasers", k, b,
                                           f"a laser left its wavelength in {hops} blocks in a row",
                                           f"a laser mode-hopped in {hops} blocks in a row (adjust the diode "
                                           "current or re-tune)")
                        continue  # a mode hop during the block: repeat it
                    repeats.pop("mode_hop", None)
                    expected = _smoothed_rates(expected, rates)
                    entry = BlockEntry(k, b, n, done, vec, 0, 0, paused_s=self._paused, lock=lock_tel,
                                       wall_time=time.monotonic() - t0, extra={"counting": self._counting})
                    self._critical += 1
                    try:
                        self.journal.commit_block(entry, recs)
                        if lock_tel:
                            self.lock_blocks.append({**lock_tel, "point": k, "block": b})
                    finally:
                        self._critical -= 1
                    self.check_interrupt()
                    done += n
                    b += 1
                    prog.advance(n, self.journal.point_counts(k))
                    self._write_h5("running")
                self._critical += 1
                try:
                    self.journal.point_done(k)
                finally:
                    self._critical -= 1
                self.check_interrupt()
        finally:
            prog.close()

    def _run_parametric(self) -> int:
        from .parametric_run import run_parametric

        return run_parametric(self)

    # ------------------------------------------------------------------------------------------
    # the end
    # ------------------------------------------------------------------------------------------
    def _points_data(self) -> list[dict[str, Any]]:
        assert self.journal is not None
        out = []
        for p in self.manifest["points"]:
            k = p["index"]
            blocks = self.journal.point_blocks(k)
            out.append({"parameters": p["parameters"], "counts": vector_to_counts(self.journal.point_counts(k)),
                        "complete": k in self.journal.done_points,
                        "paused_s": float(sum(b.paused_s for b in blocks))})
        return out

    def _write_h5(self, status: str, *, force: bool = False, report: dict[str, Any] | None = None) -> None:
        now = time.monotonic()
        if not force and now - self._last_h5 < H5_REWRITE_S:
            return
        programs = self.compiled.as_json() if self.compiled is not None else None
        write_run_file(self.folder, self.manifest, self.journal, instruments=getattr(self, "instruments_info", None),  # type: ignore[arg-type]
                       programs=programs, status=status, report=report,
                       telemetry=_lock_telemetry_arrays(self.lock_blocks),
                       arrays=getattr(self, "parametric_arrays", None))
        self._last_h5 = time.monotonic()

    def _injected_events(self) -> list[dict[str, Any]]:
        """Every injected fault of the run: this process's injector events, and the ones earlier
        processes of a resumed run wrote to the journal (``injected`` events)."""
        earlier = [ev for ev in (self.journal.events if self.journal is not None else [])
                   if ev.get("type") == "injected" and ev.get("pid") != os.getpid()]
        return earlier + list(getattr(self.injector, "events", []) or [])

    def _journal_injected(self) -> None:
        """Record this process's injected faults in the journal (so a resume knows what fired)."""
        if self.journal is None:
            return
        for ev in getattr(self.injector, "events", []) or []:
            try:
                self.journal.event("injected", pid=os.getpid(), fault=ev.get("fault"), time=ev.get("time"),
                                   instrument=str(ev.get("instrument", "")), kind=str(ev.get("kind", "")),
                                   details=str(ev.get("details", ""))[:500])
            except (OSError, ValueError) as e:  # a journal that cannot be written is reported elsewhere
                log.warning("journalling an injected fault failed: %s", e)

    def _faults_for_report(self) -> list[dict[str, Any]]:
        """Faults the run met and handled, plus every injected fault (``--faults``) that never
        surfaced as an error, with what absorbed it, and the plan's faults that never fired (in
        any process of a resumed run)."""
        out = [f.as_dict() for f in self.faults]
        handled = {(f.instrument.split(" ")[0], f.kind) for f in self.faults}
        absorbed = {"latency": "slower replies: no action needed (a reply later than the driver's timeout is "
                               "met as a timeout, listed apart)",
                    "phase_disturbance": "absorbed by the phase lock (see lock telemetry)",
                    "mode_hop": "the wavelength check saw no deviation"}
        injected = self._injected_events()
        for ev in injected:
            inst, kind = str(ev.get("instrument", "")), str(ev.get("kind", ""))
            # an injected fault is shown apart unless a handled fault of the same instrument is
            # what it turns into (a lost reply is met as a timeout, a full queue as an error, …)
            if any((inst, k) in handled for k in SURFACES_AS.get(kind, (kind,))):
                continue
            out.append({"kind": kind, "instrument": inst, "injected": True, "t": ev.get("time"),
                        "message": str(ev.get("details", "")),
                        "handling": absorbed.get(kind, "injected; no error from this instrument (what it "
                                                       "caused elsewhere, if anything, is listed with its handling)")})
        # a fault of the plan whose trigger never came: say so, or a CI job would believe the
        # fault was exercised
        fired = {ev.get("fault") for ev in injected}
        for f in getattr(self.plan, "faults", []) if self.plan is not None else []:
            if f.index not in fired:
                out.append({"kind": f.kind, "instrument": f.instrument, "injected": False, "line": f.line,
                            "message": f"planned: {f.describe()}",
                            "handling": "never triggered: the run ended before the trigger came"})
        return out

    def _finish(self, status: str) -> None:
        if self.injector is not None:
            try:
                self.injector.remove()
            except Exception as e:  # removing fault hooks must not hide the run's outcome
                log.warning("removing the fault plan failed: %s", e)
        if self.station is not None:
            problems = self.station.safe_state()
            for p in problems:
                self.fault("safe_state", p.split(":", 1)[0], "safe state failed for this instrument: check it by hand",
                           message=p)
            self.station.close()
        if self.journal is None:
            return
        self._journal_injected()
        self.journal.set_status(status)
        points = self._points_data()
        files = {"run_file": str(self.folder / "run.h5"), "report": str(self.folder / "report.json"), "plots": []}
        rep = build_report(sequence=self.seq.name, experiment=self.seq.experiment, points=points,
                           lock=lock_summary(self.lock_blocks), faults=self._faults_for_report(),
                           files=files, status=status, extra=getattr(self, "report_extra", None))
        if self.opts.plots:
            try:
                from .plots import draw_all

                total = sum_counts([p["counts"] for p in points])
                files["plots"] = draw_all(self.folder, self.manifest, points, total)
            except Exception as e:  # a plot must never cost the data
                log.warning("plots failed: %s", e)
                rep["plot_error"] = str(e)
        write_atomic(self.folder / "report.json", dumps(rep).encode())
        self._write_h5(status, force=True, report=rep)
        self.journal.close()
        self.report = rep
        self.say(summary_text(rep))


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def _station_from_text(text: str, file: str) -> StationConfig:
    """Load a station from the manifest's copy (resume must not depend on the original file)."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / Path(file).name
        p.write_text(text)
        cfg = load_station(p)
    cfg.path = file
    cfg.doc.file = file
    return cfg


def _drain_errors(inst: Any) -> None:
    try:
        inst.check_errors()
    except InstrumentError:
        pass
    try:
        inst.transport.discard_input()
    except Exception:  # nothing to discard
        pass


def _attach_twin(station: Station, cfg: StationConfig, seed: int | None) -> Any:
    try:
        from sim_instruments.twin import Twin
    except ImportError:
        return None
    return Twin.attach(station.lab, params=cfg.model.twin or None, seed=seed)


def _load_fault_plan(path: str | None, text: str | None) -> Any:
    from .faults import load_fault_plan, loads_fault_plan

    if text is not None:
        return loads_fault_plan(text, path or "<fault plan>")
    return load_fault_plan(path)


def _install_faults(plan: Any, station: Station) -> Any:
    """In-process injector for --sim, the emulator's control port for an emulated station."""
    from .faults import injector_for

    inj = injector_for(plan, station)
    inj.install()
    return inj


def _detector_rates(counts: list[int], trials: int) -> list[float]:
    """Herald + read clicks per trial of detectors 1 and 2 from a counts vector (COUNT_FIELDS)."""
    return [(counts[1] + counts[3]) / trials, (counts[2] + counts[4]) / trials]


def _smoothed_rates(expected: list[float] | None, rates: list[float]) -> list[float]:
    """The running expectation of the detector rates: the first block's, then 80 % old + 20 % new."""
    return rates if expected is None else [0.8 * e + 0.2 * r for e, r in zip(expected, rates)]


def _lock_telemetry_arrays(blocks: list[dict[str, Any]]) -> dict[str, Any]:
    if not blocks:
        return {}
    keys = ("point", "block", "rms_error", "mean_error", "locked_fraction", "output_mean", "jumps", "relocks")
    return {k: np.array([float(b.get(k, np.nan) if b.get(k) is not None else np.nan) for b in blocks]) for k in keys}
