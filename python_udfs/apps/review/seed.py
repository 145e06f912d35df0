"""The exclusion seed (`seeds/cluster_exclusions.csv`): read it, and rewrite it atomically.

The seed file is the truth for the *next* `dbt build`; the warehouse's `cluster_exclusions`
table is what the last build used. The categories here must equal the list the dbt test
`tests/dbt/assert_cluster_exclusions_use_known_categories.sql` accepts (a test checks it).
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

# MiniPile's five categories plus `other`, in the order the dbt test lists them.
CATEGORIES: tuple[str, ...] = (
    "near_duplicates",
    "pornography",
    "navigation_bars",
    "product_specifications",
    "named_entity_lists",
    "other",
)
HEADER: tuple[str, ...] = ("cluster_id", "category", "note")
SEED_NAME = "cluster_exclusions.csv"
MAX_NOTE_CHARS = 500

# one writer at a time inside this process (the review server); the file swap itself is atomic
_write_lock = threading.Lock()


@dataclass(frozen=True)
class Exclusion:
    """One row of the seed. `problem` is set for rows dbt would reject (hand edits)."""

    cluster_id: int | None
    category: str
    note: str
    raw_cluster_id: str = ""
    problem: str | None = None


def read_exclusions(path: Path) -> list[Exclusion]:
    """The seed's rows in file order; a missing file reads as no exclusions."""
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            return []
        if tuple(h.strip() for h in header) != HEADER:
            raise ValueError(f"{path}: header is {','.join(header)!r}, expected {','.join(HEADER)!r}")
        rows = []
        for record in reader:
            if not record or all(not cell.strip() for cell in record):
                continue
            raw_id, category, note = (list(record) + ["", "", ""])[:3]
            problem = None
            try:
                cluster_id: int | None = int(raw_id.strip())
            except ValueError:
                cluster_id, problem = None, f"cluster_id {raw_id!r} is not an integer"
            if problem is None and category not in CATEGORIES:
                problem = f"category {category!r} is not one of {', '.join(CATEGORIES)}"
            rows.append(Exclusion(cluster_id, category, note, raw_id, problem))
        return rows


def render(rows: list[Exclusion]) -> str:
    """The seed file's text: the header, then one line per row (csv quoting where needed)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    for row in rows:
        cluster_id = row.raw_cluster_id if row.cluster_id is None else str(row.cluster_id)
        writer.writerow([cluster_id, row.category, row.note])
    return out.getvalue()


def write_atomically(path: Path, text: str) -> None:
    """Write `text` to `path` so that readers see the old file or the new one, never a part.

    A temporary file in the same folder (same file system) is written, flushed to disk and
    swapped in with os.replace; on any failure the temporary file is removed and the
    original is left untouched.
    """
    path = Path(path)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    # a writer killed with SIGKILL leaves its temporary behind: one older than a minute is no live write
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            if time.time() - stale.stat().st_mtime > 60:
                stale.unlink()
        except FileNotFoundError:
            pass
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise


def set_exclusion(path: Path, cluster_id: int, category: str, note: str) -> bool:
    """Exclude a cluster (or update its category and note). True when it was already excluded."""
    with _write_lock:
        rows = read_exclusions(path)
        new = Exclusion(cluster_id, category, note)
        existed = any(r.cluster_id == cluster_id for r in rows)
        if existed:
            rows = [new if r.cluster_id == cluster_id else r for r in rows]
        else:
            rows.append(new)
        write_atomically(path, render(rows))
        return existed


def remove_exclusion(path: Path, cluster_id: int) -> bool:
    """Include a cluster again. False when the seed did not exclude it (nothing written)."""
    with _write_lock:
        rows = read_exclusions(path)
        kept = [r for r in rows if r.cluster_id != cluster_id]
        if len(kept) == len(rows):
            return False
        write_atomically(path, render(kept))
        return True
