"""Write a file atomically: a temporary file beside the destination, then one rename.

A leaf module (standard library only), so that every room that writes files (frontends copying
sample exports, parity writing ``.npz`` feeds and goldens, backends saving models) shares one
implementation without importing one another. Readers never see a half-written file, and a failed
write leaves the destination as it was.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_output", "give_default_mode"]


def give_default_mode(path: str | os.PathLike[str]) -> None:
    """Give a file made by :func:`tempfile.mkstemp` (mode 0600) the mode a plain ``open()`` would: 0666 - umask."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


@contextlib.contextmanager
def atomic_output(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success move it onto ``dest``, else remove it.

    The temporary file exists (empty) when the block starts; write it by path or reopen it. On
    success it gets the default file mode (:func:`give_default_mode`) and replaces ``dest`` in one
    :func:`os.replace`. The folder of ``dest`` must exist.

    Args:
        dest: The file to write.

    Yields:
        The temporary file's path.

    Raises:
        OSError: The temporary file cannot be created or moved into place (nothing is left behind).
    """
    target = Path(dest)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        give_default_mode(tmp)
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
