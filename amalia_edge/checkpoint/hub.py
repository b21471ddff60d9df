"""Find a Hugging Face repo id in the local hub cache, or download what conversion needs.

:func:`resolve_repo_id` reads the cache offline (no network, no huggingface_hub).
:func:`download_repo` fetches a repo that is not cached with ``huggingface_hub``'s
``snapshot_download`` (only :data:`ALLOW_PATTERNS`, into the same cache) unless
``HF_HUB_OFFLINE`` is set; :func:`resolve_or_download` is what ``open_checkpoint`` calls.

Resuming across runs: huggingface_hub 2.x downloads each file into a per-process temporary
(``blobs/<etag>.<uuid>.incomplete``) and deletes it when the download fails
(``file_download._download_to_tmp_and_move``), so it resumes (HTTP Range) only within one call;
a new run starts the file from zero. For the weight files (``*.safetensors``, nearly all the
bytes) we therefore keep the partial ourselves, at ``blobs/<etag>.incomplete`` (the path
huggingface_hub 1.x resumed from), and continue it with the library's own ``http_get``
(``resume_size`` → ``Range: bytes=N-``, its retries and progress bar) under the library's lock
for that blob; the finished blob is checked (size; SHA-256 when resumed and the ETag is one)
and moved into place, and ``snapshot_download`` then only links it into the snapshot. These
files are fetched over plain HTTP (the Hub serves Xet-stored files at the same ``/resolve/``
URL), not through ``hf_xet``, whose downloads are not resumable across runs either.

Cache layout (huggingface_hub ``file_download.py``): ``<cache>/models--<org>--<name>/``
holding ``refs/<branch>`` (a commit hash) and ``snapshots/<commit>/`` (symlinks into
``blobs/``). The cache directory is ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
``$XDG_CACHE_HOME/huggingface/hub``, else ``~/.cache/huggingface/hub`` (huggingface_hub
``constants.py``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from amalia_edge.errors import CheckpointError

log = logging.getLogger(__name__)

# What conversion reads (reader.py, tokenizer.py, the model card for name and licence); no
# pickles, no original/ consolidated copies, no other formats.
# Fetched by :func:`_fetch_resumable` (the partial file survives a failed run).
RESUMABLE_PATTERNS: tuple[str, ...] = ("*.safetensors",)
ALLOW_PATTERNS: tuple[str, ...] = (
    "*.safetensors",
    "model.safetensors.index.json",
    "config.json",
    "generation_config.json",
    "tokenizer.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "README.md",
)
IGNORE_PATTERNS: tuple[str, ...] = ("original/*", "consolidated*.safetensors")

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


class NotCachedError(CheckpointError):
    """The repo id (or its revision) is not in the local Hugging Face cache: the one failure of
    :func:`resolve_repo_id` that downloading can mend (a bad revision or a damaged ref cannot)."""


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
        raise NotCachedError(
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
        raise NotCachedError(
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


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` set to a true value (huggingface_hub ``constants._is_true``)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


class HubUnreachableError(CheckpointError):
    """The Hub could not be reached (no network, HF_HUB_OFFLINE, a proxy refusing)."""


def resolve_or_download(repo_id: str, *, progress: bool = True) -> Path:
    """The cached snapshot of ``repo_id``, downloading it first when it is not cached and
    the Hub can be reached; offline or without network, the one-line "not in the cache" error
    of :func:`resolve_repo_id`."""
    try:
        snapshot = resolve_repo_id(repo_id)
    except NotCachedError as not_cached:
        if hub_offline():
            raise
        try:
            return download_repo(repo_id, progress=progress)
        except HubUnreachableError:
            raise not_cached from None
    if not hub_offline() and _interrupted(repo_id, snapshot):
        log.info("%s: the cached snapshot is incomplete; resuming its download", repo_id)
        return download_repo(repo_id, progress=progress)
    return snapshot


def _download_kwargs(revision: str) -> dict[str, Any]:
    return {
        "revision": revision or None,
        "cache_dir": hub_cache_dir(),
        "allow_patterns": list(ALLOW_PATTERNS),
        "ignore_patterns": list(IGNORE_PATTERNS),
        # read now, not when huggingface_hub was imported (its constants.ENDPOINT)
        "endpoint": (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/"),
    }


def _interrupted(repo_id: str, snapshot: Path) -> bool:
    """Whether an earlier download of ``repo_id`` stopped part-way: the snapshot misses weight
    files while a partial one is left in the cache, or huggingface_hub's own file listing
    (cached at download time) says the snapshot misses files we download. Local only."""
    name, _, revision = repo_id.partition("@")
    blobs = hub_cache_dir() / ("models--" + name.replace("/", "--")) / "blobs"
    # ours are <etag>.incomplete; huggingface_hub's own <etag>.<uuid>.incomplete belong to a
    # download running now (or one killed outright) and are never resumed. A partial left from
    # another revision does not count while this snapshot has all its weights.
    if (
        blobs.is_dir()
        and any(p.name.count(".") == 1 for p in blobs.glob("*.incomplete"))
        and _weights_missing(snapshot)
    ):
        return True
    try:
        import huggingface_hub
        from huggingface_hub import errors as hub_errors
    except ImportError:
        return False
    incomplete = _incomplete_error(hub_errors)
    try:
        huggingface_hub.snapshot_download(name, local_files_only=True, **_download_kwargs(revision))
    except incomplete:
        return True
    except Exception:  # not downloaded by huggingface_hub (no listing): take it as it is
        return False
    return False


def _weights_missing(snapshot: Path) -> bool:
    """A shard ``model.safetensors.index.json`` names is absent, or there is no index and no
    ``*.safetensors`` file at all."""
    index = snapshot / "model.safetensors.index.json"
    if not index.is_file():
        return not any(snapshot.glob("*.safetensors"))
    try:
        shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return True
    return any(not (snapshot / str(shard)).is_file() for shard in shards)


def download_repo(repo_id: str, *, progress: bool = True) -> Path:
    """Download the files conversion needs of ``repo_id`` (``org/name[@revision]``) into the
    Hugging Face cache and return the snapshot directory.

    Uses ``HF_ENDPOINT`` and ``HF_TOKEN`` like huggingface_hub. Three steps: the small files
    (and the commit, the ref and the file listing) with ``snapshot_download``; each weight file
    with :func:`_fetch_resumable`, continuing the partial an interrupted run left; then
    ``snapshot_download`` again, which only links the weight blobs into the snapshot. Every
    failure is a :class:`CheckpointError`.
    """
    name, _, revision = repo_id.partition("@")
    cache = hub_cache_dir()
    if revision and not _inside_name(revision, allow_slash=True):
        raise CheckpointError(
            f"revision {revision!r} of {name} is not a branch, tag or commit name",
            fix="use org/name@main, @<tag> or @<commit hash>",
        )
    try:
        import huggingface_hub
        from huggingface_hub import errors as hub_errors
        from huggingface_hub.utils import disable_progress_bars, enable_progress_bars
    except ImportError:
        raise CheckpointError(
            f"{name} is not in the Hugging Face cache at {cache} and huggingface_hub is not "
            "installed to download it",
            fix="pip install huggingface_hub, or download it elsewhere and pass the directory",
        ) from None
    login_fix = (
        f"accept its conditions on the model page, then log in (`hf auth login`) or set "
        f"HF_TOKEN; or download {name} elsewhere and pass the directory"
    )
    offline_fix = (
        f"check the network (or set HF_ENDPOINT), or download it first (`hf download {name}`) "
        "and set HF_HOME/HF_HUB_CACHE to the cache that holds it"
    )
    if not progress:
        disable_progress_bars()
    log.info("downloading %s (%s) into %s", name, revision or "main", cache)
    kwargs = _download_kwargs(revision)
    small = {**kwargs, "ignore_patterns": [*IGNORE_PATTERNS, *RESUMABLE_PATTERNS]}
    try:
        first = huggingface_hub.snapshot_download(name, max_workers=4, **small)
        commit = Path(first).name
        _fetch_resumable(name, commit, cache, kwargs["endpoint"])
        kwargs["revision"] = commit  # the same commit as the files above, whatever the ref says
        huggingface_hub.snapshot_download(name, max_workers=4, **kwargs)
        # A file that failed in a worker thread does not always reach the caller: ask the
        # client to check the snapshot against the listing it just cached.
        path = huggingface_hub.snapshot_download(name, local_files_only=True, **kwargs)
    except _incomplete_error(hub_errors):
        raise CheckpointError(
            f"downloading {name} stopped before every file arrived",
            fix="run the same command again to resume; " + offline_fix,
        ) from None
    except hub_errors.GatedRepoError:
        raise CheckpointError(f"{name} is gated on the Hugging Face Hub", fix=login_fix) from None
    except hub_errors.RepositoryNotFoundError:
        raise CheckpointError(
            f"{name} was not found on the Hugging Face Hub (or it is private)",
            fix="check the repo id, or log in (`hf auth login`) if it is private",
        ) from None
    except hub_errors.RevisionNotFoundError:
        raise CheckpointError(
            f"{name} has no revision {revision!r} on the Hugging Face Hub",
            fix="use a branch, tag or commit hash that exists (org/name@rev)",
        ) from None
    except hub_errors.HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        raise CheckpointError(
            f"downloading {name} failed (HTTP {status})", fix=offline_fix
        ) from None
    except (hub_errors.LocalEntryNotFoundError, hub_errors.OfflineModeIsEnabled) as exc:
        # snapshot_download's answer when the Hub cannot be reached and nothing is cached
        raise HubUnreachableError(
            f"{name} is not in the Hugging Face cache at {cache} and the Hub cannot be reached "
            f"({_first_line(exc)})",
            fix=offline_fix,
        ) from None
    except Exception as exc:  # httpx transport errors mid-download, a full disk: still one line
        raise CheckpointError(
            f"downloading {name} failed ({type(exc).__name__}: {_first_line(exc)})",
            fix="run the same command again to resume; " + offline_fix,
        ) from None
    finally:
        if not progress:
            enable_progress_bars()
    snap = Path(path)
    snapshots = cache / ("models--" + name.replace("/", "--")) / "snapshots"
    if snap.resolve().parent != snapshots.resolve():  # a ref file that points outside the cache
        raise CheckpointError(
            f"{name}: the downloaded snapshot {snap} is not inside {snapshots}",
            fix=f"delete {snapshots.parent} from the cache and download {name} again",
        )
    return snap


def _fetch_resumable(name: str, commit: str, cache: Path, endpoint: str) -> None:
    """Download the weight files of ``name`` at ``commit`` into the cache's blobs, continuing
    from ``blobs/<etag>.incomplete`` where an earlier run stopped (see the module docstring).
    Files already in the cache are skipped; ``snapshot_download`` links them afterwards."""
    from huggingface_hub import HfApi
    from huggingface_hub.file_download import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.hf_api import RepoFile
    from huggingface_hub.utils import filter_repo_objects

    files = [
        f.path
        for f in HfApi(endpoint=endpoint).list_repo_tree(name, revision=commit, recursive=True)
        if isinstance(f, RepoFile)
    ]
    wanted = filter_repo_objects(
        items=files, allow_patterns=list(RESUMABLE_PATTERNS), ignore_patterns=list(IGNORE_PATTERNS)
    )
    folder = cache / ("models--" + name.replace("/", "--"))
    for filename in sorted(wanted):
        if (folder / "snapshots" / commit / filename).exists():
            continue
        url = hf_hub_url(name, filename, revision=commit, endpoint=endpoint)
        meta = get_hf_file_metadata(url, endpoint=endpoint)
        if not meta.etag or not _inside_name(meta.etag, allow_slash=False):
            raise CheckpointError(
                f"the Hub sent no usable ETag for {filename} of {name}",
                fix="check HF_ENDPOINT points to a Hugging Face Hub",
            )
        _download_blob(url, folder, meta.etag, meta.size, filename)


def _download_blob(url: str, folder: Path, etag: str, size: int | None, filename: str) -> None:
    """``folder/blobs/<etag>`` from ``url``, resuming ``<etag>.incomplete`` by HTTP Range."""
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import WeakFileLock, build_hf_headers

    blob = folder / "blobs" / etag
    part = blob.with_name(etag + ".incomplete")
    blob.parent.mkdir(parents=True, exist_ok=True)
    # the lock huggingface_hub's hf_hub_download takes for this blob (file_download.py)
    lock = folder.parent / ".locks" / folder.name / f"{etag}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with WeakFileLock(lock):
        if blob.exists():
            return
        while True:
            have = part.stat().st_size if part.exists() else 0
            if size is not None and have > size:  # not a prefix of this file
                part.unlink()
                have = 0
            if have:
                log.info("%s: resuming at byte %d of %s", filename, have, size)
            with part.open("ab") as f:
                http_get(
                    url,
                    f,
                    resume_size=have,
                    headers=build_hf_headers(),
                    expected_size=size,
                    displayed_filename=filename,
                )
            if not have or _sha256_matches(part, etag):
                break
            # The bytes kept from an earlier run do not make this file: start it over (once,
            # since the next pass starts from zero).
            log.warning("%s: the resumed download does not match its SHA-256; restarting", filename)
            part.unlink()
        os.replace(part, blob)


def _sha256_matches(path: Path, etag: str) -> bool:
    """Whether ``path`` hashes to ``etag`` when the ETag is a SHA-256 (the Hub's for LFS and
    Xet files); any other ETag cannot be checked here and is taken as matching."""
    if not re.fullmatch(r"[0-9a-f]{64}", etag):
        return True
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest() == etag


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:160]


def _incomplete_error(hub_errors: Any) -> type[Exception]:
    """huggingface_hub's IncompleteSnapshotError (2.x); older versions do not check."""

    class _Never(Exception):
        pass

    found: type[Exception] = getattr(hub_errors, "IncompleteSnapshotError", _Never)
    return found
