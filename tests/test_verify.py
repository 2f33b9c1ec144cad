"""``labctl verify``: a complete run passes; every way a run folder can lose or double-count trials
is found and named (run files tampered with h5py, journals ahead of run.h5)."""
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from labctl.cli import main
from labctl.tags.herald import window_bins
from labctl.verify import verify_run

REPO = Path(__file__).resolve().parents[1]
SEQ = str(REPO / "sequences/dlcz_witness.yaml")
CFG = str(REPO / "configs/lab.yaml")


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("verify") / "run"
    rc = main(["run", SEQ, "--config", CFG, "--sim", "--out", str(out), "--seed", "11", "--trials", "2e6",
               "--block-trials", "4e5", "--progress", "off", "--no-plots"])
    assert rc == 0
    return out


@pytest.fixture
def run_copy(good_run, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(good_run, dst)
    return dst


def test_a_complete_run_passes_with_every_block_recounted(good_run, capsys):
    rc = verify_run(good_run)
    assert rc.ok, rc.all_problems
    (p,) = rc.points
    assert p.blocks == 5 and p.recounted_blocks == 5 and p.trials_done == p.trials_target == 2_000_000
    assert p.records > 1000  # a real recount, not of nothing
    assert main(["verify", str(good_run)]) == 0
    assert "OK: every trial is counted exactly once" in capsys.readouterr().out
    assert main(["verify", str(good_run / "run.h5"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True


def _edit_blocks(folder: Path, edit) -> None:  # noqa: ANN001
    with h5py.File(folder / "run.h5", "r+") as f:
        g = f["points/p000"]
        arr = g["blocks"][()]
        arr = edit(arr)
        del g["blocks"]
        g.create_dataset("blocks", data=arr)


def _problems(folder: Path) -> str:
    rc = verify_run(folder)
    assert not rc.ok
    return "\n".join(rc.all_problems)


def test_overlapping_blocks_are_trials_counted_twice(run_copy):
    def overlap(a):
        a["sync_start"][2] -= 1000
        return a
    _edit_blocks(run_copy, overlap)
    assert "block 2 starts at trial" in _problems(run_copy) and "counted twice" in _problems(run_copy)


def test_a_missing_block_is_trials_lost(run_copy):
    _edit_blocks(run_copy, lambda a: np.delete(a, 1))
    msg = _problems(run_copy)
    assert "numbered [0, 2, 3, 4]" in msg and "skipped" in msg
    assert "trials_done is 2000000 but the blocks hold 1600000" in msg
    assert "journal has 5 blocks, run.h5 4" in msg


def test_lost_records_and_changed_records_are_found(run_copy):
    with h5py.File(run_copy / "run.h5", "r+") as f:
        d = f["points/p000/records"]
        d.resize((d.shape[0] - 1,))
    assert "the records dataset holds" in _problems(run_copy)


def test_a_record_moved_to_the_other_detector_changes_the_recount(run_copy):
    with h5py.File(run_copy / "run.h5", "r+") as f:
        d = f["points/p000/records"]
        recs = d[()]
        counting = json.loads(f["points/p000"].attrs["counting"])
        lo, hi = window_bins(*counting["pump_window_s"], counting["resolution_s"])
        special, channel, dtime = recs >> 31, (recs >> 25) & 0x3F, (recs >> 10) & 0x7FFF
        herald = (special == 0) & (channel == 0) & (dtime >= lo) & (dtime < hi)
        i = int(np.flatnonzero(herald)[0])  # a herald click on detector 1 …
        recs[i] ^= np.uint32(1 << 25)       # … now on detector 2
        d[...] = recs
    msg = _problems(run_copy)
    assert "recounting its records gives" in msg
    assert "differ from p000.u32" in msg


def test_counts_that_are_not_the_sum_of_the_blocks(run_copy):
    with h5py.File(run_copy / "run.h5", "r+") as f:
        c = f["points/p000/counts"]
        c[1] = c[1] + 7
    assert "not the sum of its blocks'" in _problems(run_copy)


def test_complete_with_missing_trials(run_copy):
    with h5py.File(run_copy / "run.h5", "r+") as f:
        f["points/p000"].attrs["trials_target"] = 3_000_000
    assert "marked complete with 2000000 of 3000000 trials" in _problems(run_copy)


def test_journal_ahead_of_the_run_file_and_a_live_lock(run_copy):
    lines = (run_copy / "journal.jsonl").read_text().splitlines()
    block = next(line for line in lines if '"type": "block"' in line)
    with open(run_copy / "journal.jsonl", "a") as fh:
        fh.write(block + "\n")
    (run_copy / "run.lock").write_text("12345\n")
    msg = _problems(run_copy)
    assert "the journal has 6 blocks, run.h5 5" in msg and "resume" in msg
    assert "run.lock is present" in msg


def test_not_a_run_folder_is_an_input_error(tmp_path, capsys):
    assert main(["verify", str(tmp_path)]) == 2
    assert "no run file" in capsys.readouterr().err
    (tmp_path / "run.h5").write_bytes(b"not hdf5")
    assert main(["verify", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "cannot open the run file" in err and "Traceback" not in err


def test_a_tampered_run_exits_3_and_lists_the_problem(run_copy, capsys):
    _edit_blocks(run_copy, lambda a: np.delete(a, 4))
    assert main(["verify", str(run_copy)]) == 3
    out = capsys.readouterr().out
    assert "PROBLEM:" in out and "OK:" not in out
