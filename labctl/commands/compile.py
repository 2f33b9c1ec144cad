"""``labctl compile``: the per-instrument programs of a sequence on a station."""
from __future__ import annotations

import argparse
import json

from .. import units
from ..config import load_station
from ..sequence import load_sequence
from ..sequence.compile import compile_sequence


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compile", help="turn a sequence into per-instrument programs",
                       description="Validate a sequence against a station and print the programs each "
                                   "instrument would receive (pulse timings, serrodyne segments and sequence "
                                   "table, tagger windows). Every program is also checked on the simulated "
                                   "instruments; nothing is sent to hardware.")
    p.add_argument("sequence", metavar="SEQUENCE")
    p.add_argument("--config", required=True, metavar="FILE")
    p.add_argument("--sim", action="store_true", help="accepted for symmetry with run (compile never "
                                                         "touches hardware)")
    p.add_argument("--json", action="store_true", help="print the programs as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    seq = load_sequence(args.sequence)
    cfg = load_station(args.config)
    compiled = compile_sequence(seq, cfg)
    data = compiled.as_json()
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True, default=float))
        return 0
    for name, prog in data.items():
        print(f"{name} ({prog.get('role')}, {prog.get('driver', '').rsplit('.', 1)[-1]})")
        if prog.get("role") == "pulse_generator":
            print(f"  trigger: timer every {units.format_quantity(prog['trigger']['period'], 's')}")
            for out, o in prog["outputs"].items():
                if o["mode"] == "pulse":
                    print(f"  output {out}: pulse {', '.join(o['pulses'])}: width {units.format_quantity(o['width'], 's')}, "
                          f"delay {units.format_quantity(o['delay'], 's')}, high {o['high']:.4g} V")
                else:
                    print(f"  output {out}: arbitrary record of {o['points']} points at 1 GSa/s "
                          f"({', '.join(o['pulses'])}), delay {units.format_quantity(o['delay'], 's')}, "
                          f"high {o['high']:.4g} V")
        elif prog.get("role") == "waveform_generator":
            print(f"  {units.format_quantity(prog['sample_rate'], 'Hz')}a/s, {prog['amplitude']:.4g} Vpp, offset "
                  f"{prog['offset']:.4g} V (dphi = {prog['phase_offset'] / 3.141592653589793:.4g} pi)")
            for s in prog["segments"]:
                print(f"  segment {s['segment']}: {s['segment_length']} points, {s['periods_per_segment']} periods, "
                      f"shift {s['shift_frequency'] / 1e6:+.6g} MHz ({s.get('purpose', '')})")
            print(f"  sequence: " + ", ".join(f"{st['segment']}×{st['loops']}" for st in prog["sequence"]))
            sp = prog["spectrum"]
            print(f"  optical spectrum: {sp['efficiency'] * 100:.1f} % in the shifted line, carrier "
                  f"{sp['carrier_suppression_db']:.1f} dB down, worst spur {sp['spur_suppression_db']:.1f} dB down")
        elif prog.get("role") == "time_tagger":
            print(f"  mode {prog['mode']}, sync divider {prog['sync_divider']}, windows " +
                  ", ".join(f"{k} {units.format_quantity(w['start'], 's')}–{units.format_quantity(w['stop'], 's')}"
                            for k, w in prog["windows"].items()))
        if "sweep" in prog:
            print(f"  + {len(prog['sweep'])} more sweep points")
    return 0
