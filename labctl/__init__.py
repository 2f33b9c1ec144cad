"""labctl: instrument control and experiment orchestration for quantum-optomechanics labs."""
__version__ = "0.1.0"
