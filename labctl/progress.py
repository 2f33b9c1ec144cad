"""Progress of a run: a tqdm bar on a terminal (trials done, rate, ETA, current point, herald rate,
running R_m), one line per sweep point when not on a terminal (CI logs stay readable)."""
from __future__ import annotations

import sys
import time
from typing import Any

from .report import _analysis


class Progress:
    def __init__(self, total: int, points: int, *, done: int = 0, enabled: bool | None = None) -> None:
        self.total = total
        self.points = points
        self.tty = sys.stderr.isatty() if enabled is None else enabled
        self.bar = None
        self.t0 = time.monotonic()
        self.done = done
        if self.tty:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, unit=" trials", unit_scale=True, dynamic_ncols=True,
                            file=sys.stderr, smoothing=0.1)

    def point(self, k: int, params: dict[str, float]) -> None:
        self.k = k
        self.params = params
        if self.bar is not None:
            self.bar.set_description(f"point {k + 1}/{self.points}")

    def advance(self, n: int, counts: list[int]) -> None:
        self.done += n
        if self.bar is not None:
            trials = max(counts[0], 1)
            post = {"herald/trial": f"{(counts[1] + counts[2]) / trials:.2e}"}
            if counts[0] > 0 and (counts[5] + counts[6] + counts[7] + counts[8]) >= 10:
                from .storage import vector_to_counts

                a = _analysis(vector_to_counts(counts))
                if a and a["Rm_sym"]["value"] is not None:
                    post["Rm_sym"] = f"{a['Rm_sym']['value']:.2f}"
            self.bar.set_postfix(post, refresh=False)
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
