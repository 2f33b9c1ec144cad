"""Station files: schema validation with file:line errors, driver lookup, limits, --sim station."""
import json
import textwrap

import pytest
from hypothesis import given, settings, strategies as st

from labctl.cli import main
from labctl.config import load_station
from labctl.errors import InputError, SettingError
from labctl.station import Station

GOOD = """\
station: test-bench
instruments:
  src:
    driver: fakes.FakeSource
    resource: TCPIP0::10.0.0.5::inst0::INSTR
    role: analog_out
    limits:
      ch1.voltage: [0 V, 1.5 V]
channels:
  piezo: {instrument: src, output: 1}
"""


def write(tmp_path, text, name="station.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def test_good_station_loads_and_limits_apply(tmp_path):
    cfg = load_station(write(tmp_path, GOOD))
    e = cfg.instruments["src"]
    assert e.limits == {"ch1.voltage": (0.0, 1.5)}
    with Station(cfg, sim=True).connect() as st_:
        src = st_["src"]
        src.ch1.voltage = 1.0
        assert src.ch1.voltage == 1.0
        with pytest.raises(SettingError):
            src.ch1.voltage = 2.0  # inside the model's ±10 V but outside the station's limit
        rows = st_.rows()
    assert rows[0]["name"] == "src" and rows[0]["idn"].startswith("FAKE,SOURCE")


@pytest.mark.parametrize("mutation,line,words", [
    (("    role: analog_out\n", "    role: analog_out\n    colour: blue\n"), 7, ["unknown key 'colour'"]),
    (("driver: fakes.FakeSource", "driver: fakes.NoSuchSource"), 4, ["NoSuchSource"]),
    (("driver: fakes.FakeSource", "driver: drivers.no_such_module.X"), 4, ["no_such_module"]),
    (("ch1.voltage: [0 V, 1.5 V]", "ch1.voltag: [0 V, 1.5 V]"), 8, ["no setting 'ch1.voltag'", "ch1.voltage"]),
    (("ch1.voltage: [0 V, 1.5 V]", "ch1.voltage: [0 V, 1.5 MHz]"), 8, ["frequency"]),
    (("ch1.voltage: [0 V, 1.5 V]", "ch1.voltage: [2 V, 1.5 V]"), 8, ["reversed"]),
    (("{instrument: src, output: 1}", "{instrument: scr, output: 1}"), 10, ["unknown instrument 'scr'", "src"]),
    (("    role: analog_out\n", "    role: flux_capacitor\n"), 6, ["unknown role"]),
    (("    resource: TCPIP0::10.0.0.5::inst0::INSTR\n", ""), 3, ["resource", "missing"]),
])
def test_config_errors_name_file_line_and_fix(tmp_path, mutation, line, words):
    old, new = mutation
    assert old in GOOD
    p = write(tmp_path, GOOD.replace(old, new), "bad.yaml")
    with pytest.raises(InputError) as e:
        load_station(p)
    msg = str(e.value)
    assert f"bad.yaml:{line}:" in msg, msg
    for w in words:
        assert w in msg, msg
    assert " — " in msg  # every error says how to fix it


def test_yaml_syntax_error_via_cli(tmp_path, capsys):
    p = write(tmp_path, GOOD + "bogus: [unclosed\n", "broken.yaml")
    rc = main(["instruments", "--config", str(p), "--sim"])
    err = capsys.readouterr().err
    assert rc == 2 and "broken.yaml:" in err and "Traceback" not in err


def test_instruments_cli_json(tmp_path, capsys):
    p = write(tmp_path, GOOD)
    assert main(["instruments", "--config", str(p), "--sim", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert set(rows[0]) >= {"name", "role", "driver", "resource", "idn"}


def test_unreachable_instrument_is_a_fault_naming_it(tmp_path, capsys):
    text = GOOD.replace("TCPIP0::10.0.0.5::inst0::INSTR", "socket://127.0.0.1:9")
    p = write(tmp_path, text)
    rc = main(["instruments", "--config", str(p)])
    err = capsys.readouterr().err
    assert rc == 3 and "src" in err and "Traceback" not in err


@settings(max_examples=60)
@given(st.dictionaries(st.sampled_from(["station", "instruments", "channels", "eom", "junk"]),
                       st.one_of(st.none(), st.integers(), st.text(max_size=5),
                                 st.lists(st.integers(), max_size=2),
                                 st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2)),
                       max_size=4))
def test_random_documents_give_input_errors(doc):
    import tempfile, yaml, os
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(doc, f)
    try:
        load_station(f.name)
    except InputError:
        pass
    finally:
        os.unlink(f.name)
