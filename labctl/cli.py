"""The ``labctl`` command line.

Each sub-command lives in its own module in ``labctl/commands/`` and exposes
``register(subparsers)``; this module discovers them, parses arguments and turns every error into
one clear message and the documented exit code (0 ok, 2 invalid input, 3 instrument or I/O fault,
130 interrupted). Tracebacks are shown only with ``--debug``.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from typing import Sequence

from . import __version__
from .errors import EXIT_FAULT, EXIT_INPUT, EXIT_INTERRUPTED, InputError, Interrupted, LabctlError

DESCRIPTION = """\
labctl drives quantum-optomechanics experiments: lasers, AOM pulse generators, the serrodyne AWG,
attenuators, the fiber-stretcher phase lock, SNSPD bias and the TimeHarp time tagger, from YAML
pulse sequences, on the lab's instruments or (--sim) on simulated ones.

Typical session:
  labctl instruments --config configs/lab.yaml --sim      who is there, and who answers
  labctl validate sequences/dlcz_witness.yaml --config configs/lab.yaml
  labctl run sequences/dlcz_witness.yaml --config configs/lab.yaml --sim --out runs/test
"""


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors mapped to exit code 2 and a hint, never a traceback."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        sys.stderr.write(f"{self.prog}: error: {message} — see '{self.prog} --help'\n")
        raise SystemExit(EXIT_INPUT)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="labctl", description=DESCRIPTION,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"labctl {__version__}")
    parser.add_argument("--debug", action="store_true", help="log instrument I/O and show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    from . import commands

    for mod in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if mod.name.startswith("_"):
            continue
        module = importlib.import_module(f"{commands.__name__}.{mod.name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
    except KeyboardInterrupt:  # Ctrl-C while starting up: nothing was touched yet
        print("labctl: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_INPUT
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        rc = args.func(args)
        return int(rc or 0)
    except InputError as e:
        if args.debug:
            raise
        print(f"labctl: {e.render()}", file=sys.stderr)
        return EXIT_INPUT
    except LabctlError as e:
        if args.debug:
            raise
        print(f"labctl: {e}", file=sys.stderr)
        return e.exit_code
    except (KeyboardInterrupt, Interrupted):
        print("labctl: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 0
    except Exception as e:  # a bug: one line for the user, the traceback with --debug
        if args.debug:
            raise
        print(f"labctl: internal error: {type(e).__name__}: {e} (run with --debug for the traceback)",
              file=sys.stderr)
        return EXIT_FAULT


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
