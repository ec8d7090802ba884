"""Writes that a reader, or a run killed half-way, never sees half done.

- ``write_atomic(path, write)``: one whole file, written into a hidden sibling and renamed over it
  (the sibling removed when the write fails); ``write_text(path, text)`` the same for text, with any
  OS error as one OptTreeError.
- ``replace_dir(path, fill)``: one whole directory (a tree log; the model cache uses the same parts).
  Every writer of ``path`` holds ``path_lock(path)``, an ``fcntl.flock`` on the hidden sibling
  ``.NAME.lock``, so concurrent writers take turns. Under it the writer sweeps what writers killed
  earlier left behind (``sweep_stale``: ``.NAME.tmp-PID-*`` and ``.NAME.old-PID-*`` of processes
  that are gone), fills a fresh ``.NAME.tmp-PID-*`` (created with the umask's mode, not 0700),
  and swaps it in (``swap_into``) with one ``renameat2(RENAME_EXCHANGE)`` (Linux; ``renamex_np``
  with ``RENAME_SWAP`` on macOS): the path names the old complete directory until that call and
  the new complete one after it, so a SIGKILL at any point leaves a whole directory at the path.
  The old directory, now at the temporary name, is then deleted (a kill during that leaves a stale
  sibling for the next writer to sweep).
- ``save_tensors(tensors, path)``: a safetensors file with the umask's mode (the safetensors writer
  makes every file 0600, so a head exported for a serving engine run by another user, or a model
  cache shared between users, could not be read).
- ``open_files(path, names)``: what a reader uses, so it sees either the old or the new directory's
  files, never a mix: it opens the directory once and every file relative to it, and starts over
  if a writer swapped the directory and deleted the old one in between.

Where the filesystem cannot exchange two names (EINVAL, e.g. NFS) the swap is two renames (the old
directory aside to ``.NAME.old-PID-*``, the new one in), still under the lock, with a warning: a
reader may then find no directory for that instant, and a kill between the two leaves the old one
aside for the next writer to sweep. These guard against crashes and concurrent processes, not
power loss (nothing is fsynced).

The lock follows the classic pattern of lock files that are removed after use: the holder unlinks
``.NAME.lock`` before releasing it, and a process that got the lock on a file no longer linked at
that name tries again (compare ``filelock``'s ``UnixFileLock``, which keeps the file instead).
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import glob
import os
import secrets
import shutil
import stat
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import OptTreeError

_STALE_KINDS = ("tmp", "old")
_EXCHANGE = 2  # RENAME_EXCHANGE (Linux renameat2) and RENAME_SWAP (macOS renamex_np) are both 1 << 1
_AT_FDCWD = -100
_READ_ATTEMPTS = 50


def write_atomic(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """``write(tmp)`` into a hidden sibling of ``path``, then rename it over ``path``; returns ``path``.

    The sibling's name carries the process id, so processes writing the same file never share it,
    and the siblings of processes killed mid-write are swept first (``sweep_stale``).
    """
    path = Path(path)
    sweep_stale(path, own=False)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def check_file_destination(path: str | os.PathLike) -> Path:
    """``path`` as a file that can be written, checked before any work: not a directory, and its
    nearest existing parent a writable directory; otherwise a one-line OptTreeError."""
    path = Path(path)
    if path.is_dir():
        raise OptTreeError(f"{path} is a directory: give a file name in it, e.g. {path / 'out.json'}")
    parent = next(p for p in [path.parent, *path.parent.parents] if os.path.lexists(p))
    if not parent.is_dir():
        raise OptTreeError(f"cannot write {path}: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OptTreeError(f"cannot write {path}: {parent} is not writable")
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    """``text`` written atomically to the file ``path`` (its missing parents made); a directory at
    ``path``, a file where a parent should be or any OS error (read-only, full disk) is one
    OptTreeError naming the path, and leaves neither a half file nor a temporary one behind."""
    path = check_file_destination(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    except OSError as err:
        raise OptTreeError(f"cannot write {path}: {err.strerror or err}") from err


def umask_mode(mode: int = 0o666) -> int:
    """``mode`` less the process's umask: what ``open`` gives a new file."""
    umask = os.umask(0o022)
    os.umask(umask)
    return mode & ~umask


def save_tensors(tensors: dict, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> Path:
    """``safetensors.torch.save_file`` at ``path``, then the mode a new file gets under the umask."""
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata=metadata)
    os.chmod(path, umask_mode())
    return Path(path)


def lock_file(path: Path) -> Path:
    return path.with_name(f".{path.name}.lock")


def _same_file(fd: int, path: Path) -> bool:
    """Whether the open file ``fd`` is the one linked at ``path`` now."""
    try:
        linked = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (linked.st_dev, linked.st_ino)


@contextlib.contextmanager
def path_lock(path: str | os.PathLike, wait: bool = True) -> Iterator[None]:
    """Hold the lock every writer of ``path`` takes (``.NAME.lock`` beside it, removed after use).

    ``wait=False``: raise ``BlockingIOError`` at once when another process holds it
    (``lock_holder`` names it). The parent directory must exist."""
    lock = lock_file(Path(path))
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BaseException:
            os.close(fd)
            raise
        if _same_file(fd, lock):
            break
        os.close(fd)  # the holder before us removed this file: lock the one now at the name
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)
        os.close(fd)


def lock_holder(path: str | os.PathLike) -> str:
    """The process id written into ``path``'s lock file by its holder ("?" when unreadable)."""
    try:
        return lock_file(Path(path)).read_text().strip() or "?"
    except OSError:
        return "?"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _sibling_pid(sibling: Path, stem: str) -> int | None:
    """The process id in ``.NAME.KIND-PID-TOKEN`` (None for a name of another form)."""
    rest = sibling.name[len(stem):]
    pid = rest.split("-", 1)[0]
    return int(pid) if pid.isdigit() else None


def sweep_stale(path: str | os.PathLike, own: bool = True) -> list[Path]:
    """Delete the temporary siblings of ``path`` that writers killed earlier left behind: those of
    processes that are gone, and (``own``, for a caller holding ``path_lock(path)``) this process's."""
    path, swept = Path(path), []
    if not path.parent.is_dir():
        return swept
    for kind in _STALE_KINDS:
        stem = f".{path.name}.{kind}-"
        for sibling in path.parent.glob(f"{glob.escape(stem)}*"):
            pid = _sibling_pid(sibling, stem)
            if pid is not None and ((own and pid == os.getpid()) or (pid != os.getpid() and not _alive(pid))):
                _remove(sibling)
                swept.append(sibling)
    return swept


def _remove(path: Path) -> None:
    """Delete a file or a directory tree; one another process deleted first is no error."""
    with contextlib.suppress(FileNotFoundError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def _sibling(path: Path, kind: str) -> Path:
    return path.with_name(f".{path.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}")


def temp_dir(path: str | os.PathLike) -> Path:
    """A new empty sibling ``.NAME.tmp-PID-TOKEN`` of ``path``, with the umask's mode."""
    while True:
        tmp = _sibling(Path(path), "tmp")
        try:
            os.mkdir(tmp, 0o777)
            return tmp
        except FileExistsError:
            continue


def _exchange_call():
    """The C function that swaps two paths atomically, as ``f(a, b) -> 0 | -1``, or None."""
    libc = ctypes.CDLL(None, use_errno=True)  # the C library the interpreter runs on
    if sys.platform.startswith("linux") and hasattr(libc, "renameat2"):
        fn = libc.renameat2
        fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        return lambda a, b: fn(_AT_FDCWD, a, _AT_FDCWD, b, _EXCHANGE)
    if sys.platform == "darwin" and hasattr(libc, "renamex_np"):
        fn = libc.renamex_np
        fn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint]
        return lambda a, b: fn(a, b, _EXCHANGE)
    return None


_EXCHANGE_CALL = _exchange_call()


def exchange(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Swap the names ``a`` and ``b`` in one atomic step; False where the system or the filesystem
    cannot (then nothing changed)."""
    if _EXCHANGE_CALL is None:
        return False
    if _EXCHANGE_CALL(os.fsencode(a), os.fsencode(b)) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), os.fspath(b))


def swap_into(tmp: Path, path: Path) -> None:
    """Put the directory ``tmp`` at ``path`` and delete what was there; hold ``path_lock(path)``."""
    if not os.path.lexists(path):
        os.rename(tmp, path)
        return
    if exchange(tmp, path):
        _remove(tmp)  # the old directory, now at the temporary name
        return
    warnings.warn(f"{path.parent} cannot exchange two names atomically: {path.name} is replaced in two renames",
                  RuntimeWarning, stacklevel=2)
    old = _sibling(path, "old")
    os.rename(path, old)
    os.rename(tmp, path)
    _remove(old)


def replace_dir(path: str | os.PathLike, fill: Callable[[Path], None],
                check: Callable[[Path], None] | None = None) -> Path:
    """Write a whole directory at ``path``: ``fill(tmp)`` writes it into a fresh sibling, which is
    swapped in (see the module docstring). ``check(path)``, called holding the lock, may raise to
    refuse replacing what is at ``path``. The parent directory must exist. Returns ``path``."""
    path = Path(path)
    with path_lock(path):
        sweep_stale(path)
        if check is not None:
            check(path)
        tmp = temp_dir(path)
        try:
            fill(tmp)
            swap_into(tmp, path)
        finally:
            if os.path.lexists(tmp):
                _remove(tmp)
    return path


def _open_regular(name: str, dir_fd: int, path) -> int:
    """A descriptor of the regular file ``name`` in the directory ``dir_fd``; anything else (a
    directory, a device, a pipe) is an ``IsADirectoryError`` naming the file, not a descriptor whose
    reads fail with only its number."""
    fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK, dir_fd=dir_fd)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise IsADirectoryError(errno.EISDIR, "not a regular file", os.path.join(os.fspath(path), name))
    os.set_blocking(fd, True)
    return fd


def open_files(path: str | os.PathLike, names: tuple[str, ...]) -> dict[str, BinaryIO]:
    """The files ``names`` of the directory ``path``, opened for reading, all from one and the same
    directory even while writers replace it (``FileNotFoundError`` / ``NotADirectoryError`` when
    the directory or a file is not there, ``IsADirectoryError`` when a name is not a regular file).
    The caller closes them."""
    for _ in range(_READ_ATTEMPTS):
        dir_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        opened: dict[str, BinaryIO] = {}
        try:
            for name in names:
                opened[name] = os.fdopen(_open_regular(name, dir_fd, path), "rb")
            return opened
        except (FileNotFoundError, IsADirectoryError):
            for f in opened.values():
                f.close()
            if _same_file(dir_fd, Path(path)):
                raise
        finally:
            os.close(dir_fd)
    raise FileNotFoundError(errno.ENOENT, f"replaced {_READ_ATTEMPTS} times while being opened", os.fspath(path))
