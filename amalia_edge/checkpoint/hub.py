"""Find a Hugging Face repo id in the local hub cache, offline (no network, no huggingface_hub).

Cache layout (huggingface_hub ``file_download.py``): ``<cache>/models--<org>--<name>/``
holding ``refs/<branch>`` (a commit hash) and ``snapshots/<commit>/`` (symlinks into
``blobs/``). The cache directory is ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
``$XDG_CACHE_HOME/huggingface/hub``, else ``~/.cache/huggingface/hub`` (huggingface_hub
``constants.py``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from amalia_edge.errors import CheckpointError

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+(@[\w.\-/]+)?$")


def hub_cache_dir() -> Path:
    """The hub cache directory, honouring HF_HUB_CACHE and HF_HOME like huggingface_hub."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def looks_like_repo_id(source: str) -> bool:
    """``org/name`` or ``org/name@revision`` that is not an existing path."""
    return bool(_REPO_ID.match(source)) and not Path(source).exists()


def resolve_repo_id(repo_id: str) -> Path:
    """Snapshot directory of ``repo_id`` (``org/name[@revision]``) in the local cache.

    ``revision`` is a branch/tag name under ``refs/`` or a commit hash; default ``main``.
    If ``refs/main`` is absent but exactly one snapshot exists, that one is used.
    """
    name, _, revision = repo_id.partition("@")
    cache = hub_cache_dir()
    repo_dir = cache / ("models--" + name.replace("/", "--"))
    fix = (
        f"download it first (`hf download {name}`), set HF_HOME/HF_HUB_CACHE to the cache that "
        "holds it, or pass the checkpoint directory"
    )
    if not repo_dir.is_dir():
        raise CheckpointError(
            f"{name} is neither a directory nor in the Hugging Face cache at {cache}", fix=fix
        )
    snapshots = repo_dir / "snapshots"
    rev = revision or "main"
    if not _inside_name(rev, allow_slash=True):
        raise CheckpointError(
            f"revision {rev!r} of {name} is not a branch, tag or commit name",
            fix="use org/name@main, @<tag> or @<commit hash>",
        )
    ref = repo_dir / "refs" / rev
    if ref.is_file():
        try:
            commit = ref.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            commit = ""
        if not _inside_name(commit, allow_slash=False):
            raise CheckpointError(
                f"{ref} does not hold a commit hash", fix=f"download {name} again"
            )
    elif (snapshots / rev).is_dir():
        commit = rev
    elif not revision and snapshots.is_dir() and len(list(snapshots.iterdir())) == 1:
        commit = next(snapshots.iterdir()).name
    else:
        raise CheckpointError(
            f"revision {rev!r} of {name} is not in the Hugging Face cache at {cache}", fix=fix
        )
    snap = snapshots / commit
    if not snap.is_dir() or snap.resolve().parent != snapshots.resolve():
        raise CheckpointError(
            f"{name}: refs/{rev} points to snapshot {commit} which is missing from {cache}",
            fix=fix,
        )
    return snap


def _inside_name(text: str, *, allow_slash: bool) -> bool:
    """A ref or commit name that stays inside its folder: no ``..``, no absolute path."""
    if not text or text.startswith("/") or "\\" in text or "\0" in text:
        return False
    parts = text.split("/")
    if not allow_slash and len(parts) > 1:
        return False
    return all(p not in ("", ".", "..") for p in parts)
