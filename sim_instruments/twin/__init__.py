"""Digital twin of the DLCZ remote-entanglement experiment (Riedinger et al. 2018).

The twin reads the state of the simulated instruments of a :class:`~sim_instruments.lab.SimLab`
and produces what the lab would see: TimeHarp 260 T3 records of heralds, reads, auxiliary-pulse
clicks and dark counts (through the mock TH260 library), and the balanced-detector fringe of the
auxiliary pulse (through the Red Pitaya model). See ``docs/twin.md``.

Modules: ``params`` (all parameters), ``state`` (reading the instruments), ``devices``
(optomechanics), ``spectral`` (which-device information, serrodyne), ``interferometer`` (phase
drift, fringe, lock statistics), ``detection`` (SNSPDs), ``model`` (per-trial probabilities),
``sampler`` (events from exact laws), ``records`` (TH260 encoding), ``twin`` (the facade).
"""
from .params import TwinParams
from .state import Wiring
from .twin import BlockTruth, Twin

__all__ = ["Twin", "TwinParams", "Wiring", "BlockTruth"]
