"""Hardware-in-the-loop tier: the station's simulators served on loopback sockets and
pseudo-terminals (``labctl emulate``), reached by the unchanged drivers through pyvisa-py and
pyserial; faults injected into the emulated instruments."""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from labctl.config import load_station
from labctl.errors import ConnectionLost, InputError, InstrumentError, InstrumentTimeout, LabctlError
from labctl.faults import RemoteFaultInjector, injector_for, loads_fault_plan, sidecar_path
from labctl.station import Station
from sim_instruments.emulator import TAGGER_DRIVER, Emulator, RemoteTwin

pytestmark = pytest.mark.hil

REPO = Path(__file__).resolve().parent.parent
LAB = REPO / "configs" / "lab.yaml"
LABCTL = [sys.executable, "-m", "labctl.cli"]
NAMES = list(load_station(LAB).instruments)


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    e = Emulator(load_station(LAB), seed=5).start()
    out = e.write_station(tmp_path_factory.mktemp("emu") / "station.yaml")
    yield e, out
    e.close()


@pytest.fixture
def station(emu):
    e, out = emu
    st = Station(load_station(out))
    yield st
    for inj in list(e.injectors):
        inj.remove()
    e.injectors.clear()
    st.close()


def eventually(fn, timeout=5.0):
    """The emulator answers in its own threads: a write without a reply lands a moment later."""
    deadline = time.monotonic() + timeout
    while not fn():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _fast(inst, timeout=0.4):
    inst.transport.timeout = timeout
    return inst


# ---- the command ---------------------------------------------------------------------------------
def test_emulate_command_serves_the_station_and_stops_on_sigint(tmp_path):
    out = tmp_path / "station.yaml"
    proc = subprocess.Popen(LABCTL + ["emulate", "--config", str(LAB), "--station-out", str(out)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = ""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if line.strip() == "ready" or not line:
                break
        assert line.strip() == "ready", proc.stderr.read() if proc.poll() is not None else line
        assert sidecar_path(out).exists()
        res = subprocess.run(LABCTL + ["instruments", "--config", str(out), "--json"], cwd=REPO,
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        rows = json.loads(res.stdout)
        assert [r["name"] for r in rows] == NAMES
        assert all(str(r["idn"]).strip() for r in rows)
        res_by = {r["name"]: r["resource"] for r in rows}
        assert res_by["afg"].startswith("TCPIP0::127.0.0.1::") and res_by["afg"].endswith("::SOCKET")
        assert res_by["pump_laser"].startswith("TCPIP0::127.0.0.1::")
        assert res_by["snspd_bias"].startswith("ASRL/dev/pts/")
        assert res_by["stretcher"].startswith("serial:///dev/pts/")
        assert res_by["tagger"].startswith("TH260-EMU::127.0.0.1:")
        port = int(res_by["afg"].split("::")[2])
        t = time.monotonic()
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=5)
        assert time.monotonic() - t < 2.0
        assert rc == 0
        assert not sidecar_path(out).exists()
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_emulate_command_sigterm_and_bad_plan(tmp_path):
    bad = tmp_path / "plan.yaml"
    bad.write_text("- {instrument: nosuch, kind: timeout, after_commands: 1}\n")
    res = subprocess.run(LABCTL + ["emulate", "--config", str(LAB), "--station-out", str(tmp_path / "s.yaml"),
                                   "--faults", str(bad)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "plan.yaml:1" in res.stderr and "Traceback" not in res.stderr
    proc = subprocess.Popen(LABCTL + ["emulate", "--config", str(LAB), "--station-out", str(tmp_path / "s.yaml")],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=2.0) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ---- the station file ----------------------------------------------------------------------------
def test_station_file_keeps_everything_but_the_resources(emu):
    e, out = emu
    src, got = load_station(LAB), load_station(out)
    a, b = src.model.model_dump(), got.model.model_dump()
    for name in a["instruments"]:
        ra, rb = a["instruments"][name], b["instruments"][name]
        assert rb["resource"] == e.resources[name]
        if name == "tagger":
            assert rb["driver"] == TAGGER_DRIVER
        for k in ra:
            if k not in ("resource", "driver"):
                assert ra[k] == rb[k], (name, k)
    for k in a:
        if k != "instruments":
            assert a[k] == b[k], k
    text = out.read_text()
    assert "# Sequence channel roles" in text          # comments kept
    assert got.instruments["afg"].limits == src.instruments["afg"].limits
    side = json.loads(sidecar_path(out).read_text())
    assert side["resources"] == e.resources and side["control"].startswith("127.0.0.1:")


def test_loopback_only(emu):
    e, _ = emu
    for srv in e.servers.values():
        sock = getattr(srv, "sock", None)
        if sock is not None:
            assert sock.getsockname()[0] == "127.0.0.1"
    with pytest.raises(InputError, match="loopback"):
        Emulator(load_station(LAB), host="0.0.0.0")


# ---- drivers over the wire ------------------------------------------------------------------------
def test_drivers_set_the_emulated_instruments(emu, station):
    e, _ = emu
    station.connect(["afg", "stretcher", "voa", "snspd_bias", "pump_laser"])
    station["afg"].ch1.period = 20e-6
    assert station["afg"].ch1.period == pytest.approx(20e-6)
    assert e.models["afg"].pulse(1).period == pytest.approx(20e-6)
    station["stretcher"].set_voltage(42.0)
    assert eventually(lambda: e.models["stretcher"].voltage == pytest.approx(42.0))
    station["voa"].set_attenuation(7.5)
    assert e.models["voa"].attenuation_db == pytest.approx(7.5)
    station["snspd_bias"].set_bias(0.75, port=1)
    assert e.models["snspd_bias"].modules[1].voltage == pytest.approx(0.75)
    station["pump_laser"].set_wavelength(1551e-9, wait=True)
    assert e.models["pump_laser"].setpoint_nm == pytest.approx(1551.0)
    with pytest.raises(InstrumentError, match="-222|-221"):   # the instrument's own refusal, over TCP
        station["afg"].write("SOURce1:PULSe:PERiod 1e9")
        station["afg"].check_errors("SOURce1:PULSe:PERiod 1e9")


def test_awg_binary_upload_over_the_socket(emu, station):
    e, _ = emu
    station.connect(["awg"])
    awg = station["awg"]
    v = 0.25 * np.sin(np.linspace(0, 2 * np.pi, 640, endpoint=False))   # block bytes include \n
    awg.upload_segment(1, v, amplitude_vpp=0.5, offset_v=0.0)
    assert np.abs(e.models["awg"].segment_volts(1, 1) - v).max() <= 0.5 / 4094 + 1e-12


def test_reconnect_and_concurrent_clients(emu):
    e, out = emu
    cfg = load_station(out)
    # sockets: concurrent clients; a serial port, like the real one, has one user at a time
    a, b = Station(cfg).connect(["afg", "redpitaya"]), Station(cfg).connect(["afg", "redpitaya"])
    errors: list[Exception] = []

    def hammer(st, v):
        try:
            for _ in range(20):
                assert st["afg"].query("*IDN?").startswith("TEKTRONIX")
                assert st["redpitaya"].query("*IDN?").startswith("REDPITAYA")
        except Exception as ex:  # collected for the assertion below
            errors.append(ex)

    threads = [threading.Thread(target=hammer, args=(st, i)) for i, st in enumerate((a, b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    a.close()
    b.close()
    assert not errors
    for _ in range(3):  # a run may reconnect after a fault
        with Station(cfg).connect(["afg", "voa", "snspd_bias"]) as st:
            assert st["afg"].query("*IDN?").startswith("TEKTRONIX")
            assert st["voa"].attenuation() >= 0
            assert st["snspd_bias"].bias(1) >= 0


def _acquire(tagger, seconds):
    tagger.start(seconds)
    recs = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        r = tagger.read_records(timeout=0.1)
        if r.size:
            recs.append(r)
        elif tagger.wait(0):
            break
    tagger.stop()
    return np.concatenate(recs) if recs else np.zeros(0, np.uint32)


def test_tagger_records_come_from_the_emulator(emu, station):
    e, _ = emu
    station.connect(["tagger"])
    tagger = station["tagger"]
    assert "TimeHarp 260" in tagger.idn()
    _acquire(tagger, 0.5)
    dev = e.models["tagger"].devices[0]
    assert dev.started and dev.tacq_ms == 500     # the emulator's board mirrors the run's settings
    if e.twin is not None:                        # the twin in the emulator made the records
        assert e.twin.settings.acquisition_time == pytest.approx(0.5)
        assert e.twin.meas_trials > 0


def test_tagger_stream_without_twin(tmp_path):
    with Emulator(load_station(LAB), seed=2, twin=False) as e:
        out = e.write_station(tmp_path / "s.yaml")
        with Station(load_station(out)).connect(["tagger"]) as st:
            recs = _acquire(st["tagger"], 0.2)
    assert recs.size > 0 and recs.dtype == np.uint32


# ---- faults over the wire -------------------------------------------------------------------------
def test_error_queue_and_timeout_over_tcp(emu, station):
    e, _ = emu
    station.connect(["afg"])
    afg = _fast(station["afg"])
    e.install_faults(loads_fault_plan("- {instrument: afg, kind: error_queue, after_commands: 0}", "p.yaml"))
    with pytest.raises(InstrumentError, match="-222"):
        afg.ch1.period = 30e-6
    assert afg.ch1.period > 0
    e.install_faults(loads_fault_plan("- {instrument: afg, kind: timeout, after_commands: 0}", "p.yaml"))
    with pytest.raises(InstrumentTimeout):
        afg.ch1.period  # noqa: B018
    assert afg.ch1.period > 0
    assert [ev["kind"] for ev in e.events()] == ["error_queue", "timeout"]


def test_a_late_reply_is_discarded_before_the_safe_state(emu, station):
    """A query that timed out leaves its reply on the way; the safe state must not read it as
    the answer to its own error check."""
    e, _ = emu
    station.connect(["afg"])
    afg = _fast(station["afg"], 0.2)
    e.install_faults(loads_fault_plan("- {instrument: afg, kind: latency, delay: 0.35 s, after_commands: 0}",
                                      "p.yaml"))
    with pytest.raises(InstrumentTimeout):
        afg.ch1.frequency  # noqa: B018
    t = afg.transport
    assert t.reply_pending
    time.sleep(0.2)  # the late reply has arrived and waits in the socket
    assert station.safe_state() == []
    assert afg.transport is t and not t.reply_pending  # drained, not rescued by a reconnect
    assert afg.ch1.output is False and afg.ch2.output is False


def test_dropped_connection_closes_the_socket_and_reconnect_works(emu, station):
    e, _ = emu
    station.connect(["afg"])
    _fast(station["afg"])
    t0 = time.monotonic()
    e.install_faults(loads_fault_plan("- {instrument: afg, kind: dropped_connection, after_commands: 0, "
                                      "duration: 2 s}", "p.yaml"))
    with pytest.raises((ConnectionLost, InstrumentTimeout)):
        station["afg"].query("*IDN?")
    with pytest.raises(LabctlError):          # still down: the connection is refused
        station.reconnect("afg")
    assert time.monotonic() - t0 < 2.0
    time.sleep(max(0.0, 2.05 - (time.monotonic() - t0)))
    station.reconnect("afg")
    assert station["afg"].query("*IDN?").startswith("TEKTRONIX")


def test_serial_faults_over_ptys(emu, station):
    e, _ = emu
    station.connect(["voa", "stretcher"])
    voa, stretcher = _fast(station["voa"]), _fast(station["stretcher"])
    stretcher.set_voltage(5.0)
    assert eventually(lambda: e.models["stretcher"].voltage == pytest.approx(5.0))
    time.sleep(0.05)
    stretcher.transport.discard_input()       # the set's prompt
    e.install_faults(loads_fault_plan("- {instrument: voa, kind: dropped_connection, after_commands: 0}\n"
                                      "- {instrument: stretcher, kind: garbled_reply, after_commands: 0}", "p.yaml"))
    with pytest.raises(InstrumentTimeout):     # a pulled serial cable: silence
        voa.attenuation()
    assert voa.attenuation() >= 0
    with pytest.raises(InstrumentError):
        stretcher.voltage()
    stretcher.transport.discard_input()
    assert stretcher.voltage() == pytest.approx(5.0, abs=0.1)


def test_remote_injector_through_the_control_port(emu, station):
    e, out = emu
    station.connect(["afg", "pump_laser"])
    plan_file = out.parent / "plan.yaml"
    plan_file.write_text("- {instrument: pump_laser, kind: mode_hop, after_commands: 0, offset: 50 pm}\n")
    from labctl.faults import load_fault_plan

    inj = injector_for(load_fault_plan(plan_file), station)
    assert isinstance(inj, RemoteFaultInjector)
    station["pump_laser"].set_wavelength(1550e-9, wait=True)
    with inj:
        got = station["pump_laser"].measured_wavelength()
        assert got == pytest.approx(1550.05e-9, abs=3e-12)
        assert [ev["kind"] for ev in inj.events] == ["mode_hop"]
    assert e.injectors == []
    assert inj.events and inj.events[0]["instrument"] == "pump_laser"


def test_remote_twin_proxy(emu):
    e, out = emu
    rt = RemoteTwin.for_station(out)
    if e.twin is None:
        assert rt is None
        assert e.control({"op": "twin", "method": "x"})["ok"] is False
    else:
        assert rt is not None
