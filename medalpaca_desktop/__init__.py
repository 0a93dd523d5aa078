"""MedAlpaca Desktop: chat with, fine-tune and benchmark medical LLMs offline."""

__version__ = "0.1.0"
