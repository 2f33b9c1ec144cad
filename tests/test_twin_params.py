"""Digital twin parameters: loading the station's ``twin:`` section, units and clear errors."""
from __future__ import annotations

import math

import pytest

from labctl.errors import InputError
from sim_instruments.twin.params import TwinParams, describe


def test_defaults_are_the_seed_values():
    p = TwinParams()
    assert p.decay_time == (4.0e-6, 5.8e-6)                     # supplement, pump-probe
    assert p.heating_delay == (0.5e-6, 0.5e-6)
    assert p.pump_probability == (0.0056, 0.0080)               # supplement, S2 calibration
    assert p.leak_per_phonon == (4.2e-2, 3.2e-2)
    assert p.optical_q == (2.2e5, 2.2e5)
    assert p.cryostat_temperature == pytest.approx(0.060)
    assert p.delta_omega == pytest.approx(2 * math.pi * 45e6)  # main text: 45 MHz
    assert sum(p.pump_probability) / 2 == pytest.approx(0.0068, abs=2e-4)   # "p_pump ~ 0.7 %"


def test_units_numbers_pairs_and_scalars():
    p = TwinParams.from_mapping({"decay_time": ["4 us", "6 us"], "filter_bandwidth": "60 MHz",
                                 "pump_probability": "0.5 %", "cryostat_temperature": "85 mK",
                                 "setup_phase": "0.5 pi", "drift_diffusion": 0.2, "lock_mode": "free",
                                 "dead_time": 3e-8, "filter_stages": 1, "standing_state": False})
    assert p.decay_time == pytest.approx((4e-6, 6e-6))
    assert p.filter_bandwidth == pytest.approx(60e6)
    assert p.pump_probability == pytest.approx((0.005, 0.005))
    assert p.cryostat_temperature == pytest.approx(0.085)
    assert p.setup_phase == pytest.approx(math.pi / 2)
    assert p.lock_mode == "free" and p.filter_stages == 1 and p.standing_state is False
    assert TwinParams.from_mapping(None) == TwinParams()
    assert TwinParams.from_mapping({}) == TwinParams()
    q = p.replace(dead_time="10 ns")
    assert q.dead_time == pytest.approx(1e-8) and q.decay_time == p.decay_time
    assert TwinParams.from_mapping(p.to_dict()) == p


def test_unknown_key_suggests_the_right_one():
    with pytest.raises(InputError) as e:
        TwinParams.from_mapping({"decay_times": ["4 us", "5.8 us"]}, file="configs/lab.yaml",
                                lines={"decay_times": 120})
    msg = str(e.value)
    assert "unknown parameter 'decay_times'" in msg and "decay_time" in msg
    assert "configs/lab.yaml:120" in msg


@pytest.mark.parametrize("data, words", [
    ({"decay_time": "4 MHz"}, ["twin.decay_time", "time"]),
    ({"decay_time": 4}, []),                                # a plain number is SI (s)
    ({"pump_probability": [0.1, 0.2, 0.3]}, ["two values"]),
    ({"pump_probability": "120 %"}, ["outside"]),
    ({"lock_mode": "tight"}, ["auto", "observed"]),
    ({"filter_stages": 1.5}, ["whole number"]),
    ({"standing_state": "yes"}, ["true or false"]),
    ({"drift_diffusion": "fast"}, ["plain number"]),
])
def test_bad_values_are_reported(data, words):
    if not words:
        TwinParams.from_mapping({"decay_time": 4e-6})
        return
    with pytest.raises(InputError) as e:
        TwinParams.from_mapping(data)
    for w in words:
        assert w in str(e.value)


def test_all_problems_reported_together():
    with pytest.raises(InputError) as e:
        TwinParams.from_mapping({"nope": 1, "decay_time": "1 V"})
    assert "nope" in str(e.value) and "decay_time" in str(e.value)


def test_every_parameter_is_documented():
    for name, unit, default, doc in describe():
        assert doc and len(doc) > 15, name
