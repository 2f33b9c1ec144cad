"""Sequences: expression language, parsing, validation errors (file:line and fix), sweeps."""
import copy
import math
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings, strategies as st

from labctl.cli import main
from labctl.errors import InputError
from labctl.sequence import load_sequence, loads_sequence
from labctl.sequence.expr import ExprError, Value, evaluate

REPO = Path(__file__).resolve().parents[1]
SHIPPED = ["dlcz_witness", "phase_sweep", "delay_sweep", "pump_probe"]
S = (("s", 1),)


# -- expressions ---------------------------------------------------------------------------------
def test_expression_arithmetic_and_units():
    names = {"tau": Value(123e-9, S), "pump.end": Value(1.04e-6, S)}
    assert evaluate("pump.end + tau", names.__getitem__).x == pytest.approx(1.163e-6)
    assert evaluate("2 * tau - 10 ns", names.__getitem__).x == pytest.approx(236e-9)
    assert evaluate("(1 us + 2 us) / 3").x == pytest.approx(1e-6)
    assert evaluate("-pi/2").x == pytest.approx(-math.pi / 2)
    assert evaluate("1 / (45 MHz)").x == pytest.approx(1 / 45e6)
    assert evaluate("1 / (45 MHz)").dim == S
    assert evaluate("4.2 GSa/s").x == 4.2e9


@pytest.mark.parametrize("bad", ["pump.end + 45 MHz", "40 parsec", "2 tau", "(1 ns", "1 ns $",
                                 "tau / 0", "", "__import__('os')", "tau ** 2", "open"])
def test_expression_errors(bad):
    names = {"tau": Value(123e-9, S), "pump.end": Value(1.04e-6, S)}

    def resolve(n):
        if n not in names:
            raise ExprError(f"unknown name {n!r}")
        return names[n]

    with pytest.raises(ExprError):
        evaluate(bad, resolve)


@settings(max_examples=300)
@given(st.text(alphabet="0123456789.+-*/() abcnsuMHzpi_e", max_size=30))
def test_expression_parser_never_crashes(text):
    try:
        evaluate(text, lambda n: Value(1.0, S))
    except InputError:
        pass


@given(st.floats(1e-12, 1e-3), st.floats(1e-12, 1e-3))
def test_sum_matches_floats(a, b):
    v = evaluate(f"{a!r} s + {b!r} s")
    assert v.x == pytest.approx(a + b, rel=1e-12)


# -- shipped sequences ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_sequences_validate(name, capsys):
    assert main(["validate", str(REPO / "sequences" / f"{name}.yaml"), "--config", str(REPO / "configs/lab.yaml")]) == 0
    assert "valid" in capsys.readouterr().out


def test_witness_sequence_resolves():
    seq = load_sequence(REPO / "sequences/dlcz_witness.yaml")
    pt = seq.points[0]
    pump, read, aux = pt.pulses
    assert seq.period == pytest.approx(50e-6)
    assert read.start - pump.start == pytest.approx(123e-9)
    assert aux.start == pytest.approx(read.end + 5e-6)
    assert pt.phase_offset == pytest.approx(0.2 * math.pi)
    assert pump.probability == pytest.approx(0.007)


def test_phase_sweep_points():
    seq = load_sequence(REPO / "sequences/phase_sweep.yaml")
    phases = [p.parameters["dphi"] for p in seq.points]
    assert len(phases) == 17 and phases[0] == 0 and phases[-1] == pytest.approx(2 * math.pi)
    assert [p.phase_offset for p in seq.points] == phases


def test_delay_sweep_moves_dependent_pulses():
    seq = load_sequence(REPO / "sequences/delay_sweep.yaml")
    for pt in seq.points:
        pump, read, aux = pt.pulses
        assert read.start - pump.start == pytest.approx(pt.parameters["tau"])
        assert aux.start == pytest.approx(read.end + 2e-6)


# -- validation errors ---------------------------------------------------------------------------
BASE = yaml.safe_load((REPO / "sequences/dlcz_witness.yaml").read_text())


def _broken(tmp_path, mutate, name="broken"):
    s = copy.deepcopy(BASE)
    mutate(s)
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(s, sort_keys=False))
    return p


def _line_of(path, needle):
    for i, line in enumerate(Path(path).read_text().splitlines(), 1):
        if needle in line:
            return i
    raise AssertionError(needle)


CASES = {
    "short_period": (lambda s: s.update(period="100 ns"), ["outside the period"]),
    "overlap": (lambda s: s["pulses"].append(dict(s["pulses"][0], name="pump_twin")), ["overlaps pulse 'pump'"]),
    "negative_start": (lambda s: s["pulses"][0].update(start="-5 ns"), ["before the period starts"]),
    "bad_unit": (lambda s: s["pulses"][0].update(duration="40 parsec"), ["unknown unit 'parsec'"]),
    "zero_duration": (lambda s: s["pulses"][0].update(duration="0 ns"), ["duration 0"]),
    "outside_period": (lambda s: s["pulses"][-1].update(start="49.99 us"), ["outside the period"]),
    "window_short": (lambda s: s["windows"][0].update(duration="30 ns"), ["does not cover pulse 'pump'"]),
    "thermal": (lambda s: s.update(period="45 us"), ["thermalisation needs 7"]),
    "lock_close": (lambda s: s["pulses"][2].update(start="read.end + 100 ns"), ["lock pulse 'aux'", "minimum"]),
    "unknown_role": (lambda s: s["pulses"][0].update(channel="pmup_aom"), ["unknown channel role 'pmup_aom'"]),
    "time_for_freq": (lambda s: s["pulses"][0].update(duration="40 MHz"), ["frequency", "must be a time"]),
    "cycle": (lambda s: s["values"].update(tau="read.start - pump.start"), ["circular reference"]),
    "unknown_key": (lambda s: s.update(perod="50 us"), ["unknown key 'perod'", "period"]),
    "dup_name": (lambda s: s["pulses"].append(dict(s["pulses"][2], name="pump", start="20 us")), ["used twice"]),
    "bad_sweep": (lambda s: s.update(sweep={"parameter": "nope", "values": ["1 ns"]}), ["not defined"]),
    "windows_overlap": (lambda s: s["windows"][1].update(start="pump.start"), ["overlap on the same detectors"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_broken_sequences_rejected_with_file_line_fix(tmp_path, case, capsys):
    mutate, words = CASES[case]
    p = _broken(tmp_path, mutate, case)
    rc = main(["validate", str(p), "--config", str(REPO / "configs/lab.yaml")])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert f"{case}.yaml:" in err and "Traceback" not in err
    assert " — " in err
    for w in words:
        assert w in err, err


def test_error_line_points_at_the_key(tmp_path):
    p = _broken(tmp_path, lambda s: s["pulses"][1].update(duration="-3 ns"), "neg")
    with pytest.raises(InputError) as e:
        load_sequence(p)
    assert e.value.line == _line_of(p, "duration: -3 ns")


def test_sweep_point_is_named_in_errors(tmp_path):
    def mutate(s):
        s["sweep"] = {"parameter": "tau", "values": ["123 ns", "48 us"]}
    p = _broken(tmp_path, mutate, "sweep")
    with pytest.raises(InputError) as e:
        load_sequence(p)
    assert "sweep point 2 of 2" in str(e.value)


def test_role_must_be_in_station(tmp_path, capsys):
    station = yaml.safe_load((REPO / "configs/lab.yaml").read_text())
    del station["channels"]["filter_2"]
    (tmp_path / "station.yaml").write_text(yaml.safe_dump(station))
    p = _broken(tmp_path, lambda s: s["pulses"][0].update(channel="filter_2"), "role")
    rc = main(["validate", str(p), "--config", str(tmp_path / "station.yaml")])
    assert rc == 2 and "not mapped in the station" in capsys.readouterr().err


def test_shared_output_overlap_is_caught_with_station(tmp_path, capsys):
    # aux_aom and read_aom are the same AFG output in the lab station
    p = _broken(tmp_path, lambda s: (s["pulses"][2].update(start="read.start", duration="40 ns"),
                                     s.update(lock={"min_gap": "0 ns"})), "shared")
    assert main(["validate", str(p)]) == 2  # also inside the read window without a station
    capsys.readouterr()


@settings(max_examples=60)
@given(st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8)),
                    lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(st.text(max_size=6), c, max_size=3)),
                    max_leaves=12))
def test_random_documents_never_crash(doc):
    try:
        loads_sequence(yaml.safe_dump(doc), "fuzz.yaml")
    except InputError:
        pass


@settings(max_examples=40)
@given(st.dictionaries(st.sampled_from(["start", "duration", "probability", "channel", "kind", "name"]),
                       st.one_of(st.text(max_size=10), st.integers(-5, 5), st.floats(allow_nan=True)), max_size=4))
def test_random_pulse_fields_never_crash(fields):
    s = copy.deepcopy(BASE)
    s["pulses"][0].update(fields)
    try:
        loads_sequence(yaml.safe_dump(s), "fuzz.yaml")
    except InputError:
        pass


def test_plot_sequence_writes_png_and_text(tmp_path, capsys):
    out = tmp_path / "seq.png"
    assert main(["plot-sequence", str(REPO / "sequences/delay_sweep.yaml"), "--point", "20", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = capsys.readouterr().out
    assert "read_aom" in text and "window herald" in text
    assert main(["plot-sequence", str(REPO / "sequences/delay_sweep.yaml"), "--point", "99"]) == 2
