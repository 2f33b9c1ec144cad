"""Analysis of measured and simulated data.

* :mod:`labctl.analysis.counts` — the counts of a witness measurement (model, loader, validation).
* :mod:`labctl.analysis.witness` — second-order coherences g2 and the entanglement witness R_m with
  their counting statistics (Riedinger et al. 2018, main text Eq. 3 and Supplementary "Statistical
  Analysis"); see ``docs/analysis.md``.
"""
from .counts import Counts, counts_from_data, load_counts, load_counts_files, loads_counts, sum_counts
from .witness import (BOUNDS, WitnessAnalysis, analyze_counts, format_report, g2_matrix, rm_value,
                      witness_densities)

__all__ = [
    "BOUNDS", "Counts", "WitnessAnalysis", "analyze_counts", "counts_from_data", "format_report",
    "g2_matrix", "load_counts", "load_counts_files", "loads_counts", "rm_value", "sum_counts",
    "witness_densities",
]
