"""Command-line client: classify many images online (``/classify``) or through the queue.

Usage::

    python -m predictor.client classify photos/ cat.jpg --url http://localhost:8080 --concurrency 8 \\
        --top-k 5 --output out.jsonl
    python -m predictor.client submit photos/ --redis-url redis://localhost:6379/0 --wait --output out.csv

Folders are walked recursively for images (by extension); files named explicitly are sent whatever
their extension. A file that cannot be read or classified is reported (on stderr and as an ``error``
row) and the others go on; the exit code is 1 when any failed, else 0. Results are written as they
arrive: JSONL (one object per image) or CSV (one row per image and rank).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import email.utils
import json
import os
import random
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from predictor.flags import Parser

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"})
"""Extensions picked up when walking a folder."""
MAX_RETRY_AFTER_S = 60.0
"""Longest wait honoured from a ``Retry-After`` header."""
BACKOFF_BASE_S = 0.2
"""First retry's backoff without ``Retry-After``; it doubles with each retry, up to ``BACKOFF_MAX_S``."""
BACKOFF_MAX_S = 10.0
RETRY_JITTER = 0.5
"""Retries wait up to this share of their delay longer, at random, so clients refused together spread out."""
CSV_COLUMNS = ("path", "status", "rank", "label", "score", "class_id", "job_id", "error")


@dataclass
class Row:
    """The outcome for one image file."""

    path: str
    status: str  # ok | error | submitted
    predictions: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    job_id: str | None = None

    def as_json(self) -> dict[str, Any]:
        """JSONL form; absent parts are left out."""
        out: dict[str, Any] = {"path": self.path, "status": self.status}
        if self.job_id:
            out["job_id"] = self.job_id
        if self.status == "ok":
            out["predictions"] = self.predictions
        if self.error:
            out["error"] = self.error
        return out


class RowWriter:
    """Writes rows as JSONL or CSV, counts failures, reports them on stderr, updates the progress bar."""

    def __init__(self, out: IO[str], fmt: str, total: int, progress: bool) -> None:
        from tqdm import tqdm

        self.out, self.fmt, self.failed = out, fmt, 0
        self._csv = csv.writer(out) if fmt == "csv" else None
        if self._csv is not None:
            self._csv.writerow(CSV_COLUMNS)
        self.bar = tqdm(total=total, unit="img", file=sys.stderr, disable=not progress, dynamic_ncols=True)

    def write(self, row: Row) -> None:
        """Write one image's row(s)."""
        if row.status == "error":
            self.failed += 1
            self.bar.write(f"error: {row.path}: {row.error}", file=sys.stderr)
        if self._csv is None:
            self.out.write(json.dumps(row.as_json()) + "\n")
        elif row.status == "ok":
            for rank, p in enumerate(row.predictions, 1):
                self._csv.writerow([row.path, "ok", rank, p["label"], p["score"], p["class_id"], row.job_id or "", ""])
        else:
            self._csv.writerow([row.path, row.status, "", "", "", "", row.job_id or "", row.error or ""])
        self.out.flush()
        self.bar.update(1)

    def close(self) -> None:
        """Close the progress bar."""
        self.bar.close()


def collect_paths(paths: Iterable[str]) -> list[Path]:
    """Files to classify: folders walked recursively (sorted, image extensions only), files as given."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS))
        else:
            out.append(p)  # a missing or unreadable file becomes an error row, not a crash
    return out


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date), capped."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(MAX_RETRY_AFTER_S, max(0.0, seconds))


def retry_delay(retry_after: float | None, attempt: int, rng: random.Random | None = None) -> float:
    """Seconds to wait before retry ``attempt`` (0 = the first retry).

    With a ``Retry-After``, never less than it, and up to ``RETRY_JITTER`` of it (or of the backoff,
    when that is longer) more, at random: clients refused together do not come back together. Without
    one, exponential backoff with the same jitter.
    """
    spread = (rng or random).random() * RETRY_JITTER
    backoff = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2**attempt)
    if retry_after is None:
        return backoff * (1.0 + spread)
    return retry_after + spread * max(retry_after, backoff)


def _error_text(response: Any) -> str:
    try:
        message = response.json().get("error")
    except (ValueError, AttributeError):
        message = None
    return f"HTTP {response.status_code}: {message or response.text[:200]}"


async def classify_one(
    client: Any, path: Path, url: str, top_k: int | None, retries: int, rng: random.Random | None = None
) -> Row:
    """Classify one file over ``POST /classify``, retrying 503 (after ``Retry-After``, with jitter) and
    transport errors (:func:`retry_delay`).

    Args:
        client: an ``httpx.AsyncClient``.
        path: the image file.
        url: base URL of the predictor.
        top_k: classes per image (server default when None).
        retries: retries after the first attempt.
        rng: source of the jitter (the ``random`` module's when None).
    """
    import httpx

    try:
        data = await asyncio.to_thread(path.read_bytes)
    except OSError as e:
        return Row(str(path), "error", error=f"cannot read file: {e.strerror or e}")
    params = {} if top_k is None else {"top_k": str(top_k)}
    for attempt in range(retries + 1):
        try:
            resp = await client.post(f"{url.rstrip('/')}/classify", params=params, files={"image": (path.name, data)})
        except httpx.TransportError as e:
            if attempt == retries:
                return Row(str(path), "error", error=f"request failed: {type(e).__name__}: {e}")
            await asyncio.sleep(retry_delay(None, attempt, rng))
            continue
        if resp.status_code == 503 and attempt < retries:
            await asyncio.sleep(retry_delay(retry_after_seconds(resp.headers.get("retry-after")), attempt, rng))
            continue
        if resp.status_code == 200:
            return Row(str(path), "ok", predictions=resp.json()["predictions"][0])
        return Row(str(path), "error", error=_error_text(resp))
    raise AssertionError("unreachable")  # pragma: no cover


async def classify_paths(
    files: Sequence[Path],
    url: str,
    emit: Callable[[Row], None],
    *,
    concurrency: int = 8,
    top_k: int | None = None,
    retries: int = 5,
    timeout_s: float = 60.0,
    rng: random.Random | None = None,
) -> None:
    """Classify files with at most ``concurrency`` requests in flight; ``emit`` gets each row as it ends
    (``rng``: the retries' jitter, :func:`retry_delay`)."""
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=timeout_s, limits=limits) as client:
        todo = iter(files)

        async def run_lane() -> None:
            for path in todo:  # lanes share the iterator: each file is taken exactly once
                emit(await classify_one(client, path, url, top_k, retries, rng))

        await asyncio.gather(*(run_lane() for _ in range(max(1, concurrency))))


async def submit_paths(
    files: Sequence[Path],
    settings: Any,
    emit: Callable[[Row], None],
    *,
    top_k: int | None = None,
    wait: bool = False,
    timeout_s: float = 3600.0,
    poll_interval_s: float = 0.5,
    chunk_size: int = 64,
) -> None:
    """Enqueue one job per file through :class:`~predictor.queue.jobs.JobQueue`; with ``wait``, poll
    until every job has a result (or ``timeout_s`` passed) and emit the results, else emit the ids."""
    from predictor.errors import PredictorError
    from predictor.queue.jobs import JobQueue

    queue = JobQueue(settings)
    waiting: dict[str, str] = {}  # job id -> path
    try:
        for start in range(0, len(files), chunk_size):
            chunk, images = [], []
            for path in files[start : start + chunk_size]:
                try:
                    data = await asyncio.to_thread(path.read_bytes)
                except OSError as e:
                    emit(Row(str(path), "error", error=f"cannot read file: {e.strerror or e}"))
                    continue
                if not data:
                    emit(Row(str(path), "error", error="file is empty"))
                    continue
                chunk.append(path)
                images.append(data)
            if not chunk:
                continue
            try:
                ids = await queue.submit(images, top_k)
            except PredictorError as e:
                for path in chunk:
                    emit(Row(str(path), "error", error=f"not submitted: {e.message}"))
                continue
            for path, job_id in zip(chunk, ids, strict=True):
                if wait:
                    waiting[job_id] = str(path)
                else:
                    emit(Row(str(path), "submitted", job_id=job_id))
        if waiting:
            await _wait_results(queue, waiting, emit, timeout_s, poll_interval_s)
    finally:
        await queue.close()


async def _wait_results(
    queue: Any, waiting: dict[str, str], emit: Callable[[Row], None], timeout_s: float, poll_interval_s: float
) -> None:
    from predictor.errors import PredictorError

    deadline = time.monotonic() + timeout_s
    while waiting and time.monotonic() < deadline:
        ids = list(waiting)
        for start in range(0, len(ids), 500):
            try:
                states = await queue.get_many(ids[start : start + 500])
            except PredictorError:
                break  # Redis unreachable: try again on the next poll
            for state in states:
                status = state["status"]
                if status == "done":
                    emit(Row(waiting.pop(state["id"]), "ok", state["predictions"], job_id=state["id"]))
                elif status == "error":
                    emit(Row(waiting.pop(state["id"]), "error", error=state["error"], job_id=state["id"]))
                elif status == "unknown":
                    emit(
                        Row(
                            waiting.pop(state["id"]),
                            "error",
                            error="job is unknown (its result expired?)",
                            job_id=state["id"],
                        )
                    )
        if waiting:
            await asyncio.sleep(poll_interval_s)
    for job_id, path in waiting.items():
        emit(Row(path, "error", error=f"no result within {timeout_s:g}s (still queued)", job_id=job_id))


def build_parser() -> argparse.ArgumentParser:
    """The client's CLI."""
    parser = Parser(prog="python -m predictor.client", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    online = sub.add_parser("classify", help="classify over HTTP (POST /classify)")
    online.add_argument("--url", metavar="URL", required=True, help="predictor base URL, e.g. http://localhost:8080")
    online.add_argument("--concurrency", metavar="N", type=int, default=8, help="requests in flight")
    online.add_argument(
        "--retries",
        metavar="N",
        type=int,
        default=5,
        help="retries of a 503 or a failed connection, backing off (Retry-After when given)",
    )
    online.add_argument(
        "--timeout-s", metavar="SECONDS", type=float, default=60.0, help="timeout of one request in seconds"
    )
    queued = sub.add_parser("submit", help="enqueue jobs in the Redis stream (queue mode)")
    queued.add_argument(
        "--redis-url",
        metavar="URL",
        default=os.environ.get("PREDICTOR_REDIS_URL", ""),
        help="Redis URL (default: $PREDICTOR_REDIS_URL)",
    )
    queued.add_argument("--stream", metavar="NAME", default=None, help="stream name (default: the worker's default)")
    queued.add_argument("--wait", action="store_true", help="wait for every result and write them")
    queued.add_argument(
        "--timeout-s",
        metavar="SECONDS",
        type=float,
        default=3600.0,
        help="longest wait for results in seconds (--wait)",
    )
    for p in (online, queued):
        p.add_argument("paths", nargs="+", help="image files and folders (walked recursively)")
        p.add_argument("--top-k", metavar="K", type=int, default=None, help="classes per image (server default: 5)")
        p.add_argument("--output", metavar="FILE", default="-", help="output file (default: stdout)")
        p.add_argument(
            "--format",
            choices=("jsonl", "csv"),
            default=None,
            help="output format (default: from the output's extension, else jsonl)",
        )
        p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the client; returns the exit code (1 when any image failed)."""
    args = build_parser().parse_args(argv)
    fmt = args.format or ("csv" if args.output.lower().endswith(".csv") else "jsonl")
    files = collect_paths(args.paths)
    if args.command == "submit" and not args.redis_url:
        print(
            "submit needs --redis-url (or PREDICTOR_REDIS_URL), e.g. --redis-url redis://localhost:6379",
            file=sys.stderr,
        )
        return 2
    out = sys.stdout if args.output == "-" else open(args.output, "w", newline="")
    writer = RowWriter(out, fmt, len(files), progress=not args.no_progress)
    try:
        if args.command == "classify":
            asyncio.run(
                classify_paths(
                    files,
                    args.url,
                    writer.write,
                    concurrency=args.concurrency,
                    top_k=args.top_k,
                    retries=args.retries,
                    timeout_s=args.timeout_s,
                )
            )
        else:
            from predictor.config import Settings

            overrides = {"redis_url": args.redis_url} | ({"stream": args.stream} if args.stream else {})
            asyncio.run(
                submit_paths(
                    files,
                    Settings(**overrides),
                    writer.write,
                    top_k=args.top_k,
                    wait=args.wait,
                    timeout_s=args.timeout_s,
                )
            )
    finally:
        writer.close()
        if out is not sys.stdout:
            out.close()
    if writer.failed:
        print(f"{writer.failed} of {len(files)} images failed", file=sys.stderr)
    return 1 if writer.failed else 0


if __name__ == "__main__":
    sys.exit(main())
