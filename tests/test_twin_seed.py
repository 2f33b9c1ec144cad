"""The twin's defaults reproduce the seed's θ_opt data set (Riedinger et al. 2018, supplement,
"Statistical Analysis"): compiled dlcz_witness on the simulated lab station, 1.114e9 trials,
records through the TimeHarp 260 T3 codec and the project's heralded counting and witness."""
from __future__ import annotations

import math

import pytest
from scipy import stats

from labctl.analysis.counts import Counts
from labctl.analysis.witness import analyze_counts
from labctl.tags.herald import HeraldCounter
from sim_instruments.twin.scenarios import witness_setup

SEED = {"trials": 1_114_000_000, "pump": [111134, 184114], "read": [108723, 167427],
        "coincidences": [[9, 129], [130, 37]]}


@pytest.fixture(scope="module")
def witness_counts():
    s = witness_setup(seed=2018)
    try:
        n = SEED["trials"]
        recs, truth = s.twin.simulate_block(n)
        pw, rw = s.windows()
        hc = HeraldCounter.from_windows("TimeHarp260N_T3", pw, rw, 250e-12)
        hc.feed(recs)
        counts = hc.result(trials=n).counts(channels=(0, 1))
        return counts, truth, s.twin.describe()
    finally:
        s.close()


def test_singles_match_the_seed(witness_counts):
    counts, _, _ = witness_counts
    for key in ("pump", "read"):
        for d in range(2):
            assert counts[key][d] == pytest.approx(SEED[key][d], rel=0.05), (key, d)
    # detector 2 counts more than detector 1 (its efficiency is higher)
    assert counts["pump"][1] / counts["pump"][0] == pytest.approx(184114 / 111134, rel=0.02)


def test_coincidences_match_the_seed(witness_counts):
    counts, _, _ = witness_counts
    total, seed_total = sum(map(sum, counts["coincidences"])), 305
    assert total == pytest.approx(seed_total, rel=0.2)
    for i in range(2):
        for j in range(2):
            a, b = counts["coincidences"][i][j], SEED["coincidences"][i][j]
            # two Poisson counts with equal exposure: a | a + b is Binomial(a + b, 1/2)
            assert stats.binomtest(a, a + b, 0.5).pvalue > 1e-3, (i, j, a, b)
    c = counts["coincidences"]
    assert c[1][0] > 4 * c[0][0] and c[0][1] > 2.5 * c[1][1]        # θ_opt: cross > same


def test_counts_agree_with_the_twins_own_probabilities(witness_counts):
    counts, truth, info = witness_counts
    n = SEED["trials"]
    exp = truth.expected
    for j in range(2):
        m = exp["herald"][j] * n
        # plus dark counts in the 60 ns window (1 Hz)
        m += n * 60e-9 * info["dark_hz"][j]
        assert abs(counts["pump"][j] - m) < 5 * math.sqrt(m)
    # every core coincidence falls in the windows; dark counts add at most a stray one
    core = truth.counts()
    extra = sum(map(sum, counts["coincidences"])) - sum(map(sum, core["coincidences"]))
    assert 0 <= extra <= 3


def test_witness_is_below_one(witness_counts):
    counts, _, _ = witness_counts
    res = analyze_counts(Counts(counts["trials"], tuple(counts["pump"]), tuple(counts["read"]),
                                counts["coincidences"]))
    assert res["Rm_sym"]["value"] < 1.0
    assert res["confidence"]["1.0"] > 0.9
    for k in range(2):
        assert res["Rm"][k]["value"] < 1.0
