"""Shared pytest fixtures (checkpoints): tiny HF checkpoints built by ``tests/factory.py``.

* ``corpus_dir``: ``<repo>/../shared/corpus`` (skips the test if it is absent).
* ``make_checkpoint(**spec)``: builds (once per session per spec) a checkpoint directory and
  returns its path; keyword arguments are :class:`tests.factory.Spec` fields, e.g.
  ``make_checkpoint(dtype="BF16", shards=3)``, ``make_checkpoint(tokenizer="bpe")``,
  ``make_checkpoint(rope_scaling={"rope_type": "linear", "factor": 2.0})``.
  Treat the returned directory as read-only: it is shared by every test in the session.
  Use ``make_checkpoint.fresh(tmp_path, **spec)`` for a private copy you may damage.
* ``tiny_checkpoint``: the default spec (F32, SentencePiece, 2 layers, hidden 256, 4 heads,
  2 KV heads) as a path.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests import factory


class CheckpointFactory:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._built: dict[str, Path] = {}

    def __call__(self, **spec: Any) -> Path:
        key = json.dumps(spec, sort_keys=True, default=str)
        if key not in self._built:
            out = self.root / f"ckpt{len(self._built)}"
            factory.build_checkpoint(out, **spec)
            self._built[key] = out
        return self._built[key]

    def fresh(self, directory: Path, **spec: Any) -> Path:
        return factory.build_checkpoint(directory, **spec)


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    if not factory.TRAIN_TEXT.is_file():
        pytest.skip(f"pt-PT corpus not found at {factory.CORPUS_DIR}")
    return factory.CORPUS_DIR


@pytest.fixture(scope="session")
def make_checkpoint(
    tmp_path_factory: pytest.TempPathFactory, corpus_dir: Path
) -> Callable[..., Path]:
    return CheckpointFactory(tmp_path_factory.mktemp("checkpoints"))


@pytest.fixture(scope="session")
def tiny_checkpoint(make_checkpoint: Callable[..., Path]) -> Path:
    return make_checkpoint()
