"""A matrix of benchmark runs whose rows go to a CSV as they finish, so that an
interrupted call resumes: a second call skips the runs already in the file."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any


def optional_int(text: str) -> int | None:
    """An int, or None for the empty cell csv writes for None."""
    return int(text) if text else None


def boolean(text: str) -> bool:
    """A bool as csv writes it."""
    return text == "True"


def read_rows(path: Path, types: dict[str, Callable[[str], Any]]) -> list[dict[str, Any]]:
    """The rows of an earlier call, each cell converted by ``types`` (str where absent).

    Raises:
        SystemExit: the file has other columns than ``types`` names.
    """
    if not path.exists() or path.stat().st_size == 0:
        return []
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames != list(types):
            raise SystemExit(f"{path} has other columns than {list(types)}: use another --out")
        return [{k: types[k](v) for k, v in row.items()} for row in reader]


def run_matrix(
    path: Path,
    types: dict[str, Callable[[str], Any]],
    jobs: Iterable[tuple],
    key: Callable[[dict[str, Any]], tuple],
    work: Callable[..., dict[str, Any]],
    workers: int,
    keep: Callable[[dict[str, Any]], bool] = lambda row: True,
) -> Iterator[dict[str, Any]]:
    """Every row, earlier ones first: ``work(*job)`` in ``workers`` processes for each
    job whose ``key`` is not among the kept earlier rows (``keep``), appended to
    ``path`` as each finishes (a header only when the file is new or empty)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fresh = not path.exists() or path.stat().st_size == 0
    earlier = [row for row in read_rows(path, types) if keep(row)]
    done = {key(row) for row in earlier}
    todo = [job for job in jobs if job not in done]
    print(f"{len(earlier)} runs already in {path}; {len(todo)} to do", flush=True)
    yield from earlier
    with open(path, "a", newline="") as handle, ProcessPoolExecutor(workers) as pool:
        writer = csv.DictWriter(handle, fieldnames=list(types))
        if fresh:
            writer.writeheader()
        futures = [pool.submit(work, *job) for job in todo]
        for count, future in enumerate(as_completed(futures), 1):
            row = future.result()
            writer.writerow(row)
            handle.flush()
            print(f"[{count}/{len(todo)}] {row}", flush=True)
            yield row
