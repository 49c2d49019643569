"""Every file attnzoo writes: whole or not at all, its folder checked before the work, a failure said in one line.

- :func:`write_atomically` writes a file to a hidden temporary file *in the target's folder*, flushes it to disk
  (``fsync``) and renames it over the target (``os.replace``, atomic on POSIX file systems). A kill, a full disk
  or an error at any moment leaves the old complete file or the new complete file, never a part of one, and
  never a 0-byte file that blocks the rerun. The temporary file is beside the target, not in ``$TMPDIR``: a
  rename across file systems is a copy, and a kill during a copy leaves a truncated file.
- :func:`staging_folder` does the same for several files that belong together (a weights directory, an ONNX
  model with its external data): they are written into a hidden folder beside their targets and moved in.
- Temporary files and folders are named after their writer (process id and host). :func:`remove_stale` deletes
  those of writers that no longer run on this machine, and any left untouched for ``STALE_AFTER_S`` (a writer
  on another machine), so a killed ``export`` or ``convert`` never makes its rerun refuse a folder as "not empty".
- :func:`check_writable` creates and removes a probe file where an output will go (and clears what dead writers
  left there), so a read-only folder, a full disk or a file where a folder should be is refused before minutes
  of training, predicting, evaluating or benchmarking, not after them.
- :class:`CannotWrite` is the one-line error for all of these, naming the path and the cause.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import socket
import stat
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from attnzoo.errors import AttnzooError

PARTIAL_SUFFIX = ".partial"
# A temporary file untouched this long belongs to a dead writer, even one on another machine.
STALE_AFTER_S = 600
_WRITER = re.compile(r"\.writer-(\d+)-([A-Za-z0-9_-]*)" + re.escape(PARTIAL_SUFFIX) + "$")
# Folders the tempfile module named for earlier attnzoo versions: no writer in the name, so only their age tells.
_UNNAMED_LEFTOVER = re.compile(r"^\.attnzoo-tmp-[A-Za-z0-9_]+$")

_REASONS = {
    errno.ENOSPC: "no space left on the device (the disk is full)",
    errno.EDQUOT: "the disk quota is exhausted",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "the operation is not permitted there",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "it is a folder, not a file",
    errno.ENOENT: "no such file or folder",
    errno.EFBIG: "the file is too large for the file system",
    errno.ENAMETOOLONG: "the name is too long",
}


class CannotWrite(AttnzooError):
    """An output could not be written (full disk, read-only folder, a file where a folder goes ...); the message
    names the path and the cause. What was there before is unchanged."""


# Errors that say the machine refused a write, whichever file it was: worth one line even without a path.
WRITE_REFUSED = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG)


def describe_os_error(err: OSError, path=None) -> str:
    """"'PATH': the cause (ENOSPC)" for an operating system error, in words a user can act on ("a write
    failed: ..." when the error names no path)."""
    path = path if path is not None else err.filename
    where = f"{str(path)!r}" if path is not None else "a write failed"
    return f"{where}: {os_error_reason(err)}"


def os_error_reason(err: OSError) -> str:
    """The cause of an operating system error in words, with its code: "the file system is read-only (EROFS)"."""
    code = errno.errorcode.get(err.errno or 0)
    reason = _REASONS.get(err.errno, (err.strerror or str(err) or type(err).__name__).rstrip(".").lower())
    return reason + (f" ({code})" if code else "")


def os_error_within(err: BaseException | None) -> OSError | None:
    """The :class:`OSError` behind ``err``: ``err`` itself, or the one a writer's RuntimeError was raised while
    handling (``torch.save`` reports a failed write as "unexpected pos" on its way out)."""
    if isinstance(err, OSError):
        return err
    if isinstance(err, RuntimeError) and isinstance(err.__context__, OSError):
        return err.__context__
    return None


def cannot_write(path, err: OSError) -> CannotWrite:
    where = f" (at {str(err.filename)!r})" if err.filename and str(err.filename) != str(path) else ""
    return CannotWrite(f"cannot write {describe_os_error(err, path)}{where}; nothing was changed there.")


@contextlib.contextmanager
def reporting_write_errors(path) -> Iterator[None]:
    """Turn an :class:`OSError` raised while writing ``path`` into :class:`CannotWrite`."""
    try:
        yield
    except Exception as err:
        cause = os_error_within(err)
        if cause is None or isinstance(err, AttnzooError):
            raise
        raise cannot_write(path, cause) from None


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())


def writer_tag() -> str:
    """``writer-<pid>-<host>``: what a temporary name says about the process that writes it."""
    return f"writer-{os.getpid()}-{_host()}"


def partial_path(target: Path) -> Path:
    """The hidden temporary file beside ``target`` that this process writes it to."""
    return target.with_name(f".{target.name}.{writer_tag()}{PARTIAL_SUFFIX}")


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (a crash right after it cannot bring the old name back)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot sync a directory; the rename itself is still atomic
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _keep_mode(partial: Path, target: Path) -> None:
    """Give the new file the mode of the one it replaces (a new file keeps the mode ``open`` gave it: 0666 less
    the umask)."""
    try:
        mode = stat.S_IMODE(target.stat().st_mode)
    except OSError:
        return
    os.chmod(partial, mode)


def _discard(path: Path) -> None:
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def write_atomically(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call ``write(temporary_path)``, then put that file at ``path`` in one rename: ``path`` is always its old
    complete content or the new one. Missing folders are made. An :class:`OSError` (full disk, read-only
    folder ...) becomes :class:`CannotWrite`; any other error of ``write`` propagates, with nothing left behind."""
    target = Path(path).expanduser()
    partial = partial_path(target)
    with reporting_write_errors(target):
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            write(partial)
            _fsync_file(partial)
            _keep_mode(partial, target)
            os.replace(partial, target)
        except BaseException:
            _discard(partial)
            raise
    fsync_dir(target.parent)
    return target


def write_text(path: str | os.PathLike, text: str) -> Path:
    """``path.write_text(text)`` (UTF-8), atomically."""
    return write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


@contextlib.contextmanager
def staging_folder(directory: str | os.PathLike) -> Iterator[Path]:
    """A hidden folder inside ``directory`` (which must exist), named after this writer and removed on exit.
    Write files into it, then :func:`move_into` them into ``directory``. Leftovers of dead writers in
    ``directory`` are removed first."""
    directory = Path(directory)
    remove_stale(directory)
    folder = directory / f".attnzoo-{secrets.token_hex(4)}.{writer_tag()}{PARTIAL_SUFFIX}"
    try:
        folder.mkdir()
    except OSError as err:
        raise cannot_write(directory, err) from None
    try:
        yield folder
    finally:
        _discard(folder)


def move_into(folder: Path, directory: Path, names=None) -> list[Path]:
    """Move the files ``names`` (default: all) of a :func:`staging_folder` into ``directory``, each synced to disk
    and given the mode of the file it replaces first, each move atomic. Returns the paths in ``directory``."""
    names = sorted(p.name for p in folder.iterdir()) if names is None else list(names)
    moved = []
    try:
        for name in names:
            _fsync_file(folder / name)
            _keep_mode(folder / name, directory / name)
        for name in names:
            os.replace(folder / name, directory / name)
            moved.append(directory / name)
    except OSError as err:
        raise cannot_write(directory, err) from None
    fsync_dir(directory)
    return moved


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale(path: Path, now: float | None = None) -> bool:
    """Whether ``path`` is a temporary file or folder of a writer that is gone: a process of this machine that
    no longer runs, or anything untouched for ``STALE_AFTER_S`` seconds."""
    match = _WRITER.search(path.name)
    if match is None and not _UNNAMED_LEFTOVER.match(path.name):
        return False
    try:
        if match is not None and match[2] == _host() and not _process_alive(int(match[1])):
            return True
        return (now or time.time()) - path.stat().st_mtime > STALE_AFTER_S
    except OSError:
        return False


def remove_stale(directory: str | os.PathLike) -> list[Path]:
    """Delete the temporary files and folders of dead writers (:func:`is_stale`) in ``directory``; return them."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed, now = [], time.time()
    try:
        candidates = [p for p in directory.iterdir() if p.name.startswith(".")]
    except OSError:
        return []
    for path in candidates:
        if is_stale(path, now):
            _discard(path)
            if not path.exists():
                removed.append(path)
    return removed


def removed_leftover(path: Path) -> str:
    """What to tell the user about a dead writer's file that was deleted."""
    return f"removed {str(path)!r}, the temporary file of a write that was killed."


def check_writable(path: str | os.PathLike, option: str, folder: bool = False) -> Path:
    """Refuse, before the work, an output that cannot be written: create and remove a probe file in the folder
    the output goes to (``path`` itself with ``folder=True``, else its parent), or in its nearest existing
    ancestor when that folder is still to be made. ``option`` names the output in the message (``--out``).
    Returns ``path``."""
    target = Path(path).expanduser()
    where = target if folder else target.parent
    existing = where
    while not existing.exists() and not existing.is_symlink() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise CannotWrite(f"cannot write {option} {str(target)!r}: {str(existing)!r} is a file, not a folder; "
                          "nothing was done.")
    if folder and target.exists() and not target.is_dir():
        raise CannotWrite(f"cannot write {option} {str(target)!r}: it is a file, and a folder goes there; "
                          "nothing was done.")
    for leftover in remove_stale(existing):  # what killed writers left there is not the user's, and takes room
        print(f"attnzoo: {removed_leftover(leftover)}", file=sys.stderr)
    probe = existing / f".attnzoo-probe.{writer_tag()}{PARTIAL_SUFFIX}"
    try:
        try:
            with open(probe, "wb") as handle:
                handle.write(b"\0" * 4096)
                handle.flush()
                os.fsync(handle.fileno())
        finally:
            with contextlib.suppress(OSError):
                probe.unlink()
    except OSError as err:
        cause = os_error_reason(err)
        if err.errno == errno.ENOENT:  # the folder exists, yet no file can be made in it: /proc, /sys
            cause = "no file can be created in this folder (ENOENT)"
        raise CannotWrite(f"cannot write {option} {str(target)!r}: {cause} at {str(existing)!r}; nothing was "
                          "done.") from None
    return target
