"""Line-aware safe YAML loading."""
import pytest
from hypothesis import given, settings, strategies as st

from labctl.errors import InputError
from labctl.yamlio import load_yaml, loads_yaml


def test_lines_of_keys_and_items():
    doc = loads_yaml("a: 1\nb:\n  c: 2\n  d:\n    - x\n    - y\n", "f.yaml")
    assert doc.data == {"a": 1, "b": {"c": 2, "d": ["x", "y"]}}
    assert doc.line(("a",)) == 1
    assert doc.line(("b", "c")) == 3
    assert doc.line(("b", "d", 1)) == 6
    assert doc.line(("b", "nope")) == 2  # falls back to the parent


def test_syntax_error_names_file_and_line():
    with pytest.raises(InputError) as e:
        loads_yaml("a: 1\nb: [1, 2\nc: 3\n", "broken.yaml")
    msg = str(e.value)
    assert msg.startswith("broken.yaml:") and "YAML syntax error" in msg
    assert e.value.line in (2, 3, 4)


def test_duplicate_keys_are_errors():
    with pytest.raises(InputError) as e:
        loads_yaml("a: 1\nb: 2\na: 3\n", "d.yaml")
    assert e.value.line == 3 and "duplicate key 'a'" in str(e.value)


def test_python_tags_refused():
    with pytest.raises(InputError):
        loads_yaml("a: !!python/object/apply:os.system ['true']\n", "evil.yaml")


def test_missing_file(tmp_path):
    with pytest.raises(InputError) as e:
        load_yaml(tmp_path / "nope.yaml")
    assert "not found" in str(e.value)


def test_too_large(tmp_path, monkeypatch):
    import labctl.yamlio as y
    monkeypatch.setattr(y, "MAX_BYTES", 100)
    p = tmp_path / "big.yaml"
    p.write_text("a: " + "x" * 200)
    with pytest.raises(InputError):
        load_yaml(p)


def test_not_utf8(tmp_path):
    p = tmp_path / "bin.yaml"
    p.write_bytes(b"a: \xff\xfe\n")
    with pytest.raises(InputError):
        load_yaml(p)


@settings(max_examples=200)
@given(st.text(max_size=200))
def test_fuzz_never_crashes(text):
    try:
        loads_yaml(text, "fuzz.yaml")
    except InputError:
        pass


def test_deep_nesting_refused():
    with pytest.raises(InputError):
        loads_yaml("[" * 200 + "]" * 200, "deep.yaml")
