"""The SNSPDs: efficiency and dark counts against bias, latching, dead time and timing jitter.

* efficiency ``η(V) = η_plateau · σ((V − V_half)/w) / σ((V_nominal − V_half)/w)`` (σ the
  logistic function), 0 without bias;
* dark rate ``r(V) = r_nominal · exp((V − V_nominal)/V_scale)``, 0 without bias;
* latching: above ``latch_bias`` or when the click rate exceeds ``latch_count_rate`` the wire
  stays normal-conducting and the detector stops clicking until its bias is removed (the SIM928
  ``latched`` flag, cleared by zeroing the bias or switching the output off);
* dead time: a click within ``dead_time`` after a registered click of the same detector is lost;
* jitter: Gaussian, rms ``timing_jitter``.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from labctl.tags._jit import njit


def _logistic(x: float) -> float:
    return 0.5 * (1.0 + math.tanh(0.5 * x))


def efficiency_factor(bias_v: float, p: Any) -> float:
    """Efficiency relative to the plateau value at the nominal bias (0 without bias)."""
    if bias_v <= 0:
        return 0.0
    ref = _logistic((p.bias_nominal - p.bias_half) / p.bias_width)
    return _logistic((bias_v - p.bias_half) / p.bias_width) / ref


def dark_rate(bias_v: float, nominal_rate: float, p: Any) -> float:
    """Dark-count rate (Hz) at ``bias_v``."""
    if bias_v <= 0:
        return 0.0
    return nominal_rate * math.exp(min((bias_v - p.bias_nominal) / p.bias_dark_scale, 50.0))


def latches_from_bias(bias_v: float, p: Any) -> bool:
    return bias_v > p.latch_bias


@njit
def _dead_time_sorted(sync, det, t, period, dead, ndet):  # pragma: no cover - jit
    """keep[i] for events sorted by (sync, time): a click is lost when it comes within ``dead``
    of the last registered click of the same detector."""
    n = sync.shape[0]
    keep = np.ones(n, np.bool_)
    last_sync = np.full(ndet, -(1 << 62), np.int64)
    last_t = np.zeros(ndet, np.float64)
    for i in range(n):
        d = det[i]
        gap = (sync[i] - last_sync[d]) * period + (t[i] - last_t[d]) if sync[i] - last_sync[d] < 4 else 1.0
        if gap < dead:
            keep[i] = False
        else:
            last_sync[d] = sync[i]
            last_t[d] = t[i]
    return keep


def apply_dead_time(sync: np.ndarray, detector: np.ndarray, t: np.ndarray, period: float,
                    dead: float) -> np.ndarray:
    """Mask of the events (sorted by sync, then time) that survive the detectors' dead time."""
    n = sync.size
    if n < 2 or dead <= 0:
        return np.ones(n, bool)
    ndet = int(detector.max()) + 1
    return _dead_time_sorted(sync.astype(np.int64), detector.astype(np.int64), t.astype(np.float64),
                             float(period), float(dead), ndet)
