"""Expectations for property tests of value limits, independent of the framework's exact
round-off tolerance: clearly inside is accepted, clearly outside is refused, and a value within
a billionth of the span of a limit may go either way (but never anything but SettingError)."""
import math


def classify(v, lo, hi):
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
        return "out"
    if lo <= v <= hi:
        return "in"
    band = 1e-9 * (hi - lo)
    if v < lo - band or v > hi + band:
        return "out"
    return "edge"
