"""Round-trip latency and settings per second through the driver layer versus raw I/O, on the
same emulated instruments.

    .venv/bin/python benchmarks/bench_io.py [--n 400] [--repeat 5] [--config configs/lab.yaml]

Starts ``labctl emulate`` in a child process (so the emulator's threads do not share this
process's interpreter), connects the unchanged drivers through the station file it writes, and
measures, in the same run:

- ``AFG3152C.ch1.frequency`` read (one SCPI query) against ``pyvisa`` ``inst.query`` of the same
  command on the same ``TCPIP0::127.0.0.1::<port>::SOCKET`` connection (pyvisa-py): the raw calls
  go through the driver transport's own pyvisa resource, so both sides talk to the same emulator
  thread over the same socket;
- ``AFG3152C.ch1.frequency = f`` — validation against the limits, the write, and the error-queue
  check — against raw ``pyvisa`` replaying exactly the messages the driver sent (recorded from the
  driver's transport), so both put the same bytes on the wire;
- the Sercalo VP1 attenuation query through the driver (``SerialTransport``, pyserial on a
  pseudo-terminal) against raw ``pyserial`` on the same port.

For each: the median over ``--repeat`` runs of ``--n`` operations, in microseconds per
operation, operations per second, and the ratio driver / raw (the goal: the driver layer adds
less than 10 %).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPO = Path(__file__).resolve().parents[1]


def pin_cpus(pin: bool) -> tuple[set[int] | None, set[int] | None]:
    """CPU sets for (the emulator, this process): one core each when ``pin`` and the machine has
    two or more, so neither migrates between cores mid-measurement; (None, None) otherwise."""
    if not pin or not hasattr(os, "sched_setaffinity"):
        return None, None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    return {cpus[-1]}, {cpus[0]}


def start_emulator(config: str, out: Path, cpus: set[int] | None = None) -> subprocess.Popen:
    preexec = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    proc = subprocess.Popen([sys.executable, "-m", "labctl.cli", "emulate", "--config", config,
                             "--station-out", str(out)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, preexec_fn=preexec)
    line = proc.stdout.readline() if proc.stdout else ""
    if line.strip() != "ready":
        proc.kill()
        raise SystemExit(f"the emulator did not start: {line!r}")
    return proc


def timed(fn: Callable[[], object], n: int, repeat: int) -> float:
    """Median seconds per call of ``fn`` over ``repeat`` runs of ``n`` calls (after a warm-up)."""
    return compare_times(fn, fn, n, repeat)[0]


def compare_times(a: Callable[[], object], b: Callable[[], object], n: int,
                  repeat: int) -> tuple[float, float, float, float]:
    """Wall and CPU seconds per call of ``a`` and ``b``: runs of ``n`` calls interleaved a, b, b,
    a, … (so a busy machine slows both alike), medians over ``repeat`` runs each. Returns
    (wall a, wall b, cpu a, cpu b)."""
    for fn in (a, b):
        for _ in range(max(10, n // 20)):
            fn()
    wall: dict[int, list[float]] = {0: [], 1: []}
    cpu: dict[int, list[float]] = {0: [], 1: []}
    for r in range(repeat):
        for k in ((0, 1) if r % 2 == 0 else (1, 0)):
            fn = (a, b)[k]
            t, c = time.perf_counter(), time.process_time()
            for _ in range(n):
                fn()
            wall[k].append((time.perf_counter() - t) / n)
            cpu[k].append((time.process_time() - c) / n)
    med = statistics.median
    return med(wall[0]), med(wall[1]), med(cpu[0]), med(cpu[1])


class Recorder:
    """Wraps a transport to record the messages a driver operation sends."""

    def __init__(self, transport) -> None:  # noqa: ANN001
        self.t = transport
        self.log: list[tuple[str, str]] = []

    def __getattr__(self, name: str):  # noqa: ANN204
        return getattr(self.t, name)

    def write(self, message: str) -> None:
        self.log.append(("write", message))
        self.t.write(message)

    def query(self, message: str) -> str:
        self.log.append(("query", message))
        return self.t.query(message)

    def read(self) -> str:
        self.log.append(("read", ""))
        return self.t.read()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/lab.yaml")
    ap.add_argument("--n", type=int, default=400, help="operations per run")
    ap.add_argument("--repeat", type=int, default=5, help="runs per measurement (median)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--no-pin", action="store_true",
                    help="do not pin the emulator and this process to separate cores")
    args = ap.parse_args(argv)

    import pyvisa
    import serial

    from labctl.config import load_station
    from labctl.station import Station

    tmp = Path(tempfile.mkdtemp(prefix="labctl-bench-io-"))
    emu_cpus, own_cpus = pin_cpus(not args.no_pin)
    if own_cpus:
        os.sched_setaffinity(0, own_cpus)
    proc = start_emulator(args.config, tmp / "station.yaml", emu_cpus)
    results = []
    try:
        cfg = load_station(tmp / "station.yaml")
        st = Station(cfg).connect(["afg", "voa"])
        afg, voa = st["afg"], st["voa"]
        # raw pyvisa on the very socket the driver uses: the driver transport's own pyvisa
        # resource. A second connection would be served by another emulator thread, and the two
        # threads' scheduling differs by more than the driver layer costs (measured: two raw
        # sessions to the same emulated AFG differed by up to 20 %).
        raw = afg.transport.inst
        if not isinstance(raw, pyvisa.resources.MessageBasedResource):
            raise SystemExit(f"the AFG is not on a pyvisa message-based resource: {raw!r}")

        def compare(name: str, drv: Callable[[], object], base: Callable[[], object], what: str) -> None:
            t_drv, t_raw, c_drv, c_raw = compare_times(drv, base, args.n, args.repeat)
            results.append({"operation": name, "what": what, "driver_us": t_drv * 1e6, "raw_us": t_raw * 1e6,
                            "driver_per_s": 1 / t_drv, "raw_per_s": 1 / t_raw, "ratio": t_drv / t_raw,
                            "driver_cpu_us": c_drv * 1e6, "raw_cpu_us": c_raw * 1e6,
                            "cpu_ratio": c_drv / c_raw if c_raw else float("nan")})

        # 1. one query
        q = "SOURce1:FREQuency:FIXed?"
        compare("AFG3152C ch1.frequency (query)", lambda: afg.ch1.frequency, lambda: raw.query(q),
                f"driver Setting read vs pyvisa query({q!r})")

        # 2. set + error check: replay the driver's own messages raw
        values = [1.0e3, 1.25e3]
        rec = Recorder(afg.transport)
        afg.transport = rec
        afg.ch1.frequency = values[0]
        afg.transport = rec.t
        msgs = rec.log
        i = [0]

        def drv_set() -> None:
            i[0] ^= 1
            afg.ch1.frequency = values[i[0]]

        def raw_set() -> None:
            i[0] ^= 1
            for kind, m in msgs:
                if kind == "query":
                    raw.query(m.replace(f"{values[0]:.12g}", f"{values[i[0]]:.12g}"))
                else:
                    raw.write(m.replace(f"{values[0]:.12g}", f"{values[i[0]]:.12g}"))

        compare("AFG3152C ch1.frequency = f (set + error check)", drv_set, raw_set,
                "driver: " + "; ".join(f"{k} {m!r}" for k, m in msgs))

        # 3. a serial device on a pseudo-terminal: driver (pyserial transport) vs raw pyserial
        port_path = cfg.instruments["voa"].config.resource[len("serial://"):]
        voa.transport.close()
        ser = serial.serial_for_url(port_path, baudrate=voa.baud_rate, timeout=2)

        def raw_att() -> float:
            ser.write(b"ATT\r\n")
            line = ser.read_until(b"\r\n")
            return float(line.split()[1])

        # pyserial and the driver cannot share the port: measure alternately, reopening each time
        walls: dict[str, list[float]] = {"drv": [], "raw": []}
        cpus: dict[str, list[float]] = {"drv": [], "raw": []}
        for r in range(args.repeat):
            for side in (("raw", "drv") if r % 2 == 0 else ("drv", "raw")):
                if side == "raw":
                    ser = serial.serial_for_url(port_path, baudrate=voa.baud_rate, timeout=2)
                    fn: Callable[[], object] = raw_att
                else:
                    st.reconnect("voa")
                    fn = st["voa"].attenuation
                for _ in range(20):
                    fn()
                t, c = time.perf_counter(), time.process_time()
                for _ in range(args.n):
                    fn()
                walls[side].append((time.perf_counter() - t) / args.n)
                cpus[side].append((time.process_time() - c) / args.n)
                if side == "raw":
                    ser.close()
                else:
                    st["voa"].transport.close()
        med = statistics.median
        t_drv, t_raw, c_drv, c_raw = med(walls["drv"]), med(walls["raw"]), med(cpus["drv"]), med(cpus["raw"])
        results.append({"operation": "Sercalo VP1 attenuation (query, pty)",
                        "what": "driver (SerialTransport) vs pyserial write + read_until",
                        "driver_us": t_drv * 1e6, "raw_us": t_raw * 1e6, "driver_per_s": 1 / t_drv,
                        "raw_per_s": 1 / t_raw, "ratio": t_drv / t_raw, "driver_cpu_us": c_drv * 1e6,
                        "raw_cpu_us": c_raw * 1e6, "cpu_ratio": c_drv / c_raw if c_raw else float("nan")})
        st.close()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()

    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"driver layer vs raw I/O on the emulated station ({args.n} operations x {args.repeat} runs, "
          "interleaved, medians)")
    print(f"{'operation':48s} {'raw us':>8s} {'driver us':>10s} {'ops/s':>7s} {'ratio':>6s}   "
          f"{'raw cpu':>8s} {'drv cpu':>8s} {'ratio':>6s}")
    for r in results:
        print(f"{r['operation']:48s} {r['raw_us']:8.1f} {r['driver_us']:10.1f} {r['driver_per_s']:7.0f} "
              f"{r['ratio']:6.3f}   {r['raw_cpu_us']:8.1f} {r['driver_cpu_us']:8.1f} {r['cpu_ratio']:6.3f}")
    worst = max(r["ratio"] for r in results)
    print(f"driver layer adds {100 * (worst - 1):+.1f} % wall time per operation at worst (goal < +10 %); "
          "us = microseconds per operation, cpu = this process's CPU time per operation")
    return 0


if __name__ == "__main__":
    sys.exit(main())
