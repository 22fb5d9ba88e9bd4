"""optrepro: a reproducible replication of five deep-learning optimizer papers."""
__version__ = "0.1.0"
