"""Physics models behind the experiments labctl runs (theory only: no instruments, no I/O).

One module per model, each citing the paper it implements:

- ``labctl.physics.parametric`` — steady-state mechanical entanglement by detuned parametric
  amplification and weak continuous measurement (Szorkovszky et al. 2014, arXiv:1402.6392).
"""
