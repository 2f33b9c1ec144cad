"""Photon counts of a DLCZ witness measurement: the model, the YAML loader and its validation.

A counts file (``docs/interfaces.md``, "labctl witness") holds the complete counting statistics of
one witness measurement, as the seed reports them (Riedinger et al. 2018, Supplementary Information,
the θ_opt data set)::

    trials: 1114000000          # N, number of trials (sets of pump and read pulses)
    pump: [111134, 184114]      # C(p1), C(p2): herald clicks on detector 1, 2
    read: [108723, 167427]      # C(r1), C(r2): read clicks on detector 1, 2
    coincidences:               # C(r_i, p_j): row i = read detector, column j = herald detector
      - [9, 129]
      - [130, 37]

All entries are numbers of events (dimensionless counts). Keys other than these four are ignored
(so a file may carry metadata such as the source or the detection windows).

Every problem is reported as an :class:`~labctl.errors.InputError` naming the file and line; all
problems of a document are reported together.
"""
from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from ..errors import InputError, raise_input_errors
from ..yamlio import YamlDoc, load_yaml, loads_yaml

#: Largest count accepted (events). Far above any real experiment, and small enough that every
#: count and every product of two counts is exact in the float arithmetic of the analysis.
MAX_COUNT = 10**15

KEYS = ("trials", "pump", "read", "coincidences")

_NUMBER = re.compile(r"^\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*$")

EXAMPLE = ("{trials: 1114000000, pump: [111134, 184114], read: [108723, 167427], "
           "coincidences: [[9, 129], [130, 37]]}")


@dataclass(frozen=True)
class Counts:
    """Counting statistics of one witness measurement (all values are numbers of events).

    Attributes:
        trials: N, the number of trials (sets of pump and read pulses), > 0.
        pump: (C(p1), C(p2)), herald (pump-scattered) photon clicks on detectors 1 and 2.
        read: (C(r1), C(r2)), read-scattered photon clicks on detectors 1 and 2.
        coincidences: C(r_i, p_j) as ``coincidences[i][j]``: row i = read detector,
            column j = herald detector (0-based indices here; detectors are numbered 1, 2).

    Construct directly (validated) or with :func:`load_counts` / :func:`counts_from_data`.
    Counts add: ``a + b`` sums every entry (several files, several sweep points).
    """

    trials: int
    pump: tuple[int, int]
    read: tuple[int, int]
    coincidences: tuple[tuple[int, int], tuple[int, int]]

    def __post_init__(self) -> None:
        def as_list(v: Any) -> Any:
            return [as_list(x) for x in v] if isinstance(v, (list, tuple)) else v

        data = {"trials": self.trials, "pump": as_list(self.pump), "read": as_list(self.read),
                "coincidences": as_list(self.coincidences)}
        errors = _check_values(data, lambda path: None, None)
        raise_input_errors(errors)
        object.__setattr__(self, "trials", _as_count(self.trials))
        object.__setattr__(self, "pump", tuple(_as_count(x) for x in self.pump))
        object.__setattr__(self, "read", tuple(_as_count(x) for x in self.read))
        object.__setattr__(self, "coincidences",
                           tuple(tuple(_as_count(x) for x in r) for r in self.coincidences))

    def __add__(self, other: "Counts") -> "Counts":
        if not isinstance(other, Counts):
            return NotImplemented
        return Counts(
            trials=self.trials + other.trials,
            pump=(self.pump[0] + other.pump[0], self.pump[1] + other.pump[1]),
            read=(self.read[0] + other.read[0], self.read[1] + other.read[1]),
            coincidences=tuple(
                tuple(self.coincidences[i][j] + other.coincidences[i][j] for j in range(2))
                for i in range(2)),  # type: ignore[arg-type]
        )

    def to_dict(self) -> dict[str, Any]:
        """The counts in the counts-file format of ``docs/interfaces.md`` (plain ints and lists)."""
        return {
            "trials": self.trials,
            "pump": list(self.pump),
            "read": list(self.read),
            "coincidences": [list(r) for r in self.coincidences],
        }


def sum_counts(counts: Iterable[Counts]) -> Counts:
    """Sum several counts (files, sweep points); raise InputError if there are none."""
    items = list(counts)
    if not items:
        raise InputError("no counts to sum", fix="give at least one counts file")
    total = items[0]
    for c in items[1:]:
        total = total + c
    return total


# ---------------------------------------------------------------------------------------------
# validation

def _as_count(value: Any) -> int | None:
    """An integral count from an int, an integral float or a numeric string; None if not integral."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if math.isfinite(value) and value == int(value):
            return int(value)
        return None
    if isinstance(value, str) and _NUMBER.match(value):
        # YAML 1.1 reads "1.114e9" (no sign in the exponent) as a string: accept it if integral.
        try:
            f = float(value)
        except ValueError:  # pragma: no cover - the regex admits only floats
            return None
        if math.isfinite(f) and f == int(f) and abs(f) <= MAX_COUNT:
            return int(f)
    return None


def _check_values(data: Any, line: Callable[[tuple], int | None], file: str | None) -> list[InputError]:
    """All problems of a counts document; an empty list if it is valid."""
    def err(path: tuple, what: str, fix: str | None = None) -> InputError:
        return InputError(what, file=file, line=line(path), fix=fix)

    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        return [err((), f"a counts file must be a mapping with keys {', '.join(KEYS)}; this one is {kind}",
                    fix="write it like " + EXAMPLE + " (see docs/analysis.md)")]
    errors: list[InputError] = []
    missing = [k for k in KEYS if k not in data]
    if missing:
        errors.append(err((), f"missing key{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}",
                          fix="a counts file needs trials, pump, read and coincidences, e.g. " + EXAMPLE))

    def count(path: tuple, value: Any, name: str) -> int | None:
        c = _as_count(value)
        if c is None:
            errors.append(err(path, f"{name} must be a whole number of events, not {value!r}",
                              fix="write the count as an integer, e.g. 1114000000"))
            return None
        if c < 0:
            errors.append(err(path, f"{name} = {c} is negative", fix="counts are ≥ 0"))
            return None
        if c > MAX_COUNT:
            errors.append(err(path, f"{name} = {c} is implausibly large (limit {MAX_COUNT:.0e})",
                              fix="check the value"))
            return None
        return c

    def pair(key: str, names: Sequence[str], example: str) -> list[int | None] | None:
        if key not in data:
            return None
        v = data[key]
        if not isinstance(v, list) or len(v) != 2:
            errors.append(err((key,), f"{key} must be a list of two counts (detector 1, detector 2), "
                                      f"not {_describe(v)}", fix=f"write e.g. {key}: {example}"))
            return None
        return [count((key, i), x, names[i]) for i, x in enumerate(v)]

    trials = None
    if "trials" in data:
        trials = count(("trials",), data["trials"], "trials")
        if trials == 0:
            errors.append(err(("trials",), "trials = 0: no trials", fix="the number of trials N must be > 0"))
            trials = None
    pump = pair("pump", ("C(p1)", "C(p2)"), "[111134, 184114]")
    read = pair("read", ("C(r1)", "C(r2)"), "[108723, 167427]")

    coinc: list[list[int | None]] | None = None
    if "coincidences" in data:
        v = data["coincidences"]
        shape_ok = (isinstance(v, list) and len(v) == 2
                    and all(isinstance(r, list) and len(r) == 2 for r in v))
        if not shape_ok:
            errors.append(err(("coincidences",), f"coincidences must be a 2×2 list of counts "
                                                 f"(row = read detector, column = herald detector), not {_describe(v)}",
                              fix="write e.g. coincidences: [[9, 129], [130, 37]] (two rows of two)"))
        else:
            coinc = [[count(("coincidences", i, j), v[i][j], f"C(r{i + 1},p{j + 1})") for j in range(2)]
                     for i in range(2)]

    if trials is not None:
        for key, vals, label in (("pump", pump, "p"), ("read", read, "r")):
            for i, c in enumerate(vals or []):
                if c is not None and c > trials:
                    errors.append(err((key, i), f"C({label}{i + 1}) = {c} is larger than trials = {trials}",
                                      fix="a detector clicks at most once per trial in its window; "
                                          "check trials and the singles"))
    if coinc is not None:
        for i in range(2):
            for j in range(2):
                c = coinc[i][j]
                if c is None:
                    continue
                r = read[i] if read else None
                p = pump[j] if pump else None
                above = []
                if r is not None and c > r:
                    above.append(f"the read single count C(r{i + 1}) = {r}")
                if p is not None and c > p:
                    above.append(f"the herald single count C(p{j + 1}) = {p}")
                if above:
                    errors.append(err(("coincidences", i, j),
                                      f"C(r{i + 1},p{j + 1}) = {c} is larger than " + " and ".join(above),
                                      fix="every coincidence is also a single click: check the singles "
                                          "and the layout (row = read detector, column = herald detector)"))
    return errors


def _describe(v: Any) -> str:
    if isinstance(v, list):
        return f"a list of {len(v)} entr{'y' if len(v) == 1 else 'ies'}"
    if v is None:
        return "empty"
    if isinstance(v, dict):
        return "a mapping"
    return repr(v)


# ---------------------------------------------------------------------------------------------
# loading

def counts_from_data(data: Any, doc: YamlDoc | None = None, file: str | None = None) -> Counts:
    """Validate parsed counts data (e.g. ``YamlDoc.data`` or a JSON object) and build Counts.

    Raises InputError (InputErrors if several problems) naming ``file`` and, with ``doc``, the line.
    """
    if doc is not None:
        file = file or doc.file
        line: Callable[[tuple], int | None] = doc.line
    else:
        def line(path: tuple) -> int | None:
            return None
    errors = _check_values(data, line, file)
    raise_input_errors(errors)
    conv = _as_count
    return Counts(
        trials=conv(data["trials"]),  # type: ignore[arg-type]
        pump=tuple(conv(x) for x in data["pump"]),  # type: ignore[arg-type]
        read=tuple(conv(x) for x in data["read"]),  # type: ignore[arg-type]
        coincidences=tuple(tuple(conv(x) for x in r) for r in data["coincidences"]),  # type: ignore[arg-type]
    )


def loads_counts(text: str, file: str = "<string>") -> Counts:
    """Parse and validate counts from YAML (or JSON) text."""
    doc = loads_yaml(text, file)
    return counts_from_data(doc.data, doc)


def load_counts(path: str | Path) -> Counts:
    """Load and validate one counts file; ``-`` reads standard input (e.g. from ``labctl tags herald``)."""
    if str(path) == "-":
        return loads_counts(sys.stdin.read(), "<stdin>")
    doc = load_yaml(path)
    return counts_from_data(doc.data, doc)


def load_counts_files(paths: Iterable[str | Path]) -> Counts:
    """Load several counts files and sum them; problems in all files are reported together."""
    loaded: list[Counts] = []
    errors: list[InputError] = []
    for p in paths:
        try:
            loaded.append(load_counts(p))
        except InputError as e:
            errors.extend(e.problems)
    raise_input_errors(errors)
    return sum_counts(loaded)
