"""``labctl emulate``: serve the station's instruments as emulators on the wire (hardware in the
loop without the hardware)."""
from __future__ import annotations

import argparse
import json
import signal
import sys
import threading

from ..config import load_station
from ..faults import load_fault_plan


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "emulate", help="serve the station's instruments as emulators on loopback sockets and serial ports",
        description="Build every instrument's simulator (as --sim does, with the digital twin when there "
                    "is one) and serve it on the wire: SCPI/VISA instruments and the lasers on raw TCP "
                    "sockets on 127.0.0.1, serial instruments on pseudo-terminals, the time tagger through "
                    "its mock library fed over a loopback record stream. Writes a station file whose "
                    "resources point at them, prints 'ready' once everything listens, and serves until "
                    "Ctrl-C / SIGTERM. See docs/emulation.md.")
    p.add_argument("--config", required=True, metavar="FILE", help="station file to emulate (e.g. configs/lab.yaml)")
    p.add_argument("--station-out", required=True, metavar="OUT.yaml",
                   help="where to write the station file with the emulated resources")
    p.add_argument("--faults", metavar="PLAN.yaml", help="fault plan to inject (see docs/faults.md)")
    p.add_argument("--seed", type=int, default=None, help="seed of the simulated lab (reproducible noise)")
    p.add_argument("--no-twin", action="store_true", help="do not attach the digital twin")
    p.add_argument("--json", action="store_true",
                   help="after 'ready', print the resources as one JSON line")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sim_instruments.emulator import Emulator

    stop = threading.Event()

    def on_signal(signum, frame):  # noqa: ANN001
        stop.set()

    # installed first: a background job started by a shell has SIGINT ignored, and Ctrl-C must
    # end the emulator cleanly (exit 0) rather than with a KeyboardInterrupt
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        cfg = load_station(args.config)
        plan = load_fault_plan(args.faults) if args.faults else None
        if plan is not None:
            plan.check(cfg)
        emu = Emulator(cfg, seed=args.seed, faults=plan, twin=not args.no_twin, echo_events=True)
        try:
            emu.start()
            emu.write_station(args.station_out)
            if not stop.is_set():
                print("ready", flush=True)
                if args.json:
                    print(json.dumps({"station": str(emu.station_out), "resources": emu.resources,
                                      "control": emu.control_address}), flush=True)
                print(f"labctl emulate: serving {len(emu.servers)} instruments "
                      f"({'with' if emu.twin is not None else 'without'} digital twin); station file "
                      f"{emu.station_out}; Ctrl-C to stop", file=sys.stderr, flush=True)
            emu.serve_forever(stop)
        finally:
            emu.close()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return 0
