"""USMLE-style evaluation engine (runs in worker processes)."""
