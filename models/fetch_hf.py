"""Download a Hugging Face image-classification model into a local directory.

Usage::

    python -m models.fetch_hf microsoft/resnet-50 --out models/microsoft--resnet-50

Only the files the predictor needs are fetched (config, weights, preprocessor config), with a progress
bar. Without a network (or with ``HF_HUB_OFFLINE=1``) it fails with a message saying so instead of a
traceback; a directory already complete is left as it is.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.md"]
"""Config, weights and processor files; safetensors only (``*.bin`` pickles are not loaded)."""


class FetchError(RuntimeError):
    """The model could not be downloaded (no network, unknown id, no safetensors weights)."""


def is_complete(model_dir: Path) -> bool:
    """Whether ``model_dir`` already holds a config, weights and a preprocessor config."""
    model_dir = Path(model_dir)
    return (
        (model_dir / "config.json").is_file()
        and any(model_dir.glob("*.safetensors"))
        and (model_dir / "preprocessor_config.json").is_file()
    )


def fetch(repo_id: str, out_dir: Path, revision: str | None = None) -> Path:
    """Download ``repo_id`` (at ``revision``) into ``out_dir`` with a progress bar.

    Raises:
        FetchError: the Hub cannot be reached, the repository does not exist, or it has no
            safetensors weights.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    out_dir = Path(out_dir)
    if is_complete(out_dir):
        logger.info("%s is already complete; nothing to download", out_dir)
        return out_dir
    try:
        snapshot_download(repo_id, revision=revision, local_dir=out_dir, allow_patterns=ALLOW_PATTERNS)
    except RepositoryNotFoundError as e:
        raise FetchError(f"{repo_id!r} is not a model on the Hugging Face Hub (or it is private)") from e
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as e:
        raise FetchError(
            f"could not download {repo_id!r} from the Hugging Face Hub: no network access ({e}). "
            "Run `make run` (the embedded default model needs no network) or copy a model directory "
            "into models/ and pass --model_dir."
        ) from e
    if not is_complete(out_dir):
        raise FetchError(
            f"{repo_id!r} downloaded to {out_dir} lacks config.json, *.safetensors or "
            "preprocessor_config.json; the predictor needs all three"
        )
    logger.info("downloaded %s to %s", repo_id, out_dir)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description="Download a Hugging Face image classifier.")
    parser.add_argument("repo_id", help="model id on the Hub, e.g. microsoft/resnet-50")
    parser.add_argument("--out", type=Path, required=True, help="directory to download into")
    parser.add_argument("--revision", default=None, help="branch, tag or commit (default: main)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        fetch(args.repo_id, args.out, args.revision)
    except FetchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
