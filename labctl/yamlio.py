"""Safe YAML loading that remembers where every value came from.

``load_yaml`` returns plain Python data plus a map from each key path to its line, so validators
can report ``file:line: what — fix``. Only the safe subset of YAML is accepted (no tags that build
Python objects), duplicate keys are errors, and files larger than ``MAX_BYTES`` are refused.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .errors import InputError

MAX_BYTES = 8 * 1024 * 1024
MAX_DEPTH = 64
MAX_NODES = 200_000  #: values converted per document (aliases count each time: no alias bombs)

Path_ = tuple  # a key path: ("instruments", "afg", "resource") or ("pulses", 0, "start")


@dataclass
class YamlDoc:
    """Parsed YAML data with the line (1-based) of every key path."""

    data: Any
    file: str
    lines: dict[tuple, int] = field(default_factory=dict)
    text: str = ""

    def line(self, path: Iterable = ()) -> int | None:
        """Line of ``path``, or of its closest ancestor that has one."""
        p = tuple(path)
        while True:
            if p in self.lines:
                return self.lines[p]
            if not p:
                return None
            p = p[:-1]

    def error(self, path: Iterable, what: str, fix: str | None = None) -> InputError:
        """An InputError located at ``path`` in this document."""
        return InputError(what, file=self.file, line=self.line(path), fix=fix)


_PLAIN_TAGS = {"tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"}


class _Constructor(SafeConstructor):
    pass


def _convert(node: Node, path: tuple, lines: dict, cons: _Constructor, file: str, depth: int,
             budget: list[int] | None = None) -> Any:
    if budget is not None:
        budget[0] -= 1
        if budget[0] < 0:
            raise InputError(f"more than {MAX_NODES} values (or aliases expanding to them)", file=file,
                             line=node.start_mark.line + 1, fix="a config or sequence file is small; remove the aliases")
    if depth > MAX_DEPTH:
        raise InputError(f"YAML nesting deeper than {MAX_DEPTH} levels", file=file,
                         line=node.start_mark.line + 1, fix="flatten the document")
    lines.setdefault(path, node.start_mark.line + 1)
    if not isinstance(node, ScalarNode) and node.tag not in _PLAIN_TAGS:
        raise InputError(f"YAML tag {node.tag!r} is not allowed", file=file, line=node.start_mark.line + 1,
                         fix="only plain YAML (mappings, lists, strings, numbers) is accepted")
    if isinstance(node, ScalarNode):
        return cons.construct_object(node, deep=True)
    if isinstance(node, SequenceNode):
        return [_convert(n, path + (i,), lines, cons, file, depth + 1, budget) for i, n in enumerate(node.value)]
    if isinstance(node, MappingNode):
        cons.flatten_mapping(node)
        out: dict = {}
        for knode, vnode in node.value:
            key = cons.construct_object(knode, deep=True)
            if isinstance(key, (list, dict)):
                raise InputError("a mapping key must be a plain value", file=file,
                                 line=knode.start_mark.line + 1, fix="use a name as the key")
            if key in out:
                raise InputError(f"duplicate key {key!r}", file=file, line=knode.start_mark.line + 1,
                                 fix=f"keep one {key!r} entry (the first is on line {lines[path + (key,)]})")
            lines[path + (key,)] = knode.start_mark.line + 1
            out[key] = _convert(vnode, path + (key,), lines, cons, file, depth + 1, budget)
            lines[path + (key,)] = knode.start_mark.line + 1
        return out
    raise InputError(f"unsupported YAML node {type(node).__name__}", file=file,
                     line=node.start_mark.line + 1)


def loads_yaml(text: str, file: str = "<string>") -> YamlDoc:
    """Parse YAML text; raise InputError naming file and line on any problem."""
    if len(text.encode("utf-8", "replace")) > MAX_BYTES:
        raise InputError(f"file is larger than {MAX_BYTES // (1024 * 1024)} MiB", file=file,
                         fix="a config or sequence file is a few kB; check the path")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except RecursionError:
        raise InputError("YAML too deeply nested", file=file, fix="flatten the document") from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        what = f"YAML syntax error: {e.problem or e.context}"
        if e.context and e.problem:
            what += f" ({e.context})"
        raise InputError(what, file=file, line=line,
                         fix="check indentation, closing brackets and quotes around values with ':' or '#'") from None
    except yaml.YAMLError as e:
        raise InputError(f"YAML error: {e}", file=file, fix="check the file is YAML") from None
    lines: dict[tuple, int] = {}
    if node is None:
        return YamlDoc(None, file, lines, text)
    cons = _Constructor()
    try:
        data = _convert(node, (), lines, cons, file, 0, [MAX_NODES])
    except yaml.constructor.ConstructorError as e:
        mark = e.problem_mark
        raise InputError(f"YAML value not allowed: {e.problem}", file=file,
                         line=mark.line + 1 if mark else None,
                         fix="only plain YAML (mappings, lists, strings, numbers) is accepted") from None
    except RecursionError:
        raise InputError("YAML too deeply nested", file=file, fix="flatten the document") from None
    except (ValueError, OverflowError) as e:  # e.g. an integer with more digits than Python converts
        raise InputError(f"YAML value cannot be read: {e}", file=file,
                         fix="check the numbers in the file") from None
    return YamlDoc(data, file, lines, text)


def load_yaml(path: str | Path) -> YamlDoc:
    """Read and parse a YAML file; missing or unreadable files are InputErrors."""
    p = Path(path)
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        raise InputError("file not found", file=str(path), fix="check the path") from None
    except OSError as e:
        raise InputError(f"cannot read file: {e.strerror}", file=str(path)) from None
    if p.is_dir():
        raise InputError("is a folder, not a YAML file", file=str(path), fix="name the .yaml file")
    if size > MAX_BYTES:
        raise InputError(f"file is {size} bytes, larger than the {MAX_BYTES} byte limit", file=str(path),
                         fix="a config or sequence file is a few kB; check the path")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"not UTF-8 text (byte {e.start})", file=str(path),
                         fix="save the file as UTF-8 text") from None
    except OSError as e:
        raise InputError(f"cannot read file: {e.strerror}", file=str(path)) from None
    return loads_yaml(text, str(path))
