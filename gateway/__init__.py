"""callveil: privacy-preserving call analytics at the edge, beside the PBX."""

__version__ = "0.1.0"
