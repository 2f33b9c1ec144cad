"""Sub-commands of ``labctl``: one module each, with ``register(subparsers)``.

A module's ``register`` adds its parser and sets ``func`` to a callable ``(args) -> int``.
Errors are raised as ``labctl.errors`` exceptions; the CLI maps them to exit codes.
"""
