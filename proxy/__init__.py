"""memproxy: an OpenAI-compatible stateful proxy."""

__version__ = "0.1.0"
