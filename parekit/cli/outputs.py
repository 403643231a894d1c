"""Output files of a command: checked before any work, written last, all or nothing.

A command declares its inputs and outputs up front (:class:`Outputs`). :meth:`Outputs.check` refuses,
before anything is created, an output that is an input or another output (same path after
resolving links, or the same inode: symlinks and hard links included), an existing output that is
not a regular file (a FIFO, a device, a folder: it is refused, never replaced) and an output whose
folder is missing or not writable. Files are then staged under a temporary name in their own
folder (:meth:`Outputs.stage`) and moved into place together by :meth:`Outputs.commit`; on failure
:meth:`Outputs.discard` removes every staged file. Errors name the user's path, never the temporary one.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from parekit.errors import ParekitError

T = TypeVar("T")

__all__ = ["Outputs"]


def _identity(path: str) -> tuple[Path, tuple[int, int] | None]:
    """A path's resolved form and, when it exists, its (device, inode)."""
    p = Path(path)
    try:
        resolved = p.resolve()
    except (OSError, RuntimeError):  # a symlink loop: compare the absolute path
        resolved = p.absolute()
    try:
        st = os.stat(path)
        return resolved, (st.st_dev, st.st_ino)
    except (OSError, ValueError):
        return resolved, None


def _same(a: str, b: str) -> bool:
    (ra, ia), (rb, ib) = _identity(a), _identity(b)
    return ra == rb or (ia is not None and ia == ib)


@dataclass
class Outputs:
    """The inputs and outputs of one command run, by option name (``"MODEL"``, ``"-o"``, ``"--report"``)."""

    inputs: list[tuple[str, str]] = field(default_factory=list)
    outputs: list[tuple[str, str]] = field(default_factory=list)
    _staged: list[tuple[Path, Path, str]] = field(default_factory=list)

    def add_input(self, what: str, path: str | os.PathLike[str] | None) -> None:
        """Declare an input file (``None``: not given)."""
        if path is not None:
            self.inputs.append((what, os.fspath(path)))

    def add_output(self, what: str, path: str | os.PathLike[str] | None) -> None:
        """Declare an output file (``None``: not given)."""
        if path is not None:
            self.outputs.append((what, os.fspath(path)))

    def check(self) -> None:
        """Refuse outputs that would destroy an input or another output, or cannot be written.

        Raises:
            ParekitError: One line naming the option and the path.
        """
        for i, (what, path) in enumerate(self.outputs):
            for in_what, in_path in self.inputs:
                if _same(path, in_path):
                    raise ParekitError(f"{what} '{path}' is the same file as the input {in_what} '{in_path}'",
                                       note="write outputs to new paths; inputs are never modified")
            for other_what, other in self.outputs[:i]:
                if _same(path, other):
                    raise ParekitError(f"{what} '{path}' is the same file as {other_what} '{other}'",
                                       note="give every output its own path")
            self._check_writable(what, path)

    @staticmethod
    def _check_writable(what: str, path: str) -> None:
        if "\x00" in path:
            raise ParekitError(f"{what}: the path contains a NUL character")
        p = Path(path)
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            st = None
        except OSError as exc:
            raise ParekitError(f"{what} '{path}': {exc.strerror or exc}") from exc
        if st is not None and not stat.S_ISREG(st.st_mode) and not stat.S_ISLNK(st.st_mode):
            kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            raise ParekitError(f"{what} '{path}' exists and is {kind}", note="outputs replace regular files only")
        if st is not None and stat.S_ISLNK(st.st_mode):
            with contextlib.suppress(OSError):
                target = os.stat(p)
                if not stat.S_ISREG(target.st_mode):
                    raise ParekitError(f"{what} '{path}' points to something that is not a regular file",
                                       note="outputs replace regular files only")
        folder = p.parent
        if not folder.is_dir():
            raise ParekitError(f"{what} '{path}': folder '{folder}' does not exist",
                               note="create the folder first; parekit creates no folders")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ParekitError(f"{what} '{path}': folder '{folder}' is not writable")

    def stage(self, path: str | os.PathLike[str], write: Callable[[str], T]) -> T:
        """Run ``write(temp_path)`` for output ``path``; the file moves into place at :meth:`commit`.

        Errors raised by ``write`` that name the temporary path are re-raised naming ``path``.
        """
        dest = Path(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        os.close(fd)
        self._staged.append((Path(tmp), dest, os.fspath(path)))
        with self._user_paths(tmp, os.fspath(path)):
            return write(tmp)

    def stage_text(self, path: str | os.PathLike[str] | None, text: str) -> None:
        """Stage a text file (``None``: nothing)."""
        if path is None:
            return

        def write(tmp: str) -> None:
            with open(tmp, "w", encoding="utf-8") as handle:
                handle.write(text)

        self.stage(path, write)

    def commit(self) -> None:
        """Move every staged file into place (same folder: a rename), with the mode a plain ``open`` gives."""
        umask = os.umask(0)
        os.umask(umask)
        try:
            for tmp, dest, user in self._staged:
                with self._user_paths(str(tmp), user):
                    os.chmod(tmp, 0o666 & ~umask)
                    os.replace(tmp, dest)
        finally:
            self.discard()

    def discard(self) -> None:
        """Remove the staged files that were not committed."""
        for tmp, _, _ in self._staged:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        self._staged.clear()

    @contextlib.contextmanager
    def _user_paths(self, tmp: str, user: str) -> Iterator[None]:
        try:
            yield
        except ParekitError as exc:
            if tmp in exc.message or (exc.note and tmp in exc.note):
                raise ParekitError(exc.message.replace(tmp, user),
                                   None if exc.note is None else exc.note.replace(tmp, user)) from exc
            raise
        except OSError as exc:
            raise ParekitError(f"cannot write '{user}': {exc.strerror or exc}") from exc

    def __enter__(self) -> Outputs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()
