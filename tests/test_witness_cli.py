"""``labctl witness`` through labctl.cli.main: output, exit codes, no tracebacks."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from labctl.cli import main

OPT = ("trials: 1114000000\npump: [111134, 184114]\nread: [108723, 167427]\n"
       "coincidences:\n  - [9, 129]\n  - [130, 37]\n")


@pytest.fixture
def opt_file(tmp_path: Path) -> Path:
    p = tmp_path / "opt.yaml"
    p.write_text(OPT)
    return p


def test_json(opt_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["witness", str(opt_file), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"g2", "Rm", "Rm_sym", "confidence", "counts"}
    assert abs(out["Rm"][0]["value"] - 0.612) < 0.01
    assert abs(out["Rm"][1]["value"] - 0.846) < 0.01
    assert abs(out["Rm_sym"]["value"] - 0.74) < 0.015
    assert abs(out["confidence"]["1.0"] - 0.984) < 0.003
    for r in out["Rm"] + [out["Rm_sym"]]:
        assert r["lower"] < r["value"] < r["upper"]


def test_files_are_summed(opt_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "other.yaml"
    other.write_text(OPT.replace("[9, 129]", "[11, 120]"))
    assert main(["witness", str(opt_file), str(other), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["counts"]["trials"] == 2 * 1114000000
    assert out["counts"]["coincidences"] == [[20, 249], [260, 74]]


def test_text_table(opt_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["witness", str(opt_file)]) == 0
    out = capsys.readouterr().out
    assert "g2" in out and "R_m,sym" in out and "98.4 %" in out
    assert "0.612" in out or "0.611" in out


@pytest.mark.parametrize("text, where", [
    ("trials: 1000\npump: [10, 10]\nread: [10, 10]\ncoincidences:\n  - [50, 1]\n  - [1, 1]\n", ":5:"),
    (OPT.replace("pump: [111134, 184114]", "pump: 111134"), ":2:"),
    ("trials: [\n", ":2:"),
    (OPT.replace("trials: 1114000000\n", ""), ":1:"),
])
def test_bad_counts_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, where: str) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    assert main(["witness", str(p), "--json"]) == 2
    cap = capsys.readouterr()
    assert cap.out == ""
    assert str(p) + where in cap.err
    assert "Traceback" not in cap.err and "—" in cap.err


def test_missing_file_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["witness", str(tmp_path / "nope.yaml")]) == 2
    err = capsys.readouterr().err
    assert "nope.yaml" in err and "Traceback" not in err


def test_no_arguments_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["witness"])
    assert e.value.code == 2


def test_degenerate_counts_print_null(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "z.yaml"
    p.write_text("trials: 1000\npump: [0, 12]\nread: [11, 9]\ncoincidences: [[0, 0], [0, 2]]\n")
    assert main(["witness", str(p), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["g2"][0][0] is None and out["Rm"][0]["value"] is None
    assert out["Rm_sym"] == {"value": None, "lower": None, "upper": None}
    assert out["confidence"] == {"1.0": None, "0.995": None}
    assert main(["witness", str(p)]) == 0
    assert "undefined" in capsys.readouterr().out
