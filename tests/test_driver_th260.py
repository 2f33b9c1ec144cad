"""TimeHarp 260 driver (drivers/picoquant_th260.py) on the mock TH260Lib
(sim_instruments/th260_mock.py) fed by the record sources (sim_instruments/record_sources.py)."""
from __future__ import annotations

import ctypes
import threading
import time
import warnings
from ctypes import byref, c_double, c_int, c_uint

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import drivers.picoquant_th260 as drv
from drivers.picoquant_th260 import (RecordsDroppedWarning, TH260Error, TH260LibraryNotFound,
                                     TH260LinkError, TH260StreamError, TH260Transport, TH260Warning,
                                     TimeHarp260)
from labctl.errors import ConnectionLost, InputError, InstrumentError, SettingError
from labctl.instrument.protocols import check_role
from labctl.instrument.transport import ModelTransport
import sim_instruments.th260_mock as mk
from sim_instruments.record_sources import (ChannelModel, ReplaySource, SyntheticSource, Window,
                                            decode, events_to_t3)
from sim_instruments.th260_mock import MockMemoryViolation, TH260MockLibrary


# ---- an independent decoder (bit fields written out by hand, not the project's codec) ---------
def my_decode_t3(records):
    """[(kind, channel, dtime, absolute sync)] with kind 'photon', 'overflow', 'marker'."""
    out, wraps = [], 0
    for w in (int(x) for x in records):
        special, channel = w >> 31, (w >> 25) & 0b111111
        dtime, nsync = (w >> 10) & 0x7FFF, w & 0x3FF
        if special and channel == 63:
            wraps += nsync if nsync else 1
            out.append(("overflow", channel, dtime, wraps * 1024))
        elif special:
            out.append(("marker", channel, dtime, wraps * 1024 + nsync))
        else:
            out.append(("photon", channel, dtime, wraps * 1024 + nsync))
    return out


def my_decode_t2(records):
    out, wraps = [], 0
    for w in (int(x) for x in records):
        special, channel, tag = w >> 31, (w >> 25) & 0x3F, w & 0x1FFFFFF
        if special and channel == 63:
            wraps += tag if tag else 1
        elif special and channel == 0:
            out.append(("sync", 0, wraps * (1 << 25) + tag))
        elif not special:
            out.append(("photon", channel, wraps * (1 << 25) + tag))
    return out


def make(mock=None, **opts):
    mock = mock if mock is not None else TH260MockLibrary("tagger", seed=1)
    th = TimeHarp260("tagger", ModelTransport("sim://tagger", mock), **opts)
    return th, mock


def stream_all(th, t, timeout=10.0):
    th.start_stream(t)
    parts, deadline = [], time.monotonic() + timeout
    while not th.wait(0) and time.monotonic() < deadline:
        parts.append(th.read_records(0.05))
    th.wait(timeout)
    parts.append(th.read_records())
    th.stop()
    return np.concatenate(parts) if parts else np.empty(0, np.uint32)


def names(mock):
    return [c[0] for c in mock.calls]


# ---- full sequence ---------------------------------------------------------------------------
def test_full_t3_sequence_and_records_match_the_source():
    src = SyntheticSource(sync_rate_hz=20e3, seed=7, keep_truth=True,
                          channels=[ChannelModel(0, [Window(10e-9, 30e-9, 0.2)], 200.0),
                                    ChannelModel(1, [Window(100e-9, 150e-9, 0.1)], 200.0)])
    mock = TH260MockLibrary("tagger", source=src)
    th, _ = make(mock, mode="T3")
    th.connect()
    th.sync_divider = 1
    th.sync_level = "-80 mV"
    th.ch0.input_level = -0.1
    th.ch1.input_offset = "0 ps"
    th.binning = 2                     # 25 ps * 4 = 100 ps bins
    th.offset = 0.0
    assert th.resolution() == pytest.approx(100e-12)
    recs = stream_all(th, 1.0)
    assert recs.dtype == np.uint32 and recs.size > 0
    assert th.finished and th.stream_stats()["state"] == "finished"

    ev = my_decode_t3(recs)
    ph = [e for e in ev if e[0] == "photon"]
    assert {e[1] for e in ph} <= {0, 1}
    syncs = [e[3] for e in ev]
    assert syncs == sorted(syncs)                      # absolute sync numbers never go back
    assert max(e[3] for e in ph) < 20e3                # 1 s at 20 kHz
    # every photon is one the source generated, at the right sync and bin
    hw = np.concatenate([t[0] for t in src.truth])
    ch = np.concatenate([t[1] for t in src.truth])
    dt = np.concatenate([t[2] for t in src.truth])
    truth = list(zip(ch.tolist(), dt.tolist(), hw.tolist()))
    got = [(e[1], e[2], e[3]) for e in ph]
    assert got == truth[:len(got)]
    assert len(got) >= 0.95 * len([t for t in truth if t[2] < 20e3])
    # window photons land in their windows (dark counts may land anywhere in range)
    ch0 = np.array([e[2] for e in ph if e[1] == 0]) * 100e-12
    assert np.mean((ch0 >= 10e-9) & (ch0 < 30e-9)) > 0.95
    # the call sequence of PicoQuant's tttrmode demo
    seq = names(mock)
    for a, b in [("TH260_OpenDevice", "TH260_Initialize"), ("TH260_Initialize", "TH260_StartMeas"),
                 ("TH260_StartMeas", "TH260_ReadFiFo"), ("TH260_ReadFiFo", "TH260_StopMeas")]:
        assert seq.index(a) < seq.index(b)
    th.close()
    assert not mock.devices[0].is_open


def test_settings_reach_the_library_in_its_units():
    th, mock = make()
    th.connect()
    d = mock.devices[0]
    th.sync_divider = 4
    th.sync_offset = "1.5 ns"
    th.ch1.input_level = "-0.25 V"
    th.ch1.input_zero_cross = "-20 mV"
    th.ch0.input_offset = -2e-9
    th.ch0.enabled = False
    th.binning = 3
    th.offset = "20 ns"
    assert (d.sync_divider, d.sync_offset_ps, d.input_level_mv[1], d.input_zc_mv[1]) == (4, 1500, -250, -20)
    assert (d.input_offset_ps[0], d.input_enable[0], d.binning, d.offset_ns) == (-2000, 0, 3, 20)
    assert th.resolution() == pytest.approx(25e-12 * 8)
    assert th.sync_divider == 4 and th.ch1.input_level == pytest.approx(-0.25) and th.ch0.enabled is False
    th.configure_markers(enable=(True, False, False, True), edges=("falling",) + ("rising",) * 3, holdoff_s=1e-6)
    assert (d.marker_enable, d.marker_edges, d.marker_holdoff_ns) == ([1, 0, 0, 1], [0, 1, 1, 1], 1000)
    with pytest.raises(SettingError):
        th.configure_markers(holdoff_s=1e-3)
    snap = th.snapshot()
    assert snap["settings"]["markers"]["enable"] == [True, False, False, True]
    assert snap["settings"]["ch1"]["input_zero_cross"] == pytest.approx(-0.02)
    assert "sync_edge" not in snap["settings"] and "input_edge" not in snap["settings"]["ch0"]
    assert snap["hardware"]["model"] == "TimeHarp 260 P" and snap["idn"].startswith("PicoQuant,TimeHarp 260 P,")


def test_nano_uses_edge_triggers_and_refuses_cfd_settings():
    th, mock = make(TH260MockLibrary("t", model="NANO", seed=2))
    th.connect()
    assert th.base_resolution_s == pytest.approx(250e-12)
    th.sync_edge = "rising"
    th.ch0.input_level = "0.5 V"                       # NANO levels may be positive
    d = mock.devices[0]
    assert (d.sync_edge, d.input_level_mv[0]) == (1, 500)
    assert "TH260_SetSyncEdgeTrg" in names(mock) and "TH260_SetSyncCFD" not in names(mock)
    n = len(mock.calls)
    with pytest.raises(SettingError, match="PICO"):
        th.sync_zero_cross = -0.01
    assert len(mock.calls) == n
    pico, _ = make()
    pico.connect()
    with pytest.raises(SettingError, match="NANO"):
        pico.ch0.input_edge = "rising"
    with pytest.raises(SettingError):
        pico.ch0.input_level = 0.5                     # PICO CFD levels are -1.2..0 V


def test_invalid_values_are_refused_before_any_library_call():
    th, mock = make()
    th.connect()
    n = len(mock.calls)
    for path, value in [("sync_divider", 3), ("sync_divider", 16), ("binning", 22), ("offset", -1e-9),
                        ("ch0.input_offset", 1e-7), ("sync_level", "-2 V"), ("mode", "HIST")]:
        with pytest.raises(SettingError):
            th.set(path, value)
    with pytest.raises(SettingError):
        th.start_stream(0.0001)
    with pytest.raises(SettingError):
        th.start_stream(4e5)
    assert len(mock.calls) == n


_SHARED: dict = {}


def shared_tagger():
    """One connected tagger reused across hypothesis examples (function fixtures cannot be)."""
    if "th" not in _SHARED:
        th, mock = make()
        th.connect()
        _SHARED.update(th=th, mock=mock)
    return _SHARED["th"], _SHARED["mock"]


@settings(max_examples=40)
@given(mv=st.integers(-1500, 300))
def test_hypothesis_cfd_level_validation(mv):
    th, mock = shared_tagger()
    if -1200 <= mv <= 0:
        th.ch1.input_level = mv * 1e-3
        assert mock.devices[0].input_level_mv[1] == mv
    else:
        n = len(mock.calls)
        with pytest.raises(SettingError):
            th.ch1.input_level = mv * 1e-3
        assert len(mock.calls) == n


def test_station_limits_narrow_settings():
    th, _ = make()
    th.restrict("ch0.input_level", -0.2, 0.0)
    th.connect()
    with pytest.raises(SettingError):
        th.ch0.input_level = -0.3
    th.ch0.input_level = -0.15


def test_mode_change_reinitialises_and_reapplies_settings():
    th, mock = make()
    th.connect()
    th.sync_divider = 2
    th.ch0.input_offset = 1e-9
    th.mode = "T2"
    d = mock.devices[0]
    assert d.mode == mk.MODE_T2 and th.mode == "T2"
    assert (d.sync_divider, d.input_offset_ps[0]) == (2, 1000)
    th.sync_divider = 1
    recs = stream_all(th, 0.01)
    ev = my_decode_t2(recs)
    sync_t = [e[2] for e in ev if e[0] == "sync"]
    assert len(sync_t) == pytest.approx(200, abs=2)     # 10 ms at 20 kHz
    assert np.allclose(np.diff(sync_t) * 25e-12, 50e-6)


def test_role_and_identity():
    th, _ = make()
    assert check_role(th, "time_tagger") == []
    assert "TimeHarp 260 P" in th.idn() and "TH260Lib 3.2" in th.idn()


# ---- errors ------------------------------------------------------------------------------------
def test_error_codes_become_exceptions_with_function_code_and_text():
    th, mock = make()
    th.connect()
    mock.fail("TH260_SetSyncDiv", -17)
    with pytest.raises(TH260Error) as ei:
        th.sync_divider = 2
    e = ei.value
    assert (e.function, e.code, e.code_name) == ("TH260_SetSyncDiv", -17, "TH260_ERROR_INVALID_ARGUMENT")
    assert "TH260_SetSyncDiv" in str(e) and "-17" in str(e) and "Invalid argument" in str(e)
    assert "tagger" in str(e)
    th.sync_divider = 2                                  # one-shot fault: works again


def test_board_that_stops_answering_is_a_connection_loss():
    th, mock = make()
    th.connect()
    mock.stop_answering()
    with pytest.raises(TH260LinkError) as ei:
        th.sync_rate()
    assert isinstance(ei.value, ConnectionLost) and "TH260_ERROR_DMA_FAIL" in str(ei.value)


def test_open_failures():
    th, _ = make(TH260MockLibrary("t", devices=(1,)), device_index=0)
    with pytest.raises(TH260Error, match="TH260_OpenDevice returned -1 .*DEVICE_OPEN_FAIL"):
        th.connect()
    th2, mock2 = make(TH260MockLibrary("t", serial="1234567"), serial="7654321")
    with pytest.raises(InstrumentError, match="serial 1234567"):
        th2.connect()
    assert not mock2.devices[0].is_open                 # closed again after the refusal


def test_error_tables_agree_between_driver_and_mock():
    assert drv.ERROR_NAMES == mk.ERROR_NAMES
    for const in ("TTREADMAX", "TTREADMIN", "MODE_T2", "MODE_T3", "FLAG_FIFOFULL", "FLAG_SYNC_LOST",
                  "MAXSTRLEN_ERRSTR", "MAXSTRLEN_WRNTXT", "HWIDENT_PICO", "HWIDENT_NANO"):
        assert getattr(drv, const) == getattr(mk, const), const
    assert drv.TTREADMAX == 131072 and drv.FLAG_FIFOFULL == 0x0002 and drv.MODE_T3 == 3


def test_missing_library_names_the_file_and_how_to_install(monkeypatch, tmp_path):
    missing = str(tmp_path / "libth260.so")
    monkeypatch.setenv(drv.ENV_LIBRARY, missing)
    with pytest.raises(TH260LibraryNotFound) as ei:
        TimeHarp260.open_transport("TH260::0", name="tagger")
    msg = str(ei.value)
    assert missing in msg and "TH260Lib" in msg and drv.ENV_LIBRARY in msg and "--sim" in msg
    assert isinstance(ei.value, ConnectionLost)
    assert any("th260" in c.lower() for c in drv.library_candidates("linux"))
    assert drv.library_candidates("win32")[0].startswith("th260lib")


def test_resources_and_transport():
    assert drv.parse_resource("TH260::2") == 2
    for bad in ("TH260::7", "TH260::x", "GPIB0::1::INSTR"):
        with pytest.raises(InputError):
            drv.parse_resource(bad)
    mock = TH260MockLibrary("t", devices=(2,))
    th = TimeHarp260("t", TH260Transport("TH260::2", lib=mock))
    th.connect()
    assert th.device_index == 2 and mock.devices[2].is_open
    with pytest.raises(InstrumentError):
        th.transport.write("*IDN?")
    with pytest.raises(InputError):
        TimeHarp260("t", ModelTransport("sim://x", object()))


def test_prototypes_cover_every_call_the_driver_makes():
    th, mock = make()
    stream_all(th, 0.01)
    th.check_warnings(emit=False)
    th.elapsed_time()
    th.safe_state()
    used = {n for n in names(mock)}
    assert used <= set(drv.PROTOTYPES), used - set(drv.PROTOTYPES)


# ---- the mock library at C level --------------------------------------------------------------
def _open(mock, mode=mk.MODE_T3):
    assert mock.TH260_OpenDevice(0, ctypes.create_string_buffer(8)) == 0
    assert mock.TH260_Initialize(c_int(0), c_int(mode)) == 0


def test_mock_state_machine_and_readfifo_limits():
    mock = TH260MockLibrary("t", seed=1)
    buf = (c_uint * mk.TTREADMAX)()
    n = c_int()
    assert mock.TH260_ReadFiFo(0, buf, mk.TTREADMAX, byref(n)) == mk.ERR["TH260_ERROR_DEVICE_NOT_OPEN"]
    assert mock.TH260_OpenDevice(0, ctypes.create_string_buffer(8)) == 0
    assert mock.TH260_ReadFiFo(0, buf, mk.TTREADMAX, byref(n)) == mk.ERR["TH260_ERROR_NOT_INITIALIZED"]
    assert mock.TH260_Initialize(0, 1) == mk.ERR["TH260_ERROR_INVALID_MODE"]
    assert mock.TH260_Initialize(0, mk.MODE_T3) == 0
    assert mock.TH260_ReadFiFo(0, buf, mk.TTREADMAX, byref(n)) == mk.ERR["TH260_ERROR_INVALID_MODE"]  # no StartMeas
    assert mock.TH260_StartMeas(0, 0) == mk.ERR["TH260_ERROR_INVALID_ARGUMENT"]
    assert mock.TH260_StartMeas(0, 100) == 0
    assert mock.TH260_ReadFiFo(0, buf, mk.TTREADMAX + 1, byref(n)) == mk.ERR["TH260_ERROR_INVALID_ARGUMENT"]
    assert mock.TH260_ReadFiFo(0, buf, mk.TTREADMIN - 1, byref(n)) == mk.ERR["TH260_ERROR_INVALID_ARGUMENT"]
    with pytest.raises(MockMemoryViolation):
        mock.TH260_ReadFiFo(0, (c_uint * 1000)(), 2048, byref(n))
    with pytest.raises(ctypes.ArgumentError):
        mock.TH260_ReadFiFo(0, buf, 1.5, byref(n))
    with pytest.raises(ctypes.ArgumentError):
        mock.TH260_ReadFiFo(0, buf, 1024, byref(ctypes.c_int64()))   # int* must be 32-bit
    with pytest.raises(ctypes.ArgumentError):
        mock.TH260_GetResolution(0, byref(c_int()))                   # double* expected
    with pytest.raises(MockMemoryViolation):
        mock.TH260_GetErrorString(ctypes.create_string_buffer(8), -17)  # needs 40 bytes
    assert mock.TH260_ReadFiFo(0, buf, mk.TTREADMAX, byref(n)) == 0 and n.value > 0
    # a numpy buffer works too, and the count is respected
    arr = np.zeros(mk.TTREADMIN, np.uint32)
    assert mock.TH260_ReadFiFo(0, arr, mk.TTREADMIN, byref(n)) == 0 and n.value <= mk.TTREADMIN
    assert mock.TH260_SetSyncDiv(0, 3) == mk.ERR["TH260_ERROR_INVALID_ARGUMENT"]
    assert mock.TH260_SetSyncEdgeTrg(0, -50, 0) == mk.ERR["TH260_ERROR_UNSUPPORTED_FUNCTION"]  # PICO board
    with pytest.raises(AttributeError):
        mock.TH260_NoSuchFunction                      # as ctypes: function not found


def test_mock_ctc_reports_done_when_the_acquisition_time_elapsed():
    src = SyntheticSource(seed=3, channels=[ChannelModel(0, [Window(0, 100e-9, 0.5)])])
    mock = TH260MockLibrary("t", source=src)
    _open(mock)
    assert mock.TH260_StartMeas(0, 50) == 0            # 50 ms = 1000 syncs
    buf = np.zeros(mk.TTREADMIN, np.uint32)
    n, ctc, got = c_int(), c_int(), []
    for _ in range(1000):
        assert mock.TH260_CTCStatus(0, byref(ctc)) == 0
        if ctc.value:
            break
        assert mock.TH260_ReadFiFo(0, buf, mk.TTREADMIN, byref(n)) == 0
        got.append(buf[:n.value].copy())
    assert ctc.value == 1
    ev = my_decode_t3(np.concatenate(got))
    assert max(e[3] for e in ev) < 1000 and len(ev) > 400
    el = c_double()
    mock.TH260_GetElapsedMeasTime(0, byref(el))
    assert el.value == pytest.approx(50.0, abs=0.1)


def test_mock_wall_pacing_overruns_its_fifo():
    src = SyntheticSource(seed=3, channels=[ChannelModel(0, [Window(0, 100e-9, 0.9)])])
    mock = TH260MockLibrary("t", source=src, pacing="wall", speed=100.0, fifo_depth=500)
    _open(mock)
    mock.TH260_StartMeas(0, 10000)
    time.sleep(0.05)                                   # 5 s simulated: ~90k records > 500
    buf, n, flags = np.zeros(mk.TTREADMAX, np.uint32), c_int(), c_int()
    assert mock.TH260_ReadFiFo(0, buf, mk.TTREADMAX, byref(n)) == 0 and n.value == 0
    mock.TH260_GetFlags(0, byref(flags))
    assert flags.value & mk.FLAG_FIFOFULL


# ---- streaming -------------------------------------------------------------------------------------
def test_streaming_never_blocks_the_caller():
    mock = TH260MockLibrary("t", seed=1, pacing="wall", speed=1.0)
    th, _ = make(mock)
    th.connect()
    t0 = time.monotonic()
    th.start_stream(30.0)
    assert time.monotonic() - t0 < 0.5
    t0 = time.monotonic()
    th.read_records(0.0)
    assert time.monotonic() - t0 < 0.2
    t0 = time.monotonic()
    th.read_records(0.1)
    assert time.monotonic() - t0 < 0.6
    assert th.streaming
    with pytest.raises(InstrumentError, match="streams"):
        th.sync_divider = 2                              # no settings while measuring
    with pytest.raises(InstrumentError, match="already"):
        th.start_stream(1.0)
    t0 = time.monotonic()
    th.stop()
    assert time.monotonic() - t0 < 1.5 and not th.streaming
    assert "TH260_StopMeas" in names(mock)
    assert th.stream_stats()["state"] == "stopped"


def test_a_slow_library_does_not_block_read_records():
    mock = TH260MockLibrary("t", seed=1, pacing="wall")

    class Slow:
        def __getattr__(self, name):
            fn = getattr(mock, name)
            if name != "TH260_ReadFiFo":
                return fn

            def slow(*a):
                time.sleep(0.2)
                return fn(*a)
            return slow
    th = TimeHarp260("t", ModelTransport("sim://t", Slow()))
    th.start_stream(10.0)
    time.sleep(0.05)                                     # the thread is inside a slow ReadFiFo
    t0 = time.monotonic()
    th.read_records(0.0)
    assert time.monotonic() - t0 < 0.1                   # not the 0.2 s of the ReadFiFo in flight
    th.stop()


def test_bounded_buffer_drops_and_reports_but_keeps_the_time_base():
    chans = [ChannelModel(c, [Window(5e-9, 400e-9, 0.95), Window(450e-9, 800e-9, 0.95)]) for c in (0, 1)]
    src = SyntheticSource(seed=11, channels=chans, keep_truth=True)
    mock = TH260MockLibrary("t", source=src)
    th, _ = make(mock, buffer_bytes=4 * drv.TTREADMAX)
    th.start_stream(5.0)                                 # ~380k records, the buffer holds 131072
    assert th.wait(10.0)                                 # the reader never blocked on a full buffer
    assert th.finished and th.dropped_records > 0
    with pytest.warns(RecordsDroppedWarning, match="dropped"):
        recs = th.read_records()
    th.stop()
    stats = th.stream_stats()
    assert stats["records_dropped"] == th.dropped_records
    assert stats["records_read"] >= recs.size + th.dropped_records - 1000
    # every kept photon decodes to its true absolute sync (the dropped chunks' overflows were kept)
    truth = set(zip(*(np.concatenate([t[i] for t in src.truth]).tolist() for i in (0, 1, 2))))
    ev = my_decode_t3(recs)
    kept = [(e[3], e[1], e[2]) for e in ev if e[0] == "photon"]
    assert len(kept) > 1000 and set(kept) <= truth


def test_dropped_chunks_keep_their_overflows_so_later_records_keep_their_time():
    src = SyntheticSource(seed=5, channels=[ChannelModel(0, [Window(0, 100e-9, 0.5)])], keep_truth=True)
    chunks = [src.next_records(3000) for _ in range(3)]
    buf = drv.RecordBuffer(max_bytes=3000 * 4)
    done = threading.Event()
    assert buf.put(chunks[0])
    assert not buf.put(chunks[1])                        # full: dropped, overflows retained
    first = buf.take_all(0, done)
    assert buf.put(chunks[2])
    got = np.concatenate(first + buf.take_all(0, done))
    assert buf.dropped_records == chunks[1].size - int(((chunks[1] >> 25) == 0x7F).sum())
    truth = set(zip(*(np.concatenate([t[i] for t in src.truth]).tolist() for i in (0, 1, 2))))
    late = [(e[3], e[1], e[2]) for e in my_decode_t3(got)[-2000:] if e[0] == "photon"]
    assert late and set(late) <= truth                  # the third chunk decodes to its true syncs
    naive = my_decode_t3(np.concatenate([chunks[0], chunks[2]]))
    assert not {(e[3], e[1], e[2]) for e in naive[-2000:] if e[0] == "photon"} <= truth


def test_fifo_overrun_is_an_error_after_the_good_records():
    mock = TH260MockLibrary("t", seed=1, pacing="wall", speed=50.0)
    th, _ = make(mock)
    th.start_stream(100.0)
    time.sleep(0.1)
    mock.inject_flags(mk.FLAG_FIFOFULL)
    assert th.wait(2.0)
    first = th.read_records()                            # what came before the overrun
    assert first.size > 0
    with pytest.raises(TH260StreamError, match="FIFO overrun") as ei:
        th.read_records()
    assert ei.value.flags & drv.FLAG_FIFOFULL
    assert "TH260_StopMeas" in names(mock)
    th.stop()                                            # already reported: no second raise
    assert th.read_records().size == 0


def test_sync_lost_is_an_error_and_stop_reports_it():
    mock = TH260MockLibrary("t", seed=1, pacing="wall")
    th, _ = make(mock)
    th.start_stream(100.0)
    mock.inject_flags(mk.FLAG_SYNC_LOST)
    assert th.wait(2.0)
    with pytest.raises(TH260StreamError, match="sync lost"):
        th.stop()


def test_library_error_during_streaming_is_raised_by_read_records():
    mock = TH260MockLibrary("t", seed=1, pacing="wall")
    th, _ = make(mock)
    th.start_stream(100.0)
    mock.fail("TH260_ReadFiFo", mk.ERR["TH260_ERROR_DMA_FAIL"], times=None)
    assert th.wait(2.0)
    with pytest.raises(TH260LinkError, match="TH260_ReadFiFo returned -24"):
        while True:
            th.read_records(0.1)


def test_warnings_are_issued():
    th, mock = make()
    th.connect()
    assert th.check_warnings() == []
    mock.inject_warnings(mk.WARNING_SYNC_RATE_TOO_HIGH | mk.WARNING_COUNTS_DROPPED)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        lines = th.check_warnings()
    assert len(lines) == 2 and any("too high" in ln for ln in lines)
    assert [type(x.message) for x in w] == [TH260Warning, TH260Warning]


def test_warnings_during_a_stream_reach_the_caller():
    mock = TH260MockLibrary("t", seed=1, pacing="wall")
    th, _ = make(mock, warning_interval_s=0.01)
    th.start_stream(100.0)
    mock.inject_flags(mk.FLAG_EVTS_DROPPED)
    mock.inject_warnings(mk.WARNING_INPT_RATE_RATIO)
    time.sleep(0.1)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        th.read_records(0.0)
    th.stop()
    text = " ".join(str(x.message) for x in w)
    assert "dropped events" in text and "pile-up" in text
    assert all(isinstance(x.message, TH260Warning) for x in w)


def test_safe_state_stops_the_measurement_and_trigger_output():
    mock = TH260MockLibrary("t", seed=1, pacing="wall")
    th, _ = make(mock)
    th.safe_state()                                      # not connected: nothing to do
    assert not mock.calls
    th.start_stream(100.0)
    mock.devices[0].trigger_output = 1000
    th.safe_state()
    assert not th.streaming and not mock.devices[0].measuring and mock.devices[0].trigger_output == 0
    th.close()
    assert not mock.devices[0].is_open


# ---- the station's --sim wiring -------------------------------------------------------------------
def test_station_builds_the_driver_on_the_mock(tmp_path):
    from labctl.config import load_station
    from labctl.station import Station

    cfg = tmp_path / "station.yaml"
    cfg.write_text(
        "station: test\n"
        "instruments:\n"
        "  tagger:\n"
        "    driver: drivers.picoquant_th260.TimeHarp260\n"
        "    resource: TH260::0\n"
        "    role: time_tagger\n"
        "    limits: {ch0.input_level: [-200 mV, 0 V]}\n"
        "    options: {mode: T3, device_index: 1, initial: {binning: 1}}\n"
        "    sim: {options: {model: N, source: {kind: synthetic, sync_rate: 20 kHz}}}\n")
    with Station(load_station(cfg), sim=True, seed=5).connect() as st:
        th = st["tagger"]
        assert isinstance(th, TimeHarp260) and "TimeHarp 260 N" in th.idn()
        assert th.device_index == 1 and st.lab.models["tagger"].devices[1].is_open
        assert th.resolution() == pytest.approx(500e-12)
        with pytest.raises(SettingError):
            th.ch0.input_level = -0.3
        th.start(0.05)
        assert th.wait(5.0)
        assert th.read_records().size > 0
        th.stop()
        assert st.safe_state() == []


# ---- record sources ----------------------------------------------------------------------------
def test_replay_of_a_raw_dump(tmp_path):
    src = SyntheticSource(seed=4, channels=[ChannelModel(0, [Window(0, 100e-9, 0.3)])])
    rec = src.next_records(5000)
    path = tmp_path / "tttrmode.out"
    rec.astype("<u4").tofile(path)
    th, _ = make(TH260MockLibrary("t", source=str(path)))
    got = stream_all(th, 10.0)
    assert np.array_equal(got, rec)


def test_replay_of_a_ptu_file(tmp_path):
    ptu = pytest.importorskip("labctl.tags.ptu")
    src = SyntheticSource(seed=4)
    rec = src.next_records(3000)
    path = tmp_path / "run.ptu"
    try:
        ptu.write_ptu(path, rec, "TimeHarp260P_T3", global_resolution=50e-6, resolution=25e-12)
    except TypeError:
        pytest.skip("labctl.tags.ptu.write_ptu has another signature")
    rs = ReplaySource(path)
    assert rs.mode == "T3"
    assert np.array_equal(rs.next_records(10**6), rec)


def test_synthetic_source_honours_divider_binning_and_enables():
    src = SyntheticSource(seed=9, keep_truth=True, channels=[ChannelModel(0, [Window(10e-9, 20e-9, 1.0)]),
                                                             ChannelModel(1, [Window(10e-9, 20e-9, 1.0)])])
    src.start({"mode": "T3", "resolution_s": 100e-12, "sync_divider": 2, "enabled": {0: True, 1: False}})
    ev = my_decode_t3(src.next_records(4000))
    ph = [e for e in ev if e[0] == "photon"]
    assert {e[1] for e in ph} == {0}
    t = np.array([e[2] for e in ph]) * 100e-12
    # with divider 2 every other laser pulse arrives one laser period (50 us) after the sync:
    # out of the 32768 x 100 ps = 3.3 us range, so only the first pulse's clicks are recorded
    assert np.all((t >= 10e-9) & (t < 20e-9))
    assert src.out_of_range > 0 and src.sync_period_s == pytest.approx(100e-6)


@settings(max_examples=30)
@given(seed=st.integers(0, 2**32 - 1), rate=st.sampled_from([1e3, 20e3, 1e6]),
       p=st.floats(0.0, 1.0), start=st.floats(0, 500e-9), width=st.floats(1e-9, 400e-9),
       dark=st.sampled_from([0.0, 1e3, 1e5]), binning=st.integers(0, 4), divider=st.sampled_from([1, 2, 4, 8]),
       n=st.integers(128, 4000))
def test_hypothesis_synthetic_t3_encoding(seed, rate, p, start, width, dark, binning, divider, n):
    chans = [ChannelModel(0, [Window(start, start + width, p)], dark), ChannelModel(1, [], dark)]
    src = SyntheticSource(sync_rate_hz=rate, channels=chans, seed=seed, keep_truth=True, max_syncs_per_call=20000)
    src.start({"mode": "T3", "resolution_s": 25e-12 * 2 ** binning, "sync_divider": divider})
    rec = np.concatenate([src.next_records(n), src.next_records(n)])
    assert rec.dtype == np.uint32
    r = rec.astype(np.int64)
    special, channel = r >> 31, (r >> 25) & 63
    nsync = r & 1023
    ovf = (special == 1) & (channel == 63)
    assert np.all(special[~ovf] == 0)                    # no markers were generated
    assert np.all(channel[~ovf] <= 1)                    # photons only on inputs 0 and 1
    assert np.all((nsync[ovf] >= 1) & (nsync[ovf] <= 1023))  # never the ambiguous count 0
    assert np.all(((r >> 10) & 0x7FFF) <= 32767)
    ev = my_decode_t3(rec)
    abs_sync = [e[3] for e in ev]
    assert abs_sync == sorted(abs_sync)
    ph = [(e[3], e[1], e[2]) for e in ev if e[0] == "photon"]
    truth = list(zip(*(np.concatenate([t[i] for t in src.truth]).tolist() for i in (0, 1, 2)))) if src.truth else []
    assert ph == truth[:len(ph)]
    # overflow accounting: overflows are written just before the photon that needs them, so the
    # wraps delivered equal the block of the last photon delivered, or of the next photon when
    # the read ended between overflow records and their photon
    wraps = sum(int(x) for x in nsync[ovf])
    if rec.size and ovf[-1]:
        assert wraps == truth[len(ph)][0] // 1024
    else:
        assert wraps == (ph[-1][0] // 1024 if ph else 0)
    d = decode(rec, "T3")
    assert d.wraps == wraps and np.array_equal(d.abs_time[d.photon], [x[0] for x in ph])


@settings(max_examples=50)
@given(st.lists(st.integers(0, 3 * 1023 * 1024 + 5000), min_size=1, max_size=60),
       st.integers(0, 1))
def test_hypothesis_overflow_records_round_trip(syncs, ch):
    s = np.sort(np.array(syncs, np.int64))
    rec, wraps = events_to_t3(s, np.full(s.size, ch), np.zeros(s.size, np.int64), 0)
    ev = my_decode_t3(rec)
    assert [e[3] for e in ev if e[0] == "photon"] == s.tolist()
    assert wraps == s[-1] // 1024
    assert all(1 <= (int(x) & 1023) <= 1023 for x in rec if int(x) >> 25 == 0x7F)
