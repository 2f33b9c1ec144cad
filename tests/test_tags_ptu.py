"""PTU files: the real reference files, header tags, write -> read, and bad input."""
from __future__ import annotations

import struct
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labctl.errors import InputError
from labctl.tags import ptu as P
from labctl.tags.info import summarize
from labctl.tags.records import PHOTON, decode, encode

TESTDATA = Path(__file__).parents[2] / "shared" / "testdata"
T2_FILE = TESTDATA / "hydraharp_v2_t2.ptu"
T3_FILE = TESTDATA / "hydraharp_v2_t3_beads.ptu"
needs_testdata = pytest.mark.skipif(not T3_FILE.exists() or not T2_FILE.exists(),
                                    reason="../shared/testdata not present")


@needs_testdata
@pytest.mark.parametrize("use_numba", [True, False], ids=["numba", "numpy"])
def test_real_t2_file_reference_values(use_numba: bool) -> None:
    info = summarize(T2_FILE, use_numba=use_numba, chunk=100_000)
    assert info["record_type"] == "HydraHarpV2_T2" and info["mode"] == "T2"
    assert info["records"] == 435319
    assert info["photons"] == {"0": 305565}
    assert info["overflows"] == 129754
    assert info["markers"] == 0 and info["syncs"] == 0
    assert info["global_resolution"] == 1e-12
    assert info["first_time"] == pytest.approx(24433765e-12, rel=1e-12)
    assert info["last_time"] == pytest.approx(4999964931763e-12, rel=1e-12)


@needs_testdata
@pytest.mark.parametrize("use_numba", [True, False], ids=["numba", "numpy"])
def test_real_t3_file_reference_values(use_numba: bool) -> None:
    info = summarize(T3_FILE, use_numba=use_numba, chunk=30_000)
    assert info["record_type"] == "HydraHarpV2_T3" and info["mode"] == "T3"
    assert info["record_type_code"] == "0x01010304"
    assert info["records"] == 104776
    assert info["photons"] == {"0": 52833, "1": 20954}
    assert info["markers"] == 100 and info["overflows"] == 30889
    assert info["global_resolution"] == pytest.approx(2.5000025000025e-08, rel=1e-12)
    assert info["resolution"] == pytest.approx(1.5999999936067155e-11, rel=1e-12)
    assert (info["first_sync"], info["last_sync"]) == (193384, 422229850)
    assert info["first_time"] == pytest.approx(193384 * 2.5000025000025e-08, rel=1e-9)


@needs_testdata
def test_real_t3_dtime_sum_and_header() -> None:
    pf = P.open_ptu(T3_FILE)
    assert isinstance(pf.records, np.memmap)
    d = decode(pf.fmt, pf.records)
    assert int(d.dtime[d.kind == PHOTON].astype(np.int64).sum()) == 41550493
    h = pf.header
    assert h.version == "1.0.00"
    assert h.tags["Measurement_Mode"] == 3
    assert h.tags["UsrHeadName(1)"] == "561.0nm (LDH-D-TA-560)"
    assert h.tags["HWMarkers_Enabled(0)"] is True
    assert h.tags["Fast_Load_End"] is None
    assert isinstance(h.tags["File_CreatingTime"], datetime)
    assert h.tags["File_CreatingTime"].year == 2018


def all_type_tags() -> list[P.Tag]:
    return [
        P.Tag("T_Empty", None, P.TY_EMPTY8), P.Tag("T_Bool", True), P.Tag("T_BoolF", False),
        P.Tag("T_Int", -42), P.Tag("T_Bits", 0x00FF00FF00FF00FF, P.TY_BITSET64),
        P.Tag("T_Color", 0x123456, P.TY_COLOR8), P.Tag("T_Float", 3.25),
        P.Tag("T_Date", datetime(2024, 5, 17, 12, 30, tzinfo=timezone.utc)),
        P.Tag("T_Array", np.array([1.5, -2.0, 1e-12])), P.Tag("T_Ansi", "héllo ansi"),
        P.Tag("T_Wide", "wide ✓ string", P.TY_WIDESTRING), P.Tag("T_Blob", b"\x00\x01\xff" * 5),
        P.Tag("T_Indexed", 7, idx=3),
    ]


def test_write_read_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    t = np.sort(rng.integers(0, 50_000_000, 5000))
    ch = rng.integers(0, 2, 5000)
    dt = rng.integers(0, 2000, 5000)
    recs = encode("TimeHarp260N_T3", t, ch, dtime=dt, end=60_000_000)
    path = P.write_ptu(tmp_path / "sim.ptu", recs, "TimeHarp260N_T3", global_resolution=50e-6,
                       resolution=25e-12, comment="simulated", extra_tags=all_type_tags())
    pf = P.open_ptu(path)
    h = pf.header
    assert h.fmt.name == "TimeHarp260N_T3" and h.num_records == recs.size
    assert (h.global_resolution, h.resolution, h.sync_rate) == (50e-6, 25e-12, 20000.0)
    assert np.array_equal(pf.records, recs)
    tg = h.tags
    assert tg["File_Comment"] == "simulated" and tg["Measurement_Mode"] == 3
    assert tg["T_Empty"] is None and tg["T_Bool"] is True and tg["T_BoolF"] is False
    assert tg["T_Int"] == -42 and tg["T_Bits"] == 0x00FF00FF00FF00FF and tg["T_Color"] == 0x123456
    assert tg["T_Float"] == 3.25 and tg["T_Ansi"] == "héllo ansi" and tg["T_Wide"] == "wide ✓ string"
    assert abs((tg["T_Date"] - datetime(2024, 5, 17, 12, 30, tzinfo=timezone.utc)).total_seconds()) < 1e-3
    assert np.array_equal(tg["T_Array"], [1.5, -2.0, 1e-12])
    assert tg["T_Blob"] == b"\x00\x01\xff" * 5 and tg["T_Indexed(3)"] == 7
    assert h.types["T_Wide"] == P.TY_WIDESTRING
    info = summarize(path)
    assert info["photons"] == {str(c): int(n) for c, n in enumerate(np.bincount(ch)) if n}
    assert info["first_sync"] == t[0] and info["last_sync"] == t[-1]
    assert info["overflow_wraps"] == 60_000_000 // 1024


def test_streaming_writer_and_chunks(tmp_path: Path) -> None:
    recs = encode("Generic_T2", np.arange(0, 10 ** 9, 10 ** 6), 1)
    with P.PtuWriter(tmp_path / "s.ptu", "Generic_T2", global_resolution=1e-12) as w:
        for i in range(0, recs.size, 77):
            w.write(recs[i:i + 77])
    pf = P.open_ptu(tmp_path / "s.ptu")
    assert pf.header.num_records == recs.size and pf.header.resolution == 1e-12
    assert np.array_equal(np.concatenate(list(pf.chunks(100))), recs)


def test_empty_file_has_no_photons(tmp_path: Path) -> None:
    p = P.write_ptu(tmp_path / "e.ptu", np.empty(0, np.uint32), "PicoHarp_T3",
                    global_resolution=1e-7, resolution=4e-12)
    info = summarize(p)
    assert info["records"] == 0 and info["photons"] == {} and info["first_time"] is None


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------

def _valid_bytes(tmp_path: Path, fmt: str = "TimeHarp260N_T3", n: int = 50, **kw: object) -> bytes:
    recs = encode(fmt, np.arange(n) * 700, 0, dtime=5 if "T3" in fmt else None)
    p = P.write_ptu(tmp_path / "v.ptu", recs, fmt, global_resolution=1e-6, resolution=1e-11, **kw)
    return p.read_bytes()


def _replace_tag_value(data: bytes, name: str, value: bytes) -> bytes:
    i = data.index(name.encode().ljust(32, b"\0"))
    return data[:i + 40] + value + data[i + 48:]


def _expect(tmp_path: Path, data: bytes, match: str) -> InputError:
    p = tmp_path / "bad.ptu"
    p.write_bytes(data)
    with pytest.raises(InputError, match=match) as ei:
        summarize(p)
    assert ei.value.file == str(p)
    return ei.value


def test_bad_files_are_input_errors(tmp_path: Path) -> None:
    good = _valid_bytes(tmp_path)
    _expect(tmp_path, b"", "not a PTU file")
    _expect(tmp_path, b"PQTTTR\0\0garbage", "ends inside the header")
    _expect(tmp_path, b"PQTTTX\0\0" + good[8:], "not a PTU file")
    _expect(tmp_path, good[:200], "ends inside the header|beyond the end")
    _expect(tmp_path, good[:-9], "truncated")
    i = good.index(b"File_Comment")
    _expect(tmp_path, good[:i + 36] + struct.pack("<I", 0x7777) + good[i + 40:], "unknown type")
    _expect(tmp_path, _replace_tag_value(good, "File_Comment", struct.pack("<q", 10 ** 6)), "beyond the end")
    _expect(tmp_path, _replace_tag_value(good, "File_Comment", struct.pack("<q", 10 ** 12)), "limit")
    _expect(tmp_path, _replace_tag_value(good, "File_Comment", struct.pack("<q", -8)), "negative")
    _expect(tmp_path, _replace_tag_value(good, "TTResultFormat_TTTRRecType", struct.pack("<q", 0x00010999)),
            "unknown TTTR record type")
    _expect(tmp_path, _replace_tag_value(good, "Measurement_Mode", struct.pack("<q", 2)), "Measurement_Mode")
    n = (len(good) - good.index(b"Header_End") - 48) // 4
    _expect(tmp_path, _replace_tag_value(good, "TTResult_NumberOfRecords", struct.pack("<q", n + 1)), "truncated")
    _expect(tmp_path, _replace_tag_value(good, "TTResult_NumberOfRecords", struct.pack("<q", -1)), "negative")
    _expect(tmp_path, _replace_tag_value(good, "MeasDesc_GlobalResolution", struct.pack("<d", -1.0)),
            "GlobalResolution")
    no_end = good.replace(b"Header_End".ljust(32, b"\0"), b"Header_Enx".ljust(32, b"\0"))
    _expect(tmp_path, no_end, "header|tag")
    e = _expect(tmp_path, _replace_tag_value(good, "File_CreatingTime", struct.pack("<d", float("nan"))), "date")
    assert "—" in e.render()  # always says how to fix it


def test_missing_file_is_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        summarize(tmp_path / "nope.ptu")
    with pytest.raises(InputError, match="directory"):
        summarize(tmp_path)


@pytest.fixture(scope="module")
def fuzz_seed_file(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    d = tmp_path_factory.mktemp("fuzz")
    recs = encode("HydraHarpV2_T3", np.arange(40) * 300, np.arange(40) % 3, dtime=np.arange(40))
    return P.write_ptu(d / "seed.ptu", recs, "HydraHarpV2_T3", global_resolution=1e-7,
                       resolution=1e-12, extra_tags=all_type_tags()).read_bytes()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_corrupt_bytes_never_crash(fuzz_seed_file: bytes, tmp_path: Path, data: st.DataObject) -> None:
    """Random edits, truncations and random files: an InputError or a result, nothing else."""
    buf = bytearray(fuzz_seed_file)
    mode = data.draw(st.sampled_from(["flip", "truncate", "random", "splice"]))
    if mode == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            i = data.draw(st.integers(0, len(buf) - 1))
            buf[i] = data.draw(st.integers(0, 255))
    elif mode == "truncate":
        buf = buf[:data.draw(st.integers(0, len(buf)))]
    elif mode == "random":
        buf = bytearray(P.MAGIC * data.draw(st.booleans()) + data.draw(st.binary(max_size=400)))
    else:
        i = data.draw(st.integers(0, len(buf)))
        buf[i:i] = data.draw(st.binary(min_size=1, max_size=16))
    p = tmp_path / "fuzz.ptu"
    p.write_bytes(bytes(buf))
    try:
        info = summarize(p, chunk=7)
    except InputError as e:
        assert e.file == str(p)
        return
    assert info["records"] >= 0 and sum(info["photons"].values()) <= info["records"]
