"""valux: an actor-based concurrent trading engine on Ray."""

__version__ = "0.1.0"
