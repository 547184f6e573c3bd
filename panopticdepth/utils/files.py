"""Atomic file writes: a crash or a full disk never leaves a half-written output behind."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

# Temporary files are named `.<name>.<pid>.<random>.tmp<suffix>`: the pid tells a leftover of a
# killed process (removable) from a file another process is writing right now.
_TEMP_NAME = re.compile(r"^\..*\.(\d+)\.[A-Za-z0-9_]+\.tmp(\.[^.]*)?$")


def _shared_mode() -> int:
    """The permissions a plain open() gives a new file (0666 minus the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.stem}.{os.getpid()}.", suffix=f".tmp{path.suffix}"
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600 files, and some writers (safetensors) replace the file with their
        # own 0600 one: give the output the permissions a plain open() would, after the write.
        os.chmod(tmp_path, _shared_mode())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files `atomic_path` left in `folder` when its process was killed.

    Only files named by `atomic_path` whose process no longer runs are removed (not recursive).
    """
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        m = _TEMP_NAME.match(p.name)
        if m and p.is_file() and int(m.group(1)) != os.getpid() and not _process_alive(int(m.group(1))):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def _make_writable_dir(folder: Path, fail: str) -> None:
    """mkdir -p `folder` and write a probe file in it; PanopticDepthError(`fail (reason)`) otherwise."""
    from ..errors import PanopticDepthError

    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise PanopticDepthError(f"{fail} ({err.strerror})") from None


def ensure_output_dir(path: str | os.PathLike, what: str = "--output") -> Path:
    """Create folder `path` if needed and check that files can be written in it.

    Raises `PanopticDepthError` (one line, naming the path) when `path` is a file, cannot be
    created, or is not writable, instead of failing later in the middle of a run.
    """
    from ..errors import PanopticDepthError

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise PanopticDepthError(f"{path}: {what} must be a folder, but a file of that name exists")
    _make_writable_dir(path, f"{path}: cannot create or write into the {what} folder")
    return path


def ensure_output_file(path: str | os.PathLike, what: str) -> Path:
    """Check that file `path` can be written (creating its folder) before any long work starts."""
    from ..errors import PanopticDepthError

    path = Path(path)
    if path.is_dir():
        raise PanopticDepthError(f"{path}: {what} must name a file, but it is a folder")
    _make_writable_dir(path.parent, f"{path}: cannot create or write into the folder of the {what} file")
    return path
