"""Python device models (simulators) for every instrument of the station."""
from __future__ import annotations

import importlib
from typing import Any

from .base import DeviceModel, YamlScpiModel  # noqa: F401


def load_model_class(spec: str) -> type:
    """``"sim_instruments.models.afg3152c:AFG3152CModel"`` -> the class."""
    module, _, cls = spec.partition(":")
    return getattr(importlib.import_module(module), cls)


def make_model(spec: str, name: str = "", **options: Any) -> DeviceModel:
    return load_model_class(spec)(name, **options)
