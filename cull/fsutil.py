"""Crash-safe file writing shared by every writer (reports, XMP sidecars, moves)."""

from __future__ import annotations

import errno
import hashlib
import os
import re
import socket
import stat
import tempfile
from pathlib import Path


def fsync_dir(folder: Path) -> None:
    """Make a rename or unlink in ``folder`` durable (best effort: some file systems refuse)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def file_sha256(path: Path) -> str:
    """The hex sha256 of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def current_umask() -> int:
    """The process umask (read by setting and restoring it: there is no read-only call)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


NAME_MAX = 255  # bytes in one file name (ext4, APFS, NTFS, SMB)
TEMP_SUFFIX_ROOM = len("XXXXXXXX.cull-tmp") + 11  # mkstemp's 8 characters, the suffix, an extension of <= 10


def host_tag() -> str:
    """Where this process's PID means something, as it goes into temp names (letters, digits and '-',
    at most 32): the host name, readable but cut short, and a hash of the full name and the PID
    namespace, so machines whose names read alike (``müller-pc`` / ``möller-pc``, long names sharing a
    prefix) and containers sharing a host name but not their processes get different tags."""
    name = socket.gethostname()
    try:
        namespace = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        namespace = ""
    digest = hashlib.sha1(f"{name}\0{namespace}".encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"{re.sub(r'[^A-Za-z0-9-]', '-', name)[:20] or 'host'}-{digest}"


FileKey = tuple[int, int]  # (size, mtime_ns): which version of a file a score or a plan was made for


def file_key(path: Path) -> FileKey | None:
    """(size, mtime_ns) of ``path``, or None when it cannot be read."""
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_size, info.st_mtime_ns


def absolute(path: Path | str) -> Path:
    """``path`` made absolute the way the kernel reads it: a ``..`` steps out of where a symbolic link
    before it leads (os.path.abspath drops ``link/..`` as text, naming another file), while the last
    component stays as it is (a link there is still a link)."""
    parts = Path(path).parts
    if ".." not in parts:
        return Path(os.path.abspath(path))
    last = len(parts) - 1 - parts[::-1].index("..")
    return Path(os.path.realpath(Path(*parts[: last + 1])), *parts[last + 1 :])


def temp_prefix(path: Path) -> str:
    """The prefix of cull's temporary files beside ``path``: ``.NAME@HOST.PID-`` (mkstemp adds 8
    random characters and the suffix). The host and process id let a later run tell a temp file left
    by a killed run from one a concurrent run is still writing, here or on another machine sharing the
    folder. NAME is shortened (whole UTF-8 characters) so the temp name fits where the file's does."""
    tag = f"@{host_tag()}.{os.getpid()}-"
    room = NAME_MAX - TEMP_SUFFIX_ROOM - 1 - len(tag.encode())
    name = path.name.encode("utf-8", "surrogateescape")[:room].decode("utf-8", "ignore")
    return f".{name}{tag}"


def file_type(mode: int) -> str:
    """A word for what a non-regular file is (from ``st_mode``)."""
    for test, name in ((stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"), (stat.S_ISDIR, "folder")):
        if test(mode):
            return name
    return "special file"


def write_through(path: Path) -> Path:
    """The file that a write to ``path`` must replace: a symbolic link is followed to the file it
    names, as an editor writing through the link would, so the link stays a link and its target gets
    the new bytes (a rename onto the link itself would turn it into a detached copy).

    Raises FileNotFoundError for a link to nothing (there is no file to write through to), OSError
    for a link loop or a folder on the way that cannot be searched, and IsADirectoryError / OSError
    when what ``path`` names is a folder, a FIFO, a device or a socket: a rename would put a plain
    file in its place (``/dev/null`` replaced when run as root)."""
    path = Path(path)
    if path.is_symlink():
        try:
            path = Path(os.path.realpath(path, strict=True))
        except FileNotFoundError:
            raise FileNotFoundError(errno.ENOENT, "symbolic link to a missing file; not modified", str(path)) from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise OSError(errno.ELOOP, "symbolic link loop; not modified", str(path)) from None
            raise
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return path  # a new file
    if stat.S_ISREG(mode):
        return path
    error = IsADirectoryError if stat.S_ISDIR(mode) else OSError
    raise error(errno.EISDIR if stat.S_ISDIR(mode) else errno.EINVAL,
                f"not a regular file ({file_type(mode)}); not replaced", str(path))


def atomic_write_bytes(path: Path, data: bytes, like: Path | None = None) -> None:
    """Temp file in the same folder, fsync, rename; permissions copied from ``like`` (or ``path``);
    a new file gets the mode an ordinary ``open()`` would give it (0o666 less the umask), not
    the 0600 of the temporary file.  A symbolic link is written through (write_through)."""
    path = write_through(path)
    reference = like if like is not None else path
    mode = reference.stat().st_mode & 0o7777 if reference.exists() else 0o666 & ~current_umask()
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=".cull-tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        unlink_quietly(Path(tmp))
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
