"""Tiny real models built offline in seconds (filled in by the model-factory work)."""
