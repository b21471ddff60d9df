"""Read Hugging Face checkpoints: config, safetensors (lazy, sharded, BF16), tokenizer.

See docs/architecture.md ("checkpoint") for the contract other modules code against.
"""

from __future__ import annotations

from amalia_edge.checkpoint.architectures import ARCHITECTURES, supported_architectures
from amalia_edge.checkpoint.config import ModelConfig
from amalia_edge.checkpoint.reader import DEMO_DIR, Checkpoint, open_checkpoint
from amalia_edge.checkpoint.safetensors import TensorInfo
from amalia_edge.checkpoint.tokenizer import Vocab

__all__ = [
    "ARCHITECTURES",
    "DEMO_DIR",
    "Checkpoint",
    "ModelConfig",
    "TensorInfo",
    "Vocab",
    "open_checkpoint",
    "supported_architectures",
]
