"""Cache of exported artefacts (ONNX, OpenVINO IR), keyed by the model's content.

An artefact is a directory ``<cache_dir>/<key>/``. It is built in a temporary sibling directory and
renamed into place in one step, so a reader sees either no directory or a complete one, and two
processes exporting at once both end up using one complete copy.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

_HASHED_SUFFIXES = (".json", ".safetensors", ".bin", ".pt", ".pth", ".txt")
_COMPLETE = ".complete"


_hash_memo: dict[str, tuple[tuple, str]] = {}
"""Per model directory: the (name, size, mtime) stamp of its files and their hash (one entry per directory)."""


def model_content_hash(model_dir: Path) -> str:
    """SHA-256 (hex) over the names and bytes of the model's config, weights and processor files.

    Hidden entries (such as ``.cache``) and subdirectories are not part of the model and are skipped.
    A start asks for it several times (model version, exported artefacts, precision verdict): the result
    is remembered, one entry per directory, for as long as every file keeps its size and modification time.
    """
    model_dir = Path(model_dir)
    files = sorted(
        p for p in model_dir.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix in _HASHED_SUFFIXES
    )
    if not files:
        raise FileNotFoundError(f"{model_dir} holds no model files to hash")
    key = str(model_dir.resolve())
    stamp = tuple((p.name, st.st_size, st.st_mtime_ns) for p in files for st in [p.stat()])
    known = _hash_memo.get(key)
    if known is None or known[0] != stamp:
        known = _hash_memo[key] = (stamp, _hash_files(files))
    return known[1]


def _hash_files(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def resolve_cache_dir(model_dir: Path, cache_dir: Path | None) -> Path:
    """Where artefacts go: ``cache_dir`` if given, else ``<model_dir>/.cache`` when writable, else a temp dir."""
    if cache_dir is not None:
        return Path(cache_dir)
    candidate = Path(model_dir) / ".cache"
    try:
        candidate.mkdir(exist_ok=True)
        if os.access(candidate, os.W_OK):
            return candidate
    except OSError:
        pass
    fallback = Path(tempfile.gettempdir()) / "image-classifier-cache"
    logger.info("model directory %s is read-only; caching exported artefacts in %s", model_dir, fallback)
    return fallback


def get_or_build(cache_dir: Path, key: str, build: Callable[[Path], None]) -> tuple[Path, bool]:
    """Return the artefact directory for ``key``, building it with ``build(tmp_dir)`` if absent.

    Args:
        cache_dir: Root of the cache (created if missing).
        key: File-name-safe key; must change whenever the artefact would.
        build: Writes the artefact's files into the directory it is given.

    Returns:
        ``(directory, built)``: ``built`` is False when a complete cached copy was reused.
    """
    final = Path(cache_dir) / key
    if (final / _COMPLETE).is_file():
        return final, False
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.tmp-", dir=final.parent))
    try:
        build(tmp)
        (tmp / _COMPLETE).write_text(key + "\n")
        tmp.chmod(0o755)
        try:
            os.rename(tmp, final)
        except OSError:
            if (final / _COMPLETE).is_file():
                logger.info("another process cached %s first; using its copy", key)
            elif final.exists():
                # Left over from a crashed pre-rename tool or manual copying: replace it.
                shutil.rmtree(final, ignore_errors=True)
                os.rename(tmp, final)
            else:
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final, True


def read_verdict_file(path: Path, parse: Callable[[str], T], what: str, again: str) -> T | None:
    """A cached check verdict (``parse`` of the file's text), or None when absent or unreadable; an
    unreadable one is logged as "ignoring unreadable <what> ...: <again>"."""
    try:
        return parse(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError) as e:
        logger.warning("ignoring unreadable %s %s (%s): %s", what, path, e, again)
        return None


def write_verdict_file(path: Path, text: str, what: str, again: str) -> None:
    """Cache a check verdict atomically (a temporary file, then a rename); a read-only cache only logs
    "could not cache the <what> ...: the next start <again>"."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp-{time.monotonic_ns()}")
        tmp.write_text(text)
        tmp.replace(path)
    except OSError as e:
        logger.warning("could not cache the %s in %s (%s): the next start %s", what, path, e, again)
