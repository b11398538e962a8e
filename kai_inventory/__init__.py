"""kai-inventory: real-time, segment-aware seat inventory for railway ticketing."""

__version__ = "0.1.0"
