"""Record codecs: reference decoding, encode/decode round trips, streaming, numba == numpy."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labctl.errors import InputError
from labctl.tags import records as R
from labctl.tags.records import (FORMATS, MARKER, OVERFLOW, PHOTON, SYNC, StreamDecoder, StreamEncoder,
                                 decode, decode_chunk, encode, record_format)

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
T3 = [f for f in FORMATS if f.is_t3]


def _i64(x: int) -> int:
    return (x + 2 ** 63) % 2 ** 64 - 2 ** 63


def ref_decode(fmt: R.RecordFormat, recs: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Record-by-record reference written from the vendor's description (PicoQuant demo
    Read_PTU.py): list of (kind, channel, time, dtime)."""
    out = []
    ofl = 0
    for w in (int(x) for x in recs):
        if fmt.layout == "PT":
            ch = w >> 28
            if fmt.is_t3:
                dt, field = (w >> 16) & 0xFFF, w & 0xFFFF
            else:
                dt, field = 0, w & 0xFFFFFFF
            if ch == 0xF:
                marker = (dt if fmt.is_t3 else field) & 0xF
                if (dt == 0) if fmt.is_t3 else (marker == 0):
                    ofl += fmt.wrap
                    out.append((OVERFLOW, -1, ofl, 0))
                elif marker:
                    out.append((MARKER, marker, ofl + field, 0))
                else:
                    out.append((R.INVALID, 15, ofl + field, 0))
            else:
                ok = 1 <= ch <= 4 if fmt.is_t3 else ch <= 4
                out.append((PHOTON if ok else R.INVALID, ch, ofl + field, dt))
        else:
            special, ch = w >> 31, (w >> 25) & 0x3F
            if fmt.is_t3:
                dt, field = (w >> 10) & 0x7FFF, w & 0x3FF
            else:
                dt, field = 0, w & 0x1FFFFFF
            if special:
                if ch == 0x3F:
                    n = 1 if (fmt.version == 1 or field == 0) else field
                    ofl += fmt.wrap * n
                    out.append((OVERFLOW, -1, ofl, 0))
                elif ch == 0:
                    out.append((R.INVALID, 0, ofl + field, 0) if fmt.is_t3 else (SYNC, -1, ofl + field, 0))
                elif ch <= 15:
                    out.append((MARKER, ch, ofl + field, 0))
                else:
                    out.append((R.INVALID, ch, ofl + field, 0))
            else:
                out.append((PHOTON, ch, ofl + field, dt))
    return [(k, c, _i64(t), d) for k, c, t, d in out]


def as_tuples(d: R.DecodedRecords) -> list[tuple[int, int, int, int]]:
    return list(zip(d.kind.tolist(), d.channel.tolist(), d.time.tolist(), d.dtime.tolist()))


def test_record_type_codes_match_the_ptu_spec() -> None:
    want = {0x00010303: "PicoHarp_T3", 0x00010203: "PicoHarp_T2", 0x00010304: "HydraHarpV1_T3",
            0x00010204: "HydraHarpV1_T2", 0x01010304: "HydraHarpV2_T3", 0x01010204: "HydraHarpV2_T2",
            0x00010305: "TimeHarp260N_T3", 0x00010205: "TimeHarp260N_T2", 0x00010306: "TimeHarp260P_T3",
            0x00010206: "TimeHarp260P_T2", 0x00010307: "Generic_T3", 0x00010207: "Generic_T2"}
    assert {f.code: f.name for f in FORMATS} == want
    assert record_format("timeharp260n_t3").code == 0x00010305
    with pytest.raises(KeyError):
        record_format(0x12345678)
    wraps = {f.name: f.wrap for f in FORMATS}
    assert wraps["PicoHarp_T2"] == 210698240 and wraps["PicoHarp_T3"] == 65536
    assert wraps["HydraHarpV2_T2"] == 2 ** 25 and wraps["TimeHarp260N_T3"] == 1024


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
@pytest.mark.parametrize("use_numba", [True, False], ids=["numba", "numpy"])
def test_random_records_match_reference(fmt: R.RecordFormat, use_numba: bool) -> None:
    rng = np.random.default_rng(fmt.code)
    recs = rng.integers(0, 2 ** 32, 3000, dtype=np.uint64).astype(np.uint32)
    # plenty of special records, including overflows with count 0
    recs[::7] |= np.uint32(0xF0000000 if fmt.layout == "PT" else 0x80000000)
    recs[::11] = 0xFE000000 if fmt.layout == "HT" else 0xF0000000
    d = decode(fmt, recs, use_numba=use_numba)
    assert as_tuples(d) == ref_decode(fmt, recs)


def test_overflow_counts_per_version() -> None:
    # HT T3 overflow record with 5 in the nsync field: v2 adds 5 wraps, v1 one wrap
    rec = np.array([0xFE000005, 0x00000007], np.uint32)
    assert decode("HydraHarpV2_T3", rec).time.tolist() == [5 * 1024, 5 * 1024 + 7]
    assert decode("HydraHarpV1_T3", rec).time.tolist() == [1024, 1024 + 7]
    zero = np.array([0xFE000000, 0x00000007], np.uint32)  # count 0 means 1
    assert decode("TimeHarp260N_T3", zero).time.tolist() == [1024, 1031]
    assert decode("HydraHarpV1_T2", zero).time.tolist() == [33552000, 33552007]
    assert decode("PicoHarp_T2", np.array([0xF0000000, 3], np.uint32)).time.tolist() == [210698240, 210698243]
    # T2 sync record (HT special, channel 0)
    d = decode("TimeHarp260P_T2", np.array([0x80000010], np.uint32))
    assert (d.kind[0], d.channel[0], d.time[0]) == (SYNC, -1, 16)


def test_counts_summary() -> None:
    recs = encode("Generic_T3", [1, 2, 3, 2000, 2001], [0, 1, 3, 1, 2], dtime=[5, 6, 7, 8, 9],
                  kind=[PHOTON, PHOTON, PHOTON, MARKER, PHOTON])
    c = decode("Generic_T3", recs).counts()
    assert c == {"photons": {0: 1, 1: 1, 2: 1, 3: 1}, "markers": 1, "overflows": 1, "syncs": 0, "invalid": 0}


@st.composite
def events(draw: st.DrawFn, fmt: R.RecordFormat) -> tuple[np.ndarray, ...]:
    n = draw(st.integers(0, 60))
    span = draw(st.sampled_from([fmt.wrap // 3 + 1, fmt.wrap * 5, fmt.wrap * 3000]))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    t = np.sort(rng.integers(0, span, n))
    kinds = [PHOTON, MARKER] + ([SYNC] if fmt.layout == "HT" and not fmt.is_t3 else [])
    kind = rng.choice(kinds, n, p=[0.8, 0.2] if len(kinds) == 2 else [0.7, 0.2, 0.1])
    pc = fmt.photon_channels()
    ch = np.where(kind == MARKER, rng.integers(1, 16, n), rng.integers(pc.start, pc.stop, n))
    dt = np.where(kind == PHOTON, rng.integers(0, 1 << max(fmt.dtime_bits, 1), n), 0) if fmt.is_t3 else None
    if fmt.layout == "PT" and not fmt.is_t3:  # PicoHarp T2 markers: low 4 time bits hold the marker
        t = np.where(kind == MARKER, (t & ~np.int64(15)) | ch, t)
        order = np.argsort(t, kind="stable")
        t, kind, ch = t[order], kind[order], ch[order]
    return t, kind, ch, dt


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
@SETTINGS
@given(data=st.data())
def test_encode_decode_round_trip(fmt: R.RecordFormat, data: st.DataObject) -> None:
    t, kind, ch, dt = data.draw(events(fmt))
    maxc = data.draw(st.sampled_from([None, 1, 3]))
    end = data.draw(st.one_of(st.none(), st.integers(0, 10 * fmt.wrap)))
    recs = encode(fmt, t, ch, dtime=dt, kind=kind, end=end, max_overflow_count=maxc)
    d = decode(fmt, recs)
    ev = d.kind != OVERFLOW
    assert d.time[ev].tolist() == t.tolist()
    assert d.kind[ev].tolist() == kind.tolist()
    want_ch = np.where(kind == SYNC, -1, ch)
    assert d.channel[ev].tolist() == want_ch.tolist()
    if dt is not None:
        assert d.dtime[ev].tolist() == np.where(kind == PHOTON, dt, 0).tolist()
    last = max([0] + ([int(t[-1]) // fmt.wrap] if t.size else []) + ([end // fmt.wrap] if end is not None else []))
    final = int(d.time[~ev][-1]) if (~ev).any() else 0
    assert final == last * fmt.wrap
    assert (~ev).sum() >= (last if (maxc == 1 or fmt.max_overflow_count == 1) else 0)


@pytest.mark.parametrize("fmt", [record_format("PicoHarp_T3"), record_format("HydraHarpV1_T2"),
                                 record_format("TimeHarp260N_T3"), record_format("Generic_T2")],
                         ids=lambda f: f.name)
@SETTINGS
@given(data=st.data())
def test_stream_decoding_equals_one_piece(fmt: R.RecordFormat, data: st.DataObject) -> None:
    seed = data.draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    n = data.draw(st.integers(0, 400))
    recs = rng.integers(0, 2 ** 32, n, dtype=np.uint64).astype(np.uint32)
    recs[rng.random(n) < 0.3] = 0xFE000000 | rng.integers(0, 4, 1).astype(np.uint32)[0] \
        if fmt.layout == "HT" else 0xF0000000
    whole = decode(fmt, recs)
    raw = recs.tobytes()
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=8)))
    use_numba = data.draw(st.booleans())
    sd = StreamDecoder(fmt, use_numba=use_numba)
    parts = []
    for a, b in zip([0] + cuts, cuts + [len(raw)]):
        chunk = raw[a:b]
        if data.draw(st.booleans()) and len(chunk) % 4 == 0 and sd.pending_bytes == 0:
            chunk = np.frombuffer(chunk, np.uint32)  # arrays and bytes may be mixed
        parts.append(sd.feed(chunk))
    sd.close()
    joined = R.DecodedRecords.concat(parts, fmt)
    assert as_tuples(joined) == as_tuples(whole)
    assert sd.records == n


def test_stream_decoder_truncated_record_is_input_error() -> None:
    sd = StreamDecoder("TimeHarp260N_T3")
    sd.feed(b"\x01\x02\x03\x04\x05\x06")
    assert sd.pending_bytes == 2
    with pytest.raises(InputError, match="truncated"):
        sd.close(file="x.ptu")


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
def test_numba_and_numpy_agree_on_random_words(fmt: R.RecordFormat) -> None:
    rng = np.random.default_rng(7 + fmt.code)
    recs = rng.integers(0, 2 ** 32, 50_000, dtype=np.uint64).astype(np.uint32)
    a, ba = decode_chunk(fmt, recs, 12345 * fmt.wrap, use_numba=True)
    b, bb = decode_chunk(fmt, recs, 12345 * fmt.wrap, use_numba=False)
    assert ba == bb
    for name in ("kind", "channel", "time", "dtime"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and np.array_equal(x, y), name


def test_env_var_selects_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    from labctl.tags import _jit

    monkeypatch.setenv("LABCTL_NO_NUMBA", "1")
    assert not _jit.want_numba()
    assert _jit.want_numba(True) == _jit.HAVE_NUMBA
    monkeypatch.setenv("LABCTL_NO_NUMBA", "0")
    assert _jit.want_numba() == _jit.HAVE_NUMBA


def test_stream_encoder_equals_one_encode() -> None:
    rng = np.random.default_rng(3)
    t = np.sort(rng.integers(0, 100_000, 300))
    ch = rng.integers(0, 2, 300)
    dt = rng.integers(0, 1000, 300)
    whole = encode("TimeHarp260N_T3", t, ch, dtime=dt, end=120_000)
    se = StreamEncoder("TimeHarp260N_T3")
    parts = [se.encode(t[:100], ch[:100], dtime=dt[:100]), se.encode(t[100:100], 0),
             se.encode(t[100:], ch[100:], dtime=dt[100:], end=120_000)]
    assert np.array_equal(np.concatenate(parts), whole)


def test_encoder_rejects_what_the_format_cannot_hold() -> None:
    with pytest.raises(ValueError, match="non-decreasing"):
        encode("TimeHarp260N_T3", [5, 3], 0)
    with pytest.raises(ValueError, match="channel"):
        encode("PicoHarp_T3", [1], 0)  # PicoHarp T3 photon channels are 1..4
    with pytest.raises(ValueError, match="dtime"):
        encode("TimeHarp260N_T3", [1], 0, dtime=1 << 15)
    with pytest.raises(ValueError, match="kind"):
        encode("TimeHarp260N_T3", [1], 0, kind=SYNC)  # no sync records in T3
    with pytest.raises(ValueError, match="marker"):
        encode("Generic_T2", [1], 0, kind=MARKER)


@pytest.mark.parametrize("fmt", [record_format("PicoHarp_T2"), record_format("HydraHarpV1_T3"),
                                 record_format("TimeHarp260P_T2")], ids=lambda f: f.name)
def test_summary_numba_numpy_and_decode_agree(fmt: R.RecordFormat) -> None:
    rng = np.random.default_rng(fmt.code + 1)
    recs = rng.integers(0, 2 ** 32, 40_000, dtype=np.uint64).astype(np.uint32)
    sums = []
    for use_numba, chunk in ((True, 40_000), (False, 999), (True, 3)):
        s = R.Summary(fmt, use_numba)
        for i in range(0, recs.size, chunk):
            s.feed(recs[i:i + chunk])
        sums.append((s.photons.tolist(), s.kinds.tolist(), s.base, s.first, s.last, s.last_event))
    assert sums[0] == sums[1] == sums[2]
    d = decode(fmt, recs)
    ph = d.kind == PHOTON
    assert sums[0][3:5] == (int(d.time[ph].min()), int(d.time[ph].max()))
    assert sums[0][1] == np.bincount(d.kind, minlength=5).tolist()


# --------------------------------------------------------------------------------------------
# decode paths: block kernels (fast path and record-by-record blocks), events only, parallel,
# numpy, chunked, reused output buffers -- all identical to the reference
# --------------------------------------------------------------------------------------------

def _mixed_records(fmt: R.RecordFormat, rng: np.random.Generator, n: int, p_ofl: float,
                   p_multi: float) -> np.ndarray:
    """Random words, a fraction p_ofl of them single-wrap overflow records (count field 0 or 1,
    the block kernels' fast path) and p_multi overflow records carrying several wraps."""
    recs = rng.integers(0, 2 ** 32, n, dtype=np.uint64).astype(np.uint32)
    u = rng.random(n)
    one = u < p_ofl
    multi = (u >= p_ofl) & (u < p_ofl + p_multi)
    if fmt.layout == "HT":
        recs[one] = 0xFE000000 | rng.integers(0, 2, int(one.sum())).astype(np.uint32)
        top = 1024 if fmt.is_t3 else 1 << 25
        recs[multi] = 0xFE000000 | rng.integers(2, top, int(multi.sum())).astype(np.uint32)
    elif fmt.is_t3:
        recs[one | multi] = 0xF0000000 | (recs[one | multi] & 0xFFFF)      # dtime 0
    else:
        recs[one | multi] = 0xF0000000 | (recs[one | multi] & 0x0FFFFFF0)  # marker bits 0
    return recs


class _parallel_from:
    """Let the parallel decoder split chunks of any size (restored on exit)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __enter__(self) -> None:
        self.old = R.PARALLEL_MIN
        R.PARALLEL_MIN = self.n

    def __exit__(self, *exc: object) -> None:
        R.PARALLEL_MIN = self.old


def _events_of(d: R.DecodedRecords) -> list[tuple[int, int, int, int]]:
    return [t for t in as_tuples(d) if t[0] != OVERFLOW]


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
def test_all_decode_paths_match_reference(fmt: R.RecordFormat) -> None:
    rng = np.random.default_rng(fmt.code + 11)
    recs = _mixed_records(fmt, rng, 5000 + 37, 0.85, 0.002)
    base = 7 * fmt.wrap
    ref = [(k, c, _i64(t + base), d) for k, c, t, d in ref_decode(fmt, recs)]
    ref_ev = [t for t in ref if t[0] != OVERFLOW]
    final = [t[2] for t in ref if t[0] == OVERFLOW][-1]
    with _parallel_from(1):
        for use_numba in (True, False):
            for threads in (1, 2, 3, 8):
                d, b = decode_chunk(fmt, recs, base, use_numba, threads=threads)
                assert as_tuples(d) == ref and b == final, (use_numba, threads)
                e, b = decode_chunk(fmt, recs, base, use_numba, overflows=False, threads=threads)
                assert as_tuples(e) == ref_ev and b == final, (use_numba, threads)
                assert e.kind.dtype == np.uint8 and e.channel.dtype == np.int8
                assert e.time.dtype == np.int64 and e.dtime.dtype == np.uint16
                # cut to size in place: no view into a larger allocation is handed out
                assert all(getattr(x, a).base is None for x in (d, e)
                           for a in ("kind", "channel", "time", "dtime"))


@pytest.mark.parametrize("n", [0, 1, 63, 64, 65, 127, 128, 129, 1000])
@pytest.mark.parametrize("use_numba", [True, False], ids=["numba", "numpy"])
def test_block_boundaries_and_all_overflow_input(n: int, use_numba: bool) -> None:
    fmt = record_format("TimeHarp260N_T3")
    rng = np.random.default_rng(n)
    for recs in (np.full(n, 0xFE000001, np.uint32), np.full(n, 0xFE000000, np.uint32),
                 np.full(n, 0xFE000003, np.uint32), _mixed_records(fmt, rng, n, 0.9, 0.0),
                 rng.integers(0, 2 ** 31, n, dtype=np.int64).astype(np.uint32)):
        ref = ref_decode(fmt, recs)
        with _parallel_from(1):
            for threads in (1, 2):
                d, b = decode_chunk(fmt, recs, 0, use_numba, threads=threads)
                assert as_tuples(d) == ref
                e, b2 = decode_chunk(fmt, recs, 0, use_numba, overflows=False, threads=threads)
                assert as_tuples(e) == [t for t in ref if t[0] != OVERFLOW] and b2 == b
                s = R.Summary(fmt, use_numba)
                s.feed(recs)
                assert s.base == b and s.kinds.tolist() == np.bincount(d.kind, minlength=5).tolist()


def test_out_buffer_is_reused_and_checked() -> None:
    fmt = record_format("Generic_T3")
    rng = np.random.default_rng(5)
    recs = _mixed_records(fmt, rng, 3000, 0.8, 0.01)
    whole = decode(fmt, recs)
    buf = R.DecodedRecords.empty(fmt, 1000)
    for overflows in (True, False):
        for use_numba in (True, False):
            base = 0
            parts = []
            for i in range(0, recs.size, 1000):
                d, base = decode_chunk(fmt, recs[i:i + 1000], base, use_numba, overflows=overflows,
                                       out=buf)
                assert all(np.shares_memory(x, y) for x, y in zip(R._arrays(d), R._arrays(buf)))
                parts.append(as_tuples(d))
            want = as_tuples(whole) if overflows else _events_of(whole)
            assert [t for p in parts for t in p] == want
    with pytest.raises(ValueError, match="out holds"):
        decode_chunk(fmt, recs, out=buf)


@st.composite
def mixed_chunks(draw: st.DrawFn) -> tuple[R.RecordFormat, np.ndarray, list[int]]:
    fmt = draw(st.sampled_from(FORMATS))
    n = draw(st.integers(0, 700))
    p_ofl = draw(st.sampled_from([0.0, 0.5, 0.9, 0.99, 1.0]))
    p_multi = draw(st.sampled_from([0.0, 0.0, 0.01, 0.2]))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    recs = _mixed_records(fmt, rng, n, p_ofl, min(p_multi, 1 - p_ofl))
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=5)))
    return fmt, recs, cuts


@SETTINGS
@given(case=mixed_chunks(), threads=st.sampled_from([1, 2, 3]), overflows=st.booleans(),
       use_numba=st.booleans())
def test_parallel_serial_numpy_and_chunked_agree(case: tuple, threads: int, overflows: bool,
                                                 use_numba: bool) -> None:
    fmt, recs, cuts = case
    ref = ref_decode(fmt, recs)
    want = ref if overflows else [t for t in ref if t[0] != OVERFLOW]
    with _parallel_from(1):
        whole = decode(fmt, recs, use_numba=use_numba, overflows=overflows, threads=threads)
        assert as_tuples(whole) == want
        sd = StreamDecoder(fmt, use_numba=use_numba, overflows=overflows, threads=threads)
        parts = [sd.feed(recs[a:b]) for a, b in zip([0] + cuts, cuts + [recs.size])]
        sd.close()
    assert as_tuples(R.DecodedRecords.concat(parts, fmt)) == want
    assert sd.records == recs.size
    ofl = [t[2] for t in ref if t[0] == OVERFLOW]
    assert sd.base == (ofl[-1] if ofl else 0)
    s = R.Summary(fmt, use_numba)
    for a, b in zip([0] + cuts, cuts + [recs.size]):
        s.feed(recs[a:b])
    assert s.base == sd.base
    assert s.kinds.tolist() == [sum(1 for t in ref if t[0] == k) for k in range(5)]


@pytest.mark.parametrize("fmt", [record_format("TimeHarp260N_T3"), record_format("HydraHarpV2_T2"),
                                 record_format("PicoHarp_T3"), record_format("HydraHarpV1_T2")],
                         ids=lambda f: f.name)
def test_sparse_and_dense_stretches_across_super_blocks(fmt: R.RecordFormat) -> None:
    # the kernels switch between block-wise and record-by-record decoding per super-block of
    # R._SUPER records, from the density of the previous one: stretches of each kind, of odd
    # lengths, must decode exactly as numpy does, whole, chunked, in parallel and summarised
    rng = np.random.default_rng(fmt.code + 3)
    sup = R._SUPER
    parts = [_mixed_records(fmt, rng, m, p, q) for m, p, q in
             ((sup + 77, 0.95, 0.0), (2 * sup - 5, 0.1, 0.0), (sup // 2, 0.9, 0.01),
              (sup + 1000, 0.3, 0.05), (3 * sup // 2, 0.99, 0.0), (999, 0.5, 0.0))]
    recs = np.concatenate(parts)
    want, wb = decode_chunk(fmt, recs, 5 * fmt.wrap, use_numba=False)
    ev = want.kind != OVERFLOW
    with _parallel_from(sup // 3):
        for threads in (1, 2, 5):
            got, b = decode_chunk(fmt, recs, 5 * fmt.wrap, use_numba=True, threads=threads)
            assert b == wb and all(np.array_equal(x, y) for x, y in zip(R._arrays(got), R._arrays(want)))
            e, b = decode_chunk(fmt, recs, 5 * fmt.wrap, use_numba=True, overflows=False, threads=threads)
            assert b == wb and all(np.array_equal(x, y[ev]) for x, y in zip(R._arrays(e), R._arrays(want)))
    sd = StreamDecoder(fmt, base=5 * fmt.wrap, use_numba=True, overflows=False, threads=1)
    cuts = [0, 1, sup - 3, sup + 70, 3 * sup, recs.size]
    pieces = [sd.feed(recs[a:b]) for a, b in zip(cuts, cuts[1:])]
    assert all(np.array_equal(x, y[ev]) for x, y in
               zip(R._arrays(R.DecodedRecords.concat(pieces)), R._arrays(want)))
    sums = []
    for use_numba in (True, False):
        s = R.Summary(fmt, use_numba)
        for a, b in zip(cuts, cuts[1:]):
            s.feed(recs[a:b])
        sums.append((s.photons.tolist(), s.kinds.tolist(), s.base, s.first, s.last, s.last_event))
    assert sums[0] == sums[1]


def test_threads_default_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    from labctl.tags import _jit

    monkeypatch.delenv("LABCTL_THREADS", raising=False)
    assert _jit.decode_threads() == 1 and _jit.decode_threads(3) == 3 and _jit.decode_threads(0) == 1
    monkeypatch.setenv("LABCTL_THREADS", "4")
    assert _jit.decode_threads() == 4 and _jit.decode_threads(2) == 2
    monkeypatch.setenv("LABCTL_THREADS", "auto")
    assert _jit.decode_threads() == _jit.available_cpus() >= 1
    monkeypatch.setenv("LABCTL_THREADS", "many")
    assert _jit.decode_threads() == 1


def test_numpy_warmup_budget_in_automatic_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    from labctl.tags import _jit

    monkeypatch.delenv("LABCTL_NO_NUMBA", raising=False)
    monkeypatch.setattr(R, "_warmup_left", 100)
    assert not R._use_numba(False, 10_000) and R._warmup_left == 100
    if not _jit.HAVE_NUMBA:
        return
    assert not R._use_numba(None, 60) and R._warmup_left == 40   # small: numpy, from the budget
    assert R._use_numba(None, 41) and R._warmup_left == 0        # over budget: numba from now on
    assert R._use_numba(None, 1)
    monkeypatch.setattr(R, "_warmup_left", 100)
    assert R._use_numba(True, 10) and R._warmup_left == 0         # numba asked for: loaded anyway
