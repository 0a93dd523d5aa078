"""The model manager: the LLMs found on this computer, and where to look for more."""
