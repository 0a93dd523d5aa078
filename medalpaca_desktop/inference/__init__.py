"""Worker-side inference: backends and the chat host. Never imported by the GUI."""
