"""Run storage: a crash-safe journal while the run goes, and the HDF5 run file derived from it.

A run folder holds::

    manifest.json        what was asked (sequence and station text, seed, trials, points); atomic
    journal.jsonl        one JSON line per committed event (block, point done, fault, status)
    records/pNNN.u32     raw TTTR records of point NNN, appended block by block (little-endian u32)
    run.h5               the run file (docs/data-format.md), rewritten atomically (tmp + rename)
    run.lock             the PID of the process running it (absent once it ended cleanly)

A block is committed by appending its records (flush + fsync) and then its journal line (flush +
fsync). A crash therefore loses at most the block in flight: on resume, records beyond the last
committed offset are cut off and an incomplete journal line is ignored. ``run.h5`` is never
half-written: it is written to a temporary file and renamed over the old one.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from . import __version__
from .errors import InputError, LabctlError

FORMAT = "labctl-run"
FORMAT_VERSION = 1
RECORD_FORMAT = "TimeHarp260N_T3"  #: the raw records' format (PicoQuant record type 0x00010305)
COUNT_FIELDS = ("trials", "p1", "p2", "r1", "r2", "c11", "c12", "c21", "c22")  #: c_ij: read i, herald j


def counts_to_vector(c: dict[str, Any]) -> list[int]:
    """Counts object (interfaces format) -> [N, C(p1), C(p2), C(r1), C(r2), C11, C12, C21, C22]."""
    co = c["coincidences"]
    return [int(c["trials"]), int(c["pump"][0]), int(c["pump"][1]), int(c["read"][0]), int(c["read"][1]),
            int(co[0][0]), int(co[0][1]), int(co[1][0]), int(co[1][1])]


def vector_to_counts(v: Iterable[int]) -> dict[str, Any]:
    n, p1, p2, r1, r2, c11, c12, c21, c22 = (int(x) for x in v)
    return {"trials": n, "pump": [p1, p2], "read": [r1, r2], "coincidences": [[c11, c12], [c21, c22]]}


def git_commit(path: Path | None = None) -> str:
    """The code's git commit (with '+dirty' when the tree has changes), or 'unknown'."""
    here = path or Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=5).stdout.strip()
        if not rev:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def preflight(out: Path, need_bytes: int) -> None:
    """Refuse an output folder that cannot be created or written, or a disk without room."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create the output folder {out}: {e.strerror}",
                         fix="choose a folder you can write (--out DIR)") from None
    probe = out / ".write-test"
    try:
        with open(probe, "wb") as f:
            f.write(b"x")
        probe.unlink()
    except OSError as e:
        raise InputError(f"cannot write in the output folder {out}: {e.strerror}",
                         fix="choose a folder you can write (--out DIR)") from None
    free = shutil.disk_usage(out).free
    if free < need_bytes:
        raise InputError(f"only {free / 1e6:.0f} MB free on the disk of {out}; the run needs about "
                         f"{need_bytes / 1e6:.0f} MB", fix="free disk space or write elsewhere (--out DIR)")


@dataclass
class BlockEntry:
    point: int
    block: int
    trials: int
    sync_start: int
    counts: list[int]
    records_offset: int
    records_count: int
    paused_s: float = 0.0
    lock: dict[str, Any] = field(default_factory=dict)
    wall_time: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


class Journal:
    """The run folder's append-only, fsync'ed record of what has been acquired."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / "journal.jsonl"
        (self.folder / "records").mkdir(parents=True, exist_ok=True)
        self.blocks: list[BlockEntry] = []
        self.events: list[dict[str, Any]] = []
        self.done_points: set[int] = set()
        self.status: str | None = None
        if self.path.exists():
            self._load()
        self._fh = open(self.path, "a", encoding="utf-8")

    @staticmethod
    def records_path_in(folder: Path, point: int) -> Path:
        """The raw record file of sweep point ``point`` in the run folder ``folder``."""
        return Path(folder) / "records" / f"p{point:03d}.u32"

    def records_path(self, point: int) -> Path:
        return self.records_path_in(self.folder, point)

    def _load(self) -> None:
        good = 0
        with open(self.path, "rb") as f:
            raw = f.read()
        for line in raw.split(b"\n"):
            if not line.strip():
                good += len(line) + 1
                continue
            try:
                ev = json.loads(line)
            except json.JSONDecodeError:
                break  # the line in flight when the process died
            good += len(line) + 1
            self._apply(ev)
        if good < len(raw):
            with open(self.path, "r+b") as f:
                f.truncate(min(good, len(raw)))
        # cut records beyond the last committed block of each point
        ends: dict[int, int] = {}
        for b in self.blocks:
            ends[b.point] = max(ends.get(b.point, 0), (b.records_offset + b.records_count) * 4)
        for p in (self.folder / "records").glob("p*.u32"):
            k = int(p.stem[1:])
            size = ends.get(k, 0)
            if p.stat().st_size > size:
                with open(p, "r+b") as f:
                    f.truncate(size)

    def _apply(self, ev: dict[str, Any]) -> None:
        t = ev.get("type")
        if t == "block":
            self.blocks.append(BlockEntry(ev["point"], ev["block"], ev["trials"], ev["sync_start"], ev["counts"],
                                          ev["records_offset"], ev["records_count"], ev.get("paused_s", 0.0),
                                          ev.get("lock", {}), ev.get("wall_time", 0.0), ev.get("extra", {})))
        elif t == "point_done":
            self.done_points.add(int(ev["point"]))
        elif t == "status":
            self.status = ev["status"]
            self.events.append(ev)
        else:
            self.events.append(ev)

    def _append(self, ev: dict[str, Any]) -> None:
        self._fh.write(json.dumps(ev, default=_json_default) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._apply(ev)

    def commit_block(self, entry: BlockEntry, records: np.ndarray) -> None:
        """Append the block's records, then its journal line (the commit point)."""
        path = self.records_path(entry.point)
        recs = np.ascontiguousarray(records, dtype="<u4")
        with open(path, "ab") as f:
            offset = f.tell() // 4
            f.write(recs.tobytes())
            f.flush()
            os.fsync(f.fileno())
        entry.records_offset = offset
        entry.records_count = int(recs.size)
        ev = {"type": "block", **entry.__dict__}
        self._append(ev)

    def point_done(self, point: int) -> None:
        self._append({"type": "point_done", "point": point, "t": time.time()})

    def event(self, event_type: str, **data: Any) -> None:
        self._append({**data, "type": event_type, "t": time.time()})

    def set_status(self, status: str, **data: Any) -> None:
        self._append({"type": "status", "status": status, "t": time.time(), **data})

    def point_blocks(self, point: int) -> list[BlockEntry]:
        return [b for b in self.blocks if b.point == point]

    def point_counts(self, point: int) -> list[int]:
        tot = [0] * len(COUNT_FIELDS)
        for b in self.point_blocks(point):
            tot = [a + int(x) for a, x in zip(tot, b.counts)]
        return tot

    def records(self, point: int) -> np.ndarray:
        path = self.records_path(point)
        if not path.exists():
            return np.zeros(0, dtype="<u4")
        return np.fromfile(path, dtype="<u4")

    def close(self) -> None:
        try:
            self._fh.close()
        except OSError:
            pass


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def dumps(o: Any) -> str:
    return json.dumps(o, default=_json_default, sort_keys=True)


def write_run_file(folder: Path, manifest: dict[str, Any], journal: Journal, *,
                   instruments: dict[str, Any] | None = None, programs: Any = None,
                   status: str = "running", report: dict[str, Any] | None = None,
                   telemetry: dict[str, Any] | None = None, arrays: dict[str, Any] | None = None) -> Path:
    """(Re)write ``folder/run.h5`` from the manifest and the journal, atomically."""
    import h5py

    path = Path(folder) / "run.h5"
    tmp = path.with_name("run.h5.tmp")
    str_dt = h5py.string_dtype("utf-8")
    with h5py.File(tmp, "w") as f:
        f.attrs.update({"format": FORMAT, "format_version": FORMAT_VERSION, "sequence": manifest["sequence_name"],
                        "status": status, "created": manifest["created"], "updated": time.strftime("%Y-%m-%dT%H:%M:%S"),
                        "labctl_version": manifest.get("labctl_version", __version__),
                        "git_commit": manifest.get("git_commit", "unknown"), "sim": bool(manifest.get("sim")),
                        "seed": -1 if manifest.get("seed") is None else int(manifest["seed"]),
                        "experiment": manifest.get("experiment", "dlcz")})
        prov = f.create_group("provenance")
        prov.create_dataset("sequence", data=manifest["sequence_text"], dtype=str_dt)
        prov["sequence"].attrs["file"] = manifest["sequence_file"]
        prov.create_dataset("station", data=manifest["station_text"], dtype=str_dt)
        prov["station"].attrs["file"] = manifest["station_file"]
        prov.create_dataset("manifest", data=dumps({k: v for k, v in manifest.items()
                                                     if k not in ("sequence_text", "station_text")}), dtype=str_dt)
        if programs is not None:
            prov.create_dataset("programs", data=dumps(programs), dtype=str_dt)
        if manifest.get("faults_text"):
            prov.create_dataset("fault_plan", data=manifest["faults_text"], dtype=str_dt)
        ig = f.create_group("instruments")
        for name, info in (instruments or manifest.get("instruments") or {}).items():
            g = ig.create_group(name)
            for k in ("idn", "driver", "resource", "role"):
                g.attrs[k] = str(info.get(k, ""))
            g.create_dataset("snapshot", data=dumps(info.get("snapshot", {})), dtype=str_dt)
        pg = f.create_group("points")
        block_dt = np.dtype([("block", "i8"), ("trials", "i8"), ("sync_start", "i8"), ("records_offset", "i8"),
                             ("records_count", "i8")] + [(k, "i8") for k in COUNT_FIELDS[1:]] +
                            [("paused_s", "f8"), ("lock_rms_rad", "f8"), ("locked_fraction", "f8"),
                             ("wall_time", "f8")])
        for pt in manifest["points"]:
            k = pt["index"]
            g = pg.create_group(f"p{k:03d}")
            blocks = journal.point_blocks(k)
            g.attrs.update({"index": k, "parameters": dumps(pt["parameters"]), "trials_target": int(pt["trials"]),
                            "trials_done": int(sum(b.trials for b in blocks)), "complete": k in journal.done_points})
            g.create_dataset("counts", data=np.array(journal.point_counts(k), dtype="i8"))
            g["counts"].attrs["fields"] = ",".join(COUNT_FIELDS)
            arr = np.zeros(len(blocks), dtype=block_dt)
            for i, b in enumerate(blocks):
                arr[i] = (b.block, b.trials, b.sync_start, b.records_offset, b.records_count, *b.counts[1:],
                          b.paused_s, float(b.lock.get("rms_error", np.nan)), float(b.lock.get("locked_fraction", np.nan)),
                          b.wall_time)
            g.create_dataset("blocks", data=arr)
            recs = journal.records(k)
            g.create_dataset("records", data=recs, dtype="<u4", chunks=(min(max(recs.size, 1), 1 << 18),),
                             compression="gzip", compression_opts=1, shuffle=True, maxshape=(None,))
            g["records"].attrs["format"] = f"{RECORD_FORMAT} (PicoQuant record type 0x00010305), one trial per sync"
            counting = [b.extra["counting"] for b in blocks if "counting" in b.extra]
            if counting:  # how the counts were made from the records (labctl verify recounts them)
                same = all(c == counting[0] for c in counting)
                g.attrs["counting"] = dumps(counting[0] if same and len(counting) == len(blocks) else
                                            [b.extra.get("counting") for b in blocks])
        events = [e for e in journal.events]
        f.create_dataset("events", data=dumps(events), dtype=str_dt)
        if telemetry:
            tg = f.create_group("telemetry")
            for name, arr in telemetry.items():
                tg.create_dataset(name, data=np.asarray(arr))
        if arrays:
            ag = f.create_group("data")
            for name, arr in arrays.items():
                a = np.asarray(arr)
                ag.create_dataset(name, data=a, compression="gzip" if a.size > 1024 else None)
        if report is not None:
            f.create_dataset("report", data=dumps(report), dtype=str_dt)
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return path


def read_run_file(path: Path) -> dict[str, Any]:
    """What ``labctl analyze`` and ``labctl plot`` need, from ``run.h5`` alone."""
    import h5py

    try:
        f = h5py.File(path, "r")
    except (OSError, FileNotFoundError) as e:
        raise InputError(f"cannot open the run file: {e}", file=str(path),
                         fix="give a run folder written by 'labctl run' (it holds run.h5)") from None
    with f:
        if f.attrs.get("format") != FORMAT:
            raise InputError("not a labctl run file", file=str(path), fix="give a folder written by 'labctl run'")
        out: dict[str, Any] = {"attrs": dict(f.attrs), "points": []}
        out["manifest"] = json.loads(f["provenance/manifest"][()])
        out["sequence_text"] = f["provenance/sequence"][()].decode() if isinstance(f["provenance/sequence"][()], bytes) else f["provenance/sequence"][()]
        out["events"] = json.loads(f["events"][()])
        for name in sorted(f["points"]):
            g = f["points"][name]
            out["points"].append({"index": int(g.attrs["index"]), "parameters": json.loads(g.attrs["parameters"]),
                                  "counts": vector_to_counts(g["counts"][()]), "complete": bool(g.attrs["complete"]),
                                  "trials_target": int(g.attrs["trials_target"]),
                                  "blocks": g["blocks"][()]})
        if "telemetry" in f:
            out["telemetry"] = {k: f["telemetry"][k][()] for k in f["telemetry"]}
        return out


class RunLock:
    """``run.lock`` holds the PID of the process running a folder; tells whether a previous
    process died without cleaning up (then its instruments may not be in their safe state)."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / "run.lock"

    def previous_died(self) -> bool:
        if not self.path.exists():
            return False
        try:
            pid = int(self.path.read_text().strip())
        except (ValueError, OSError):
            return True
        if pid == os.getpid():
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        raise LabctlError(f"the run in {self.path.parent} is still running (process {pid})")

    def acquire(self) -> None:
        write_atomic(self.path, str(os.getpid()).encode())

    def release(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
