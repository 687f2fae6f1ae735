"""selfdistill: continual fine-tuning from demonstrations without catastrophic forgetting (SDFT)."""

__version__ = "0.1.0"
