"""Files written so that an interruption never leaves half a file: weight caches, checkpoints,
reports and result shards all go through :func:`atomic_write`."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write"]


def atomic_write(path: str | Path, data: bytes | str | Callable[[str], None]) -> Path:
    """Write ``path`` through a temporary file in the same folder, renamed into place.

    ``data`` is the content (``str`` is written as UTF-8) or a callable that writes the
    temporary file given its name (e.g. ``lambda tmp: torch.save(state, tmp)``). Readers see the
    old file or the new one, never a partial one; on any error the temporary file is removed and
    the old file stays.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> atomic_write(folder / "report.md", "# done").read_text()
    '# done'
    >>> sorted(p.name for p in folder.iterdir())  # no temporary file left
    ['report.md']
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if callable(data):
            os.close(fd)
            data(tmp)
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
