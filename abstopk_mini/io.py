"""Files that are never half-written, locks that never go stale, hashes that say what was written.

* :func:`atomic_write` — ``write(tmp)`` into a temporary sibling, then one ``os.replace`` onto the
  target: a reader sees the old file or the new one, never a mix. The final file gets the
  permissions a plain ``open(path, "w")`` would give it (``0o666 & ~umask``), not the private
  ``0o600`` of a temporary file (safetensors also creates its files ``0o600``).
* :func:`flock` — a POSIX advisory lock on ``<path>`` (``fcntl.flock``), shared or exclusive. The
  lock file is removed when its last holder leaves; the protocol below keeps that safe.
* :func:`sha256_file`, :func:`sha256_tensors` — content hashes of a file / of tensors' raw bytes.
* :func:`runs_dir`, :func:`relative_to_runs` — where the content-addressed runs live
  (``$ABSTOPK_RUNS``, default ``./runs``), and a path as records name it, relative to that folder
  (:mod:`abstopk_mini.runs.store` keeps the runs there; the dashboards name their harvest so too).

Lock-file removal. A holder that finishes tries to upgrade to an exclusive lock without waiting;
if that succeeds nobody else holds the file, so it unlinks it (after checking that the path still
names the file it locked). A process that opened the file before the unlink and then acquired the
lock finds, by comparing inodes, that the path no longer names its file, and starts again with a
fresh open. So two holders never hold "the same" lock through two different files.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import threading
from pathlib import Path
from typing import Callable, Iterator

import torch

try:  # POSIX file locks; elsewhere nothing is locked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

__all__ = ["atomic_write", "flock", "sha256_file", "sha256_tensors", "default_file_mode", "TMP_SUFFIX", "runs_dir",
           "relative_to_runs"]

TMP_SUFFIX = ".tmp"
_umask_lock = threading.Lock()


def default_file_mode() -> int:
    """The mode a new file gets from ``open(path, "w")``: ``0o666 & ~umask``."""
    try:  # Linux >= 4.7 reports the umask without changing it
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _umask_lock:  # elsewhere: read it by setting it (and put it back at once)
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


def tmp_path_for(target: str | os.PathLike) -> Path:
    """A fresh temporary name next to ``target``: ``.<name>.<random>.tmp`` (hidden)."""
    target = Path(target)
    return target.with_name(f".{target.name}.{secrets.token_hex(4)}{TMP_SUFFIX}")


def atomic_write(target: str | os.PathLike, write: Callable[[str], object]) -> Path:
    """Call ``write(tmp_path)``, then rename the temporary file onto ``target``.

    On any exception (KeyboardInterrupt included) the temporary file is removed and ``target``
    is left as it was. The new file has mode ``0o666 & ~umask``. Returns ``target``.
    """
    target = Path(target)
    while True:
        tmp = tmp_path_for(target)
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            break
        except FileExistsError:  # pragma: no cover - 32 random bits collided
            continue
    try:
        write(str(tmp))
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
    return target


def remove_stale_tmp(directory: str | os.PathLike, *names: str) -> list[Path]:
    """Delete the temporary files :func:`atomic_write` left for ``directory/<name>`` (each of
    ``names``) when a process was killed mid-write (``.<name>.*.tmp``); call it only while no one
    else writes those files. Returns the removed paths."""
    directory = Path(directory)
    removed = []
    if directory.is_dir():
        for name in names:
            for p in directory.glob(f".{name}.*{TMP_SUFFIX}"):
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
                    removed.append(p)
    return removed


@contextlib.contextmanager
def flock(lock_path: str | os.PathLike, exclusive: bool) -> Iterator[None]:
    """Hold a shared (``exclusive=False``) or exclusive lock on ``lock_path`` for the ``with`` block.

    Waits for conflicting holders. The file is created if needed (its folder too) and removed
    when the last holder leaves (see the module docstring); a symbolic link there is refused.

    A shared lock whose file cannot be created (a read-only disk, a folder this user may not write)
    is taken on the existing file opened read-only (flock needs no write access), or, when there is
    no such file, skipped (see :func:`_open_lock`). An exclusive lock still raises: its holder is
    about to write.
    """
    lock_path = Path(lock_path)
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        if exclusive:
            raise
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    while True:
        fd = _open_lock(lock_path, exclusive)
        if fd is None:
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            if _names(lock_path, fd):
                break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # the file was unlinked by its last holder while we waited: start again
    try:
        yield
    finally:
        try:
            try:  # upgrade without waiting: success means no one else holds the file
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pass
            else:
                if _names(lock_path, fd):
                    with contextlib.suppress(OSError):  # gone already, or a folder this reader may not write
                        os.unlink(lock_path)
        finally:
            os.close(fd)  # closing releases the lock


_READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)  # open a lock file, never the target of a link


def _open_lock(lock_path: Path, exclusive: bool) -> int | None:
    """The lock file opened for :func:`flock`, or None for a shared lock that cannot exist.

    A reader that may not create the lock file (EROFS: the file system is read-only; EACCES/EPERM:
    the folder is not writable for this user) opens an existing one read-only and locks it as every
    reader does: a writer holding it excludes this reader. With no lock file there, the reader goes
    on without a lock rather than refusing to read: on a read-only file system nobody can change the
    files, so there is nothing to exclude (the correct choice); in a folder only others may write,
    a writer that starts later is not excluded — it cannot be without write access, and failing would
    make a harvest on shared read-only storage unusable (the shards are still checked against their
    hashes before the first training on them). A writer (exclusive) always needs the file: the error
    is raised.

    Never through a symbolic link (a planted or dangling link would make the lock create or lock its
    target): a link is a ValueError saying what to remove.
    """
    try:
        try:
            return os.open(lock_path, os.O_RDWR | os.O_CREAT | _NOFOLLOW, 0o666)
        except OSError as err:
            if exclusive or err.errno not in _READ_ONLY:
                raise
        try:
            return os.open(lock_path, os.O_RDONLY | _NOFOLLOW)
        except FileNotFoundError:
            return None
        except OSError as err:
            if err.errno in _READ_ONLY:
                return None
            raise
    except OSError as err:
        if lock_path.is_symlink():
            raise ValueError(f"lock file {str(lock_path)!r} is a symbolic link (to {os.readlink(lock_path)!r}); a lock "
                             f"must be a plain file — remove the link (rm {str(lock_path)!r}) and run again") from err
        raise



class Claim:
    """An exclusive lock taken without waiting (:meth:`take`): several workers share a list of
    jobs, each does the jobs whose claim it gets. ``release`` (or the process ending) frees it."""

    def __init__(self, lock_path: str | os.PathLike):
        self.path = Path(lock_path)
        self.fd: int | None = None

    def take(self) -> bool:
        """True if this process now holds the claim; False if another process does."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if fcntl is None:  # pragma: no cover - Windows: one worker
            return True
        fd = _open_lock(self.path, exclusive=True)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        if not _names(self.path, fd):  # removed by its last holder meanwhile: it is free, try again
            os.close(fd)
            return self.take()
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            os.close(self.fd)
            self.fd = None


def _names(path: Path, fd: int) -> bool:
    """Whether ``path`` still names the open file ``fd``."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes (read in chunks)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def sha256_tensors(*tensors: torch.Tensor) -> str:
    """Hex sha256 of the tensors' raw bytes, in order (dtype and layout as stored; CPU tensors)."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def runs_dir(root: str | os.PathLike | None = None) -> Path:
    """Where pipeline artifacts go: ``root``, else ``$ABSTOPK_RUNS`` (empty counts as unset, not as ``.``), else ``./runs``."""
    return Path(root if root is not None else os.environ.get("ABSTOPK_RUNS", "").strip() or "runs")


def relative_to_runs(path, root: str | os.PathLike | None = None) -> str:
    """``path`` relative to :func:`runs_dir` (``"saes/topk-4096-k32-ca08a90bb5"``), as records store
    it: a record must not name the folders of the machine that wrote it. A path outside the runs
    directory is stored by its name alone."""
    try:
        return Path(path).resolve().relative_to(runs_dir(root).resolve()).as_posix()
    except ValueError:
        return Path(path).name
