"""Data files shipped with mechlab (read with importlib.resources)."""
