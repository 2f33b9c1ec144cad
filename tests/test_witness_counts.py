"""Counts files: loading, validation with file:line messages, summing (labctl.analysis.counts)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labctl.analysis import Counts, load_counts, load_counts_files, loads_counts, sum_counts
from labctl.analysis.counts import KEYS, counts_from_data
from labctl.errors import InputError, InputErrors

OPT_TEXT = """\
trials: 1114000000          # N
pump: [111134, 184114]      # C(p1), C(p2)
read: [108723, 167427]      # C(r1), C(r2)
coincidences:               # C(r_i, p_j): row i = read detector, column j = herald detector
  - [9, 129]
  - [130, 37]
"""


def test_loads_the_interfaces_example() -> None:
    c = loads_counts(OPT_TEXT, "opt.yaml")
    assert c == Counts(1114000000, (111134, 184114), (108723, 167427), ((9, 129), (130, 37)))
    assert c.coincidences[1][0] == 130          # row = read detector 2, column = herald detector 1
    assert loads_counts(yaml.safe_dump(c.to_dict())) == c
    assert c.to_dict() == {"trials": 1114000000, "pump": [111134, 184114], "read": [108723, 167427],
                           "coincidences": [[9, 129], [130, 37]]}


def test_accepts_integral_floats_and_extra_keys() -> None:
    text = OPT_TEXT.replace("1114000000", "1.114e9") + "source: run 17\n"
    assert loads_counts(text).trials == 1114000000
    assert loads_counts(OPT_TEXT.replace("1114000000", "1.114e+9")).trials == 1114000000


def _error(text: str) -> InputError:
    with pytest.raises(InputError) as e:
        loads_counts(text, "c.yaml")
    return e.value


@pytest.mark.parametrize("text, line, words", [
    (OPT_TEXT.replace("trials: 1114000000", "trails: 1114000000"), 1, "missing key 'trials'"),
    (OPT_TEXT.replace("[111134, 184114]", "[111134]"), 2, "list of two"),
    (OPT_TEXT.replace("[108723, 167427]", "[108723, 167427, 5]"), 3, "list of two"),
    (OPT_TEXT.replace("  - [130, 37]\n", ""), 4, "2×2"),
    (OPT_TEXT.replace("[130, 37]", "[130, 37, 1]"), 4, "2×2"),
    (OPT_TEXT.replace("[9, 129]", "[9.5, 129]"), 5, "whole number"),
    (OPT_TEXT.replace("[9, 129]", "[nine, 129]"), 5, "whole number"),
    (OPT_TEXT.replace("[130, 37]", "[130, -37]"), 6, "negative"),
    (OPT_TEXT.replace("[130, 37]", "[130, 200000]"), 6, "larger than the read single count C(r2)"),
    (OPT_TEXT.replace("[9, 129]", "[9, 184115]").replace("108723", "999999"), 5,
     "larger than the herald single count C(p2)"),
    (OPT_TEXT.replace("167427", "2000000000"), 3, "larger than trials"),
    (OPT_TEXT.replace("1114000000", "0"), 1, "no trials"),
    (OPT_TEXT.replace("1114000000", "-5"), 1, "negative"),
    (OPT_TEXT.replace("1114000000", "true"), 1, "whole number"),
    ("- 1\n- 2\n", 1, "mapping"),
    ("", None, "empty"),
])
def test_invalid_files_name_the_line(text: str, line: int | None, words: str) -> None:
    e = _error(text)
    msgs = e.errors if isinstance(e, InputErrors) else [e]
    hit = [m for m in msgs if words in m.what]
    assert hit, [m.render() for m in msgs]
    assert hit[0].file == "c.yaml"
    assert hit[0].line == line
    assert hit[0].fix
    assert "\n" not in hit[0].render()


def test_check_example_inconsistent() -> None:
    """The acceptance check's file: a coincidence count above both singles."""
    e = _error("trials: 1000\npump: [10, 10]\nread: [10, 10]\ncoincidences:\n  - [50, 1]\n  - [1, 1]\n")
    assert e.line == 5 and "C(r1,p1) = 50" in e.what and "C(r1) = 10" in e.what and "C(p1) = 10" in e.what


def test_all_problems_reported_together() -> None:
    e = _error("trials: 1.5\npump: [1]\nread: x\n")
    assert isinstance(e, InputErrors)
    assert {m.line for m in e.errors} == {1, 2, 3}


def test_counts_validate_on_construction() -> None:
    with pytest.raises(InputError):
        Counts(10, (1, 2), (3, 4), ((5, 0), (0, 0)))   # C(r1,p1) > C(p1)
    with pytest.raises(InputError):
        Counts(0, (0, 0), (0, 0), ((0, 0), (0, 0)))
    with pytest.raises(InputError):
        Counts(10, (1,), (3, 4), ((0, 0), (0, 0)))  # type: ignore[arg-type]


def test_sum_counts() -> None:
    a = Counts(100, (10, 20), (5, 50), ((1, 2), (3, 4)))
    b = Counts(50, (1, 2), (3, 4), ((0, 1), (1, 0)))
    s = a + b
    assert s == Counts(150, (11, 22), (8, 54), ((1, 3), (4, 4)))
    assert sum_counts([a, b, a]) == s + a
    with pytest.raises(InputError):
        sum_counts([])


def test_load_files(tmp_path: Path) -> None:
    f1, f2 = tmp_path / "a.yaml", tmp_path / "b.yaml"
    f1.write_text(OPT_TEXT)
    f2.write_text(OPT_TEXT)
    one = load_counts(f1)
    assert load_counts_files([f1, f2]) == one + one
    bad = tmp_path / "bad.yaml"
    bad.write_text(OPT_TEXT.replace("[9, 129]", "[9, -1]"))
    with pytest.raises(InputErrors) as e:
        load_counts_files([bad, tmp_path / "missing.yaml"])
    assert [m.file for m in e.value.errors] == [str(bad), str(tmp_path / "missing.yaml")]
    assert e.value.errors[0].line == 5


# --- property-based: the validator never fails with anything but InputError ------------------

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                     st.dictionaries(st.text(max_size=5), inner, max_size=3)),
                      max_leaves=12)
count_like = st.one_of(st.integers(-5, 10**6), scalars)
pairs = st.one_of(st.lists(count_like, min_size=0, max_size=3), values)
documents = st.one_of(
    values,
    st.fixed_dictionaries({}, optional={"trials": count_like, "pump": pairs, "read": pairs,
                                        "coincidences": st.one_of(st.lists(pairs, max_size=3), values),
                                        "extra": values}),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_random_documents_give_counts_or_input_error(doc: object) -> None:
    try:
        text = yaml.safe_dump(doc)
    except Exception:
        return
    try:
        c = loads_counts(text, "r.yaml")
    except InputError as e:
        assert e.render()
        return
    assert isinstance(c, Counts)
    assert set(c.to_dict()) == set(KEYS)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_random_text_gives_counts_or_input_error(text: str) -> None:
    try:
        loads_counts(text, "t.yaml")
    except InputError:
        pass


@st.composite
def valid_counts(draw: st.DrawFn) -> Counts:
    n = draw(st.integers(1, 10**12))
    pump = [draw(st.integers(0, n)) for _ in range(2)]
    read = [draw(st.integers(0, n)) for _ in range(2)]
    co = [[draw(st.integers(0, min(read[i], pump[j]))) for j in range(2)] for i in range(2)]
    return counts_from_data({"trials": n, "pump": pump, "read": read, "coincidences": co})


@settings(max_examples=200, deadline=None)
@given(valid_counts(), valid_counts())
def test_valid_counts_round_trip_and_sum(a: Counts, b: Counts) -> None:
    assert loads_counts(yaml.safe_dump(a.to_dict())) == a
    s = a + b
    assert s.trials == a.trials + b.trials
    assert loads_counts(yaml.safe_dump(s.to_dict())) == s
