"""nat-gan: StyleNAT and its baselines behind one registry, one recipe format and one checkpoint format."""

__version__ = "0.1.0"
