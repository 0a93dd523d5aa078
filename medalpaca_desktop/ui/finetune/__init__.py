"""The Fine-tune tab: the wizard that writes a run config, the runs list and the live run monitor."""
