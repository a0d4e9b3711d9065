"""outbox: an offline-first render queue for the Craftkit PDF API."""

__version__ = "0.1.0"
