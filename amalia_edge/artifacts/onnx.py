"""The exported ONNX decoder as an artifact: its metadata and its files on disk.

:mod:`amalia_edge.convert.onnx` writes the graph; the runtime backends and the TensorRT
engine builder read it back through this module. The graph carries ``amalia.*``
``metadata_props`` (:meth:`GraphInfo.to_props`) so a runtime can drive it without the
checkpoint; its weights live in one external-data file beside it, which the manifest
records by name and size (``extra.data_file`` / ``extra.data_size``).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from amalia_edge.errors import ArtifactError, ConversionError

PROP_PREFIX = "amalia."


@dataclass(frozen=True)
class GraphInfo:
    """What a runtime needs to drive an exported graph, from its metadata_props."""

    precision: str
    kv_dtype: str
    num_layers: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    max_position_embeddings: int

    @property
    def kv_bytes_per_token(self) -> int:
        """Bytes of K and V cache that one token adds (all layers)."""
        return (
            2
            * self.num_layers
            * self.num_kv_heads
            * self.head_dim
            * np.dtype(self.kv_dtype).itemsize
        )

    def past_names(self) -> list[str]:
        return [
            f"past_key_values.{i}.{kv}" for i in range(self.num_layers) for kv in ("key", "value")
        ]

    def present_names(self) -> list[str]:
        return [f"present.{i}.{kv}" for i in range(self.num_layers) for kv in ("key", "value")]

    def to_props(self) -> dict[str, str]:
        """The graph's ``metadata_props`` (what :func:`graph_info_from_props` reads back)."""
        return {PROP_PREFIX + k: str(v) for k, v in asdict(self).items()}


def graph_info_from_props(props: dict[str, str], where: str = "ONNX graph") -> GraphInfo:
    try:
        return GraphInfo(
            precision=props["amalia.precision"],
            kv_dtype=props["amalia.kv_dtype"],
            num_layers=int(props["amalia.num_layers"]),
            num_kv_heads=int(props["amalia.num_kv_heads"]),
            head_dim=int(props["amalia.head_dim"]),
            vocab_size=int(props["amalia.vocab_size"]),
            max_position_embeddings=int(props["amalia.max_position_embeddings"]),
        )
    except (KeyError, ValueError) as exc:
        raise ConversionError(
            f"{where} lacks amalia-edge metadata ({exc})",
            fix="export it with `amalia-edge quantize --onnx ...`",
        ) from None


def read_graph_info(path: str | os.PathLike[str]) -> GraphInfo:
    """Read :class:`GraphInfo` from an exported ``.onnx`` without loading its weights."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return graph_info_from_props({p.key: p.value for p in model.metadata_props}, str(path))


def check_external_data(graph: Path, extra: dict[str, Any]) -> None:
    """The external-data file the manifest names beside ``graph`` has the recorded size.

    Checked by size, not hash: hashing tens of GB on every load would take minutes (the graph,
    which names the data file, is hashed).
    """
    data_file, data_size = extra.get("data_file"), extra.get("data_size")
    if not data_file:
        return
    data = graph.parent / str(data_file)
    size = data.stat().st_size if data.exists() else -1
    if data_size is not None and size != int(data_size):
        raise ArtifactError(
            f"{data.name} is {size if size >= 0 else 'missing'} bytes, the manifest says "
            f"{data_size}",
            fix="the copy is incomplete; copy the artifacts directory again",
        )
