"""devhost: a local Durable Functions host for Python apps, on SQLite, with no Functions host,
Core Tools, Docker, Azurite or scheduler emulator."""

__version__ = "0.1.0"
