"""Typed exceptions and the exit codes they map to.

Every error a user can meet is one of these; the CLI turns them into one clear message and an
exit code (``../docs/interfaces`` contract): 2 invalid input, 3 instrument or I/O fault, 130
interrupted.
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_INPUT = 2
EXIT_FAULT = 3
EXIT_INTERRUPTED = 130


class LabctlError(Exception):
    """Base class of all labctl errors."""

    exit_code = EXIT_FAULT


class Interrupted(BaseException):
    """Ctrl-C or SIGTERM, raised at a safe point of a run (a BaseException, like
    KeyboardInterrupt, so no ``except Exception`` swallows it); exit code 130."""


class InputError(LabctlError):
    """Invalid user input: a config, sequence, counts or data file, or a command-line value.

    Rendered as ``file:line: what is wrong — how to fix it``.
    """

    exit_code = EXIT_INPUT

    def __init__(self, what: str, *, file: str | None = None, line: int | None = None,
                 fix: str | None = None) -> None:
        self.what = what
        self.file = str(file) if file is not None else None
        self.line = line
        self.fix = fix
        super().__init__(self.render())

    @property
    def problems(self) -> list["InputError"]:
        """Every single problem this error stands for (one here; several for InputErrors)."""
        return [self]

    def render(self) -> str:
        where = ""
        if self.file:
            where = self.file + (f":{self.line}" if self.line else "") + ": "
        elif self.line:
            where = f"line {self.line}: "
        text = where + self.what
        if self.fix:
            text += " — " + self.fix
        return text


class InputErrors(InputError):
    """Several input errors found in one pass (all are reported, not just the first)."""

    def __init__(self, errors: list[InputError]) -> None:
        self.errors = list(errors)
        Exception.__init__(self, self.render())
        self.what = self.render()
        self.file = errors[0].file if errors else None
        self.line = errors[0].line if errors else None
        self.fix = None

    @property
    def problems(self) -> list[InputError]:
        return list(self.errors)

    def render(self) -> str:  # type: ignore[override]
        return "\n".join(e.render() for e in self.errors)


def raise_input_errors(errors: "list[InputError]") -> None:
    """Raise nothing (no errors), the one error, or all of them together as InputErrors."""
    if errors:
        raise errors[0] if len(errors) == 1 else InputErrors(list(errors))


class InstrumentError(LabctlError):
    """An instrument reported an error, refused a command or misbehaved.

    Names the instrument, the command that was sent and the instrument's own message.
    """

    def __init__(self, instrument: str, command: str | None, message: str) -> None:
        self.instrument = instrument
        self.command = command
        self.message = message
        cmd = f" after {command!r}" if command else ""
        super().__init__(f"{instrument}: instrument error{cmd}: {message}")


class InstrumentTimeout(InstrumentError):
    """An instrument did not answer within its timeout."""

    def __init__(self, instrument: str, resource: str, command: str | None, timeout_s: float) -> None:
        self.resource = resource
        self.timeout_s = timeout_s
        InstrumentError.__init__(
            self, instrument, command,
            f"no answer from {resource} within {timeout_s:g} s "
            "(is it switched on, connected, and is the resource string right?)")


class ConnectionLost(InstrumentError):
    """The link to an instrument broke (socket closed, serial port gone, library error)."""


class SettingError(InputError, ValueError):
    """A value outside an instrument's limits or choices, caught before anything is written."""

    def __init__(self, instrument: str, setting: str, value: object, allowed: str,
                 unit: str = "") -> None:
        self.instrument = instrument
        self.setting = setting
        self.value = value
        self.allowed = allowed
        u = f" {unit}" if unit else ""
        super().__init__(f"{instrument}.{setting} = {value!r}{u} is outside the allowed {allowed}",
                         fix=f"choose a value within {allowed}")


class UnitError(InputError, ValueError):
    """A quantity with a missing, unknown or wrong unit."""
