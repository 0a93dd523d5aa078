"""Fine-tuning engine (runs in worker processes) and the GGUF exporter."""
