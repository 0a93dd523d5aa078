"""The Chat tab: conversations with a local model running in the inference host process."""
