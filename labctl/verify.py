"""Is a run folder complete and consistent? Every trial counted exactly once, nothing lost.

``labctl verify RUN_DIR`` checks, for each sweep point of ``run.h5``:

* the blocks are numbered 0, 1, 2, … with no gap or repeat;
* each block's trials start where the previous block's ended (``sync_start`` is the running sum
  of ``trials``, from 0): no trial counted twice, none skipped;
* ``trials_done`` is that sum, and a point marked complete has all of ``trials_target``;
* each block's records follow the previous block's (``records_offset``), and the records dataset
  holds exactly ``records_count`` summed over the blocks;
* the point's counts are the sum of its blocks' counts, and N is the number of trials;
* recounting each block's raw records (with the record format, resolution and windows stored with
  it) gives the block's counts, and no record lies beyond the block's last trial;
* the run's status: ``complete`` means every point is complete;

and, when the folder still has its journal and raw record files, that ``run.h5`` holds the same
blocks and records as the journal (it is rewritten from the journal every few seconds during a
run: a folder whose run died holds a journal ahead of ``run.h5`` until ``labctl run --resume``).

The result lists every problem found; none means the data are complete and each trial is counted
once.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError
from .storage import COUNT_FIELDS, FORMAT, RECORD_FORMAT, Journal


@dataclass
class PointCheck:
    index: int
    blocks: int
    trials_done: int
    trials_target: int
    complete: bool
    records: int
    recounted_blocks: int = 0
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class RunCheck:
    folder: str
    status: str
    points: list[PointCheck] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  #: run-level problems (points' are in points)

    @property
    def all_problems(self) -> list[str]:
        return self.problems + [f"point {p.index}: {m}" for p in self.points for m in p.problems]

    @property
    def ok(self) -> bool:
        return not self.all_problems

    def as_dict(self) -> dict[str, Any]:
        return {"folder": self.folder, "status": self.status, "ok": self.ok,
                "trials_done": sum(p.trials_done for p in self.points),
                "trials_target": sum(p.trials_target for p in self.points),
                "points": [p.as_dict() for p in self.points], "problems": self.all_problems}


def _recount(records: np.ndarray, counting: dict[str, Any], trials: int) -> tuple[list[int], int | None, int]:
    """The counts vector of one block's records, their last sync and the overflow-corrected end."""
    from .storage import counts_to_vector
    from .tags.herald import HeraldCounter

    hc = HeraldCounter.from_windows(counting.get("record_format", RECORD_FORMAT),
                                    tuple(counting["pump_window_s"]), tuple(counting["read_window_s"]),
                                    float(counting["resolution_s"]))
    hc.feed(records)
    res = hc.result(trials=trials)
    return counts_to_vector(res.counts(channels=counting.get("channels", (0, 1)))), res.last_sync, res.end_sync


def _check_point(name: str, g: Any, recount: bool) -> PointCheck:
    blocks = g["blocks"][()]
    records = g["records"]
    a = g.attrs
    pc = PointCheck(index=int(a["index"]), blocks=len(blocks), trials_done=int(a["trials_done"]),
                    trials_target=int(a["trials_target"]), complete=bool(a["complete"]),
                    records=int(records.shape[0]))
    bad = pc.problems.append
    if len(blocks):
        numbers = blocks["block"].tolist()
        if numbers != list(range(len(blocks))):
            bad(f"blocks are numbered {numbers[:12]}{' …' if len(numbers) > 12 else ''}, not 0..{len(blocks) - 1}")
        trials = blocks["trials"].astype(np.int64)
        if (trials <= 0).any():
            bad(f"blocks {np.flatnonzero(trials <= 0).tolist()} have no trials")
        want_start = np.concatenate([[0], np.cumsum(trials)[:-1]])
        wrong = np.flatnonzero(blocks["sync_start"] != want_start)
        if wrong.size:
            i = int(wrong[0])
            kind = "counted twice" if blocks["sync_start"][i] < want_start[i] else "skipped"
            bad(f"block {i} starts at trial {int(blocks['sync_start'][i])}, the blocks before it end at "
                f"{int(want_start[i])}: trials {kind} ({wrong.size} block(s) out of place)")
        want_off = np.concatenate([[0], np.cumsum(blocks["records_count"].astype(np.int64))[:-1]])
        wrong = np.flatnonzero(blocks["records_offset"] != want_off)
        if wrong.size:
            bad(f"block {int(wrong[0])}'s records start at {int(blocks['records_offset'][wrong[0]])}, expected "
                f"{int(want_off[wrong[0]])}")
        total_trials = int(trials.sum())
        total_records = int(blocks["records_count"].sum())
    else:
        total_trials = total_records = 0
    if total_trials != pc.trials_done:
        bad(f"trials_done is {pc.trials_done} but the blocks hold {total_trials} trials")
    if total_records != pc.records:
        bad(f"the records dataset holds {pc.records} records, the blocks account for {total_records}")
    if pc.complete and pc.trials_done != pc.trials_target:
        bad(f"marked complete with {pc.trials_done} of {pc.trials_target} trials")
    if pc.trials_done > pc.trials_target:
        bad(f"{pc.trials_done} trials acquired for a target of {pc.trials_target}")
    counts = g["counts"][()].astype(np.int64).tolist()
    summed = [total_trials] + [int(blocks[k].sum()) if len(blocks) else 0 for k in COUNT_FIELDS[1:]]
    if counts != summed:
        bad(f"the point's counts {counts} are not the sum of its blocks' {summed}")
    if not recount or not len(blocks):
        return pc
    counting_attr = a.get("counting")
    if counting_attr is None:
        bad("no counting parameters stored (run.h5 written by an older labctl): records not recounted")
        return pc
    counting = json.loads(counting_attr)
    recs = records[()]
    for i, b in enumerate(blocks):
        c = counting[i] if isinstance(counting, list) else counting
        if not c:
            bad(f"block {i} has no counting parameters: not recounted")
            continue
        off, cnt, n = int(b["records_offset"]), int(b["records_count"]), int(b["trials"])
        vec, last, end = _recount(recs[off:off + cnt], c, n)
        stored = [n] + [int(b[k]) for k in COUNT_FIELDS[1:]]
        if vec != stored:
            diff = {k: (s, r) for k, s, r in zip(COUNT_FIELDS, stored, vec) if s != r}
            bad(f"block {i}: recounting its records gives {diff} (stored, recounted)")
        if last is not None and last >= n:
            bad(f"block {i}: a record at trial {last}, beyond the block's {n} trials")
        if end > n:
            bad(f"block {i}: its overflow records reach trial {end}, beyond the block's {n} trials")
        pc.recounted_blocks += 1
    return pc


def _check_journal(folder: Path, f: Any, rc: RunCheck) -> None:
    """run.h5 against the journal and the raw record files it was written from."""
    bad = rc.problems.append
    if not (folder / "journal.jsonl").exists():
        return
    if (folder / "run.lock").exists():
        bad("run.lock is present: a run is going on in this folder, or it died (resume it with "
            f"'labctl run --resume {folder}')")
    # read-only look at the journal (Journal() would cut a torn tail: not for a verifier)
    blocks: dict[int, list[dict[str, Any]]] = {}
    for line in (folder / "journal.jsonl").read_bytes().split(b"\n"):
        if not line.strip():
            continue
        try:
            ev = json.loads(line)
        except json.JSONDecodeError:
            bad("the journal ends in a torn line (the run died while writing it; resume repairs it)")
            break
        if ev.get("type") == "block":
            blocks.setdefault(int(ev["point"]), []).append(ev)
    for name in sorted(f["points"]):
        g = f["points"][name]
        k = int(g.attrs["index"])
        jb = blocks.get(k, [])
        hb = g["blocks"][()]
        if len(jb) != len(hb):
            bad(f"point {k}: the journal has {len(jb)} blocks, run.h5 {len(hb)} (resume the run to bring "
                "run.h5 up to date)" if len(jb) > len(hb) else
                f"point {k}: run.h5 has {len(hb)} blocks, the journal only {len(jb)}")
            continue
        for i, (e, h) in enumerate(zip(jb, hb)):
            if (e["trials"], e["sync_start"], e["records_offset"], e["records_count"]) != (
                    int(h["trials"]), int(h["sync_start"]), int(h["records_offset"]), int(h["records_count"])):
                bad(f"point {k} block {i}: the journal and run.h5 disagree")
            if [int(x) for x in e["counts"][1:]] != [int(h[c]) for c in COUNT_FIELDS[1:]]:
                bad(f"point {k} block {i}: the journal's counts differ from run.h5's")
        raw = Journal.records_path_in(folder, k)
        if raw.exists():
            on_disk = np.fromfile(raw, dtype="<u4")
            n = int(g["records"].shape[0])
            if on_disk.size < n:
                bad(f"point {k}: {raw.name} holds {on_disk.size} records, run.h5 {n}")
            elif not np.array_equal(on_disk[:n], g["records"][()]):
                bad(f"point {k}: run.h5's records differ from {raw.name}")


def verify_run(run_dir: str | Path, *, recount: bool = True) -> RunCheck:
    """Check a run folder (or a ``run.h5``); see the module docstring. Raises InputError when there
    is no labctl run file to check."""
    import h5py

    path = Path(run_dir)
    h5 = path / "run.h5" if path.is_dir() else path
    folder = h5.parent
    if not h5.exists():
        hint = (" (the folder has a journal: the run died before its first run file; resume it with "
                f"'labctl run --resume {path}')") if (folder / "journal.jsonl").exists() else ""
        raise InputError(f"no run file in {run_dir}{hint}", fix="give a folder written by 'labctl run'")
    try:
        f = h5py.File(h5, "r")
    except OSError as e:
        raise InputError(f"cannot open the run file: {e}", file=str(h5),
                         fix="give a run folder written by 'labctl run' (it holds run.h5)") from None
    with f:
        if f.attrs.get("format") != FORMAT:
            raise InputError("not a labctl run file", file=str(h5), fix="give a folder written by 'labctl run'")
        status = str(f.attrs.get("status"))
        rc = RunCheck(folder=str(folder), status=status)
        for name in sorted(f["points"]):
            rc.points.append(_check_point(name, f["points"][name], recount))
        if status == "complete":
            missing = [p.index for p in rc.points if not p.complete]
            if missing:
                rc.problems.append(f"status is complete but points {missing} are not")
        _check_journal(folder, f, rc)
    return rc


def summary_text(rc: RunCheck) -> str:
    lines = [f"{rc.folder}: status {rc.status}, {len(rc.points)} point(s), "
             f"{sum(p.trials_done for p in rc.points):,} of {sum(p.trials_target for p in rc.points):,} trials"]
    for p in rc.points:
        state = "complete" if p.complete else "incomplete"
        lines.append(f"  point {p.index}: {p.blocks} blocks, {p.trials_done:,}/{p.trials_target:,} trials "
                     f"({state}), {p.records:,} records, {p.recounted_blocks} blocks recounted from records")
    if rc.ok:
        lines.append("OK: every trial is counted exactly once, the counts match the raw records")
    else:
        lines += [f"PROBLEM: {m}" for m in rc.all_problems]
    return "\n".join(lines)
