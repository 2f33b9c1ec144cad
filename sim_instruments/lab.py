"""The simulated lab: every simulator model of one station, and (later) the digital twin that
connects them. Models find their peers here (the twin reads the AFG's pulse settings, the AWG's
serrodyne segment, the VOA's attenuation…)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class SimLab:
    seed: int | None = None
    models: dict[str, Any] = field(default_factory=dict)
    twin: Any = None
    rng: np.random.Generator = field(init=False)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    def add(self, name: str, model: Any) -> None:
        self.models[name] = model
        model.lab = self

    def find(self, cls: type) -> list[Any]:
        """All models of a class (e.g. every laser)."""
        return [m for m in self.models.values() if isinstance(m, cls)]
