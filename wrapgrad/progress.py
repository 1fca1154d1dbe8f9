"""Progress bars: shown by the CLI and long pipeline stages, never by library calls unless asked.

One switch: a ``progress=`` argument (``True``/``False``) wins; where it is ``None`` (every
library default), the environment variable ``WRAPGRAD_PROGRESS`` decides (``1`` shows bars;
unset or ``0`` hides them). The ``wrapgrad`` command line shows bars unless ``--quiet``.

>>> with progress_bar(total=3, desc="enhancing", progress=False) as bar:  # silent
...     for chunk in range(3):
...         bar.update(1)
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["PROGRESS_ENV", "progress_bar", "show_progress"]

PROGRESS_ENV = "WRAPGRAD_PROGRESS"


def show_progress(progress: bool | None) -> bool:
    """Whether to show a bar: ``progress`` if given, else ``$WRAPGRAD_PROGRESS`` (default off)."""
    if progress is not None:
        return bool(progress)
    return os.environ.get(PROGRESS_ENV, "").strip().lower() not in ("", "0", "false", "no")


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        pass

    def set_postfix_str(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


def progress_bar(*, total: int | None, desc: str, progress: bool | None = None) -> Any:
    """A tqdm bar (``update``, ``set_postfix``, ``close``; a context manager) when
    :func:`show_progress` says so, else an object with the same methods that prints nothing."""
    if not show_progress(progress):
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False)
