"""Filesystem safety helpers shared by the commands.

- `lock_dir`: one defect-gen run per output folder (SAMPLE_DIR, a training WORK_DIR). The
  lock is an advisory `fcntl.flock` on a hidden file, taken without blocking, so a second
  run is refused at once with one line instead of interleaving its files with the first's.
  The kernel drops the lock when the process dies (even by kill -9): no stale locks.
- `path_inside` / `removable_file`: paths built from data (manifest rows, class names) must
  stay inside the folder they belong to.
- `atomic_write_text` / `atomic_write_json`: temp file + fsync + rename, so a reader never
  sees half a file; `json_safe` turns NaN/Inf into null (JSON has no NaN); `fsync_dir` makes
  a rename durable; `file_sha256` hashes a file (checkpoints, exports).
- `output_error`, `check_writable`: an output that cannot be written, as one line (checked
  before any work where possible).
- These take `param`, the name of the parameter that chose the path (`sample_dir`, `out`): the
  message names it as a `{param}` field (`DefectGenError.with_params`), which a command shows
  as its flag.
- `bound_remote_access`, `remote_error_line`: gs:// / az:// requests give up after a few tries.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import stat
import sys
from typing import Iterator

from defect_gen.errors import DefectGenError

LOCK_NAME = ".defect-gen.lock"

# OSErrors that the machine or the user's paths cause (not bugs): shown as one line.
ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR,
                      errno.EISDIR, errno.EEXIST, errno.ENAMETOOLONG, errno.EIO, errno.EFBIG}


def output_error(path: str, exc: OSError, param: str = "", verb: str = "write") -> DefectGenError:
    """One line for an OSError met while writing `path` (an output of the run); `param` names the
    parameter that chose it (a command shows its flag), `verb` says what was being done where
    that is not known for sure."""
    where = exc.filename if isinstance(getattr(exc, "filename", None), str) else path
    reason = exc.strerror or str(exc) or type(exc).__name__
    hint = {errno.ENOSPC: "free some space", errno.EDQUOT: "free some space",
            errno.EROFS: "choose a writable folder", errno.EACCES: "choose a writable folder",
            errno.EPERM: "choose a writable folder",
            errno.ENOTDIR: "a file is in the way of a folder: remove it or choose another path",
            errno.EEXIST: "a file is in the way of a folder: remove it or choose another path",
            errno.EISDIR: "a folder is in the way of a file"}.get(exc.errno, "check the output path")
    chooser = f" ({{{param}}})" if param else ""
    return DefectGenError.with_params(f"cannot {{verb}} {{target}}{chooser}: {{reason}}; {{fix}}", verb=verb,
                                      target=where, reason=reason, fix=hint)


def make_output_dir(path: str, param: str) -> None:
    """os.makedirs for an output folder chosen by parameter `param`; a read-only parent or a file
    in the way is one line."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise output_error(path, exc, param) from None
    if not os.path.isdir(path):
        raise DefectGenError.with_params(f"{{{param}}} {{target}}: a file is in the way; expected a folder (or a "
                                         f"path to create one)", target=path)


@contextlib.contextmanager
def lock_dir(directory: str, what: str, param: str) -> Iterator[None]:
    """Hold an exclusive, non-blocking lock on `directory` (created if missing, chosen by the
    parameter `param`) while inside; `what` names the run, as a refused second one is told."""
    import fcntl  # POSIX only; imported here so the module imports everywhere

    make_output_dir(directory, param)
    path = os.path.join(directory, LOCK_NAME)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise output_error(path, exc, param) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise DefectGenError.with_params(
                f"{{{param}}} {{target}} is in use by another defect-gen {{run}} (pid {{holder}}); wait for it "
                f"to finish or choose another {{{param}}}", target=directory, run=what, holder=holder) from None
        except OSError as exc:  # some network filesystems have no flock: run, but say it is unguarded
            print(f"warning: cannot lock {directory} ({exc.strerror}); make sure no other defect-gen run uses it",
                  file=sys.stderr)
        else:
            # The holder's pid, only so that the refusal above can name it.
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the flock


def path_inside(root: str, rel: str, what: str) -> str:
    """os.path.join(root, rel), refused (one line) unless it resolves inside `root`.

    Symlinks are resolved on both sides, so neither `..` nor an absolute path nor a link
    can point a write or a delete elsewhere.
    """
    base = os.path.realpath(root)
    full = os.path.realpath(os.path.join(root, rel))
    if full == base or os.path.commonpath([base, full]) != base:
        raise DefectGenError(f"{what} {rel!r} resolves to {full}, outside {root}; refusing to touch it")
    return os.path.join(root, rel)


def removable_file(root: str, rel) -> str | None:
    """The path of `rel` if it is a regular file (not a link, FIFO, folder) inside `root`, else None."""
    if not isinstance(rel, str) or not rel or "\x00" in rel:
        return None
    path = os.path.join(root, rel)
    # Resolve the folder, not the last component: a link is judged as the link itself.
    parent = os.path.realpath(os.path.dirname(path))
    base = os.path.realpath(root)
    if os.path.commonpath([base, parent]) != base:
        return None
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return None
    return path if stat.S_ISREG(mode) else None


def atomic_write_text(path: str, text: str) -> None:
    """Write `text` to a temp file beside `path`, fsync, rename: `path` is old or new, never partial."""
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.tmp{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if isinstance(exc, OSError):
            raise output_error(path, exc) from None
        raise


def file_sha256(path: str, chunk: int = 1 << 20) -> str:
    """The SHA-256 of a file, read in 1 MiB pieces (checkpoints run to gigabytes)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for piece in iter(lambda: f.read(chunk), b""):
            digest.update(piece)
    return digest.hexdigest()


def fsync_dir(path: str) -> None:
    """fsync a folder, so that a rename inside it survives a power cut; best effort (some
    filesystems refuse to open or fsync a folder: nothing more can be done there)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def json_safe(obj):
    """`obj` with every NaN/Inf float replaced by None, so it can be written as strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def atomic_write_json(path: str, obj, indent: int | None = 1) -> None:
    atomic_write_text(path, json.dumps(json_safe(obj), indent=indent, allow_nan=False) + "\n")


# blobfile retries a failed request forever by default: without network a gs:// data.root
# would print retry notes (or nothing) and never end. A few tries with timeouts, then a
# blobfile error that `cli.main` turns into one line.
REMOTE_TRIES = 3


def bound_remote_access() -> None:
    import blobfile as bf

    bf.configure(retry_limit=REMOTE_TRIES, connect_timeout=10, read_timeout=30, log_callback=lambda message: None)


def remote_error_line(exc: BaseException) -> str | None:
    """One line for an error raised by blobfile (gs://, az://), None for any other error."""
    if not type(exc).__module__.startswith("blobfile"):
        return None
    text = " ".join(str(exc).split())
    reason = text.split("message=", 1)[-1].split(", request=")[0]
    return (f"remote storage request failed after {REMOTE_TRIES} tries: {reason[:200]}; check the URL "
            f"(data.root), credentials and network")


def check_writable(path: str, param: str) -> None:
    """Refuse, in one line and before any work, an output path (chosen by parameter `param`) that
    cannot be created: a file where a folder must go, or a read-only place. Nothing is created here."""
    probe = os.path.abspath(path)
    while not os.path.lexists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            return
        probe = parent
    if probe != os.path.abspath(path) and not os.path.isdir(probe):
        raise DefectGenError.with_params(f"{{{param}}} {{target}}: {{probe}} is a file, in the way of a folder; "
                                         f"remove it or choose another path", target=path, probe=probe)
    if os.path.isdir(probe) and not os.access(probe, os.W_OK | os.X_OK):
        raise DefectGenError.with_params(f"{{{param}}} {{target}}: {{probe}} is not writable (read-only or no "
                                         f"permission); choose a writable folder", target=path, probe=probe)
