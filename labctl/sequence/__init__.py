"""YAML pulse sequences: model and validation (``model``, ``validate``), expressions (``expr``),
compilation to instrument programs (``compile``)."""
from .model import Point, Pulse, Sequence, Window, load_sequence, loads_sequence  # noqa: F401
