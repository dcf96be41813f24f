"""Atomic file writes, crash-safe artefact directories, and gzip-transparent opening.

An artefact directory (an index, a model) is written by `atomic_dir(path, kind)` and carries
rankloop's own manifest, `rankloop.json`: the artefact kind, its format version, and every
file's size and SHA-256. The manifest is what makes three promises checkable:

* a save replaces only a rankloop artefact (never a folder of someone's files);
* a save killed at any instant leaves the old or the new artefact loadable under its name
  (the next save or load finishes or undoes the swap, and removes dead saves' leftovers);
* `open_artifact` on load catches truncated, missing and damaged files.

`atomic_dir(path)` without a kind writes a plain folder (no manifest) with the same
crash-safe swap; it replaces a non-empty `path` only with `overwrite=True`.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from rankloop.errors import IndexCorruptError, RankloopError

MANIFEST = "rankloop.json"
_MANIFEST_FORMAT = 1
# A save of NAME works in ".NAME.tmp-PID-XXXX" and moves the previous NAME to ".NAME.old-PID-XXXX".
_LEFTOVER = re.compile(r"(tmp|old)-(\d+)-\w+")
# What rankloop wrote before manifests existed: ".NAME.old.PID" (recognised via `legacy`).
_OLD_STYLE = re.compile(r"old\.(\d+)")

Legacy = Callable[[Path], bool]
"""Recognises an artefact of the same kind saved before manifests (by its own metadata file)."""


def open_text(path: str | os.PathLike[str], mode: str = "rt") -> IO[str]:
    """Open a text file for reading, transparently gunzipping `*.gz`."""
    path = Path(path)
    if path.suffix == ".gz":
        return gzip.open(path, mode, encoding="utf-8")  # type: ignore[return-value]
    return open(path, mode, encoding="utf-8")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "w") -> Iterator[IO]:
    """Write to a temporary file beside `path`, then rename it over `path`.

    An exception (or a kill) before the rename leaves any previous file intact.
    Text mode writes UTF-8; a `.gz` target is gzip-compressed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    binary = "b" in mode
    try:
        if path.suffix == ".gz":
            fh: IO = gzip.open(tmp, "wb" if binary else "wt", encoding=None if binary else "utf-8")
        else:
            fh = open(tmp, "wb" if binary else "w", encoding=None if binary else "utf-8")
        with fh:
            yield fh
            fh.flush()
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def file_sha256(path: str | os.PathLike[str], *, fsync: bool = False) -> str:
    """Hex SHA-256 of a file's bytes (integrity checks, model fingerprints); `fsync` also
    flushes the file to disk while it is open anyway."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        buf = bytearray(min(max(os.fstat(fh.fileno()).st_size, 1), 1 << 22))  # 4 MiB at most
        view = memoryview(buf)
        while n := fh.readinto(buf):
            h.update(view[:n])
        if fsync:
            os.fsync(fh.fileno())
    return h.hexdigest()


def json_field(path: str | os.PathLike[str], key: str) -> Any:
    """`key` of the JSON object in file `path`, or None when the file is missing, unreadable or
    not an object: how `legacy` recognisers read the metadata of pre-manifest artefacts."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc.get(key) if isinstance(doc, dict) else None


# -- the manifest --------------------------------------------------------------------------------
def _digest(body: dict[str, Any]) -> str:
    """SHA-256 of the manifest's content, so a damaged manifest is caught like any other file."""
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _fsync_dir(directory: Path) -> None:
    """Make a folder's entries (new files, renames) durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _seal(directory: Path, kind: str | None, version: int) -> None:
    """fsync every file and folder under `directory`; with a `kind`, hash the files on the way
    and write the manifest last (itself fsynced): a directory with a valid manifest is
    complete on disk."""
    files: dict[str, dict[str, Any]] = {}
    for root, _dirs, names in os.walk(directory, topdown=False):
        for name in names:
            path = Path(root, name)
            if path.is_symlink():
                continue
            if kind is None:
                with open(path, "rb") as fh:
                    os.fsync(fh.fileno())
            else:
                rel = path.relative_to(directory).as_posix()
                files[rel] = {"bytes": path.stat().st_size, "sha256": file_sha256(path, fsync=True)}
        if root != str(directory):  # `directory` itself is fsynced last
            _fsync_dir(Path(root))
    if kind is None:
        _fsync_dir(directory)
        return
    body = {"format": _MANIFEST_FORMAT, "kind": kind, "version": version, "files": files}
    part = directory / f"{MANIFEST}.part"
    with open(part, "w", encoding="utf-8") as fh:
        json.dump({**body, "sha256": _digest(body)}, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(part, directory / MANIFEST)
    _fsync_dir(directory)


def read_manifest(directory: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The manifest of an artefact directory; None if it has none, `IndexCorruptError` if it is
    damaged (its own checksum, structure or a file name that leaves the directory)."""
    path = Path(directory) / MANIFEST
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise IndexCorruptError(f"{path}: unreadable ({type(e).__name__}: {e})") from None
    if not isinstance(doc, dict) or doc.pop("sha256", None) != _digest(doc):
        raise IndexCorruptError(f"{path}: checksum mismatch (the manifest is damaged)")
    files = doc.get("files")
    ok = (
        doc.get("format") == _MANIFEST_FORMAT
        and isinstance(doc.get("kind"), str)
        and isinstance(doc.get("version"), int)
        and isinstance(files, dict)
        and all(
            isinstance(rec, dict)
            and isinstance(rec.get("bytes"), int)
            and isinstance(rec.get("sha256"), str)
            and not Path(rel).is_absolute()
            and ".." not in Path(rel).parts
            for rel, rec in files.items()
        )
    )
    if not ok:
        raise IndexCorruptError(f"{path}: not a rankloop manifest of format {_MANIFEST_FORMAT}")
    return doc


def _check_files(directory: Path, manifest: dict[str, Any], verify: bool) -> None:
    """Every listed file exists with its recorded size and, when `verify`, its SHA-256."""
    for rel, rec in manifest["files"].items():
        path = directory / rel
        if not path.is_file():
            raise IndexCorruptError(f"{path}: missing (listed in {directory / MANIFEST})")
        size = path.stat().st_size
        if size != rec["bytes"]:
            raise IndexCorruptError(
                f"{path}: {size} bytes, expected {rec['bytes']} (truncated or overwritten)"
            )
        if verify and file_sha256(path) != rec["sha256"]:
            raise IndexCorruptError(
                f"{path}: SHA-256 does not match {MANIFEST} (the file is damaged)"
            )


# -- leftovers of interrupted saves --------------------------------------------------------------
def _alive(pid: int) -> bool:
    """Whether process `pid` exists (this process counts: its own saves are never touched)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True
    return True


def _dead_leftovers(path: Path, legacy: Legacy | None) -> list[tuple[Path, str]]:
    """(directory, "tmp" | "old") left beside `path` by saves whose process has died."""
    prefix = f".{path.name}."
    found = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(path.parent):
            if not entry.name.startswith(prefix) or not entry.is_dir(follow_symlinks=False):
                continue
            rest = entry.name[len(prefix) :]
            new, old = _LEFTOVER.fullmatch(rest), _OLD_STYLE.fullmatch(rest)
            d = Path(entry.path)
            if new and not _alive(int(new[2])):
                found.append((d, new[1]))
            elif old and legacy is not None and not _alive(int(old[1])) and legacy(d):
                found.append((d, "old"))
    return found


def _complete(directory: Path, what: str, legacy: Legacy | None) -> bool:
    """A leftover that can stand in for the target: a valid manifest whose files all have their
    recorded sizes, or a moved-aside previous copy (it was the complete target) without one:
    a pre-manifest artefact `legacy` recognises, or any folder of a plain `atomic_dir`."""
    try:
        manifest = read_manifest(directory)
        if manifest is not None:
            _check_files(directory, manifest, verify=False)
            return True
    except IndexCorruptError:
        return False
    return what == "old" and (legacy is None or legacy(directory))


def recover(path: str | os.PathLike[str], legacy: Legacy | None = None) -> None:
    """Restore a missing `path` from a dead save's complete copy (the new one first), then
    delete every leftover of dead saves of `path` (never while `path` is still missing).

    `atomic_dir` and `open_artifact` call it; readers that look at a directory before
    knowing its kind can call it first.
    """
    path = Path(path)
    dead = _dead_leftovers(path, legacy)
    if not dead:
        return
    if not os.path.lexists(path):
        complete = [(d, what) for d, what in dead if _complete(d, what, legacy)]
        if complete:
            best, what = max(complete, key=lambda c: (c[1] == "tmp", c[0].stat().st_mtime))
            with contextlib.suppress(OSError):  # e.g. another process restored it first
                os.rename(best, path)
                _fsync_dir(path.parent)
                copy = "new copy its save had finished" if what == "tmp" else "previous copy"
                warnings.warn(
                    f"{path} was missing after an interrupted save; restored the {copy} "
                    f"from {best.name}",
                    stacklevel=2,
                )
    if not os.path.lexists(path):
        return
    for d, _ in dead:
        shutil.rmtree(d, ignore_errors=True)


# -- saving and opening artefacts ----------------------------------------------------------------
def _check_replaceable(path: Path, kind: str, overwrite: bool, legacy: Legacy | None) -> None:
    """Raise unless `path` is absent, an empty folder, or a rankloop artefact a save of `kind`
    may replace (same kind, a pre-manifest one `legacy` recognises, or any kind if `overwrite`)."""
    if not os.path.lexists(path):
        return
    if path.is_symlink() or not path.is_dir():
        what = "a symbolic link" if path.is_symlink() else "a file"
        raise RankloopError(f"{path} is {what}, not a rankloop {kind}; refusing to replace it")
    entries = sorted(os.listdir(path))
    if not entries:
        return
    try:
        manifest = read_manifest(path)
    except IndexCorruptError:
        manifest = {"kind": f"artefact with a damaged {MANIFEST}"}
    if manifest is None:
        if legacy is not None and legacy(path):
            return
        shown = ", ".join(entries[:5]) + (
            f" and {len(entries) - 5} more" if len(entries) > 5 else ""
        )
        raise RankloopError(
            f"{path} is not a rankloop artefact (no {MANIFEST}) and is not empty: it holds "
            f"{shown}. Refusing to delete it, even with overwrite=True; save elsewhere, or "
            "remove that folder yourself"
        )
    if manifest["kind"] != kind and not overwrite:
        raise RankloopError(
            f"{path} holds a rankloop {manifest['kind']}, not a {kind}; pass overwrite=True to "
            "replace it"
        )


def _check_target(path: Path, kind: str | None, overwrite: bool, legacy: Legacy | None) -> None:
    """Artefacts: `_check_replaceable`. Plain folders: a non-empty one is replaced only with
    `overwrite=True` (the caller owns that folder, e.g. a download cache)."""
    if kind is not None:
        _check_replaceable(path, kind, overwrite, legacy)
    elif not overwrite and os.path.lexists(path) and (not path.is_dir() or any(path.iterdir())):
        raise RankloopError(
            f"{path} already exists and is not empty; refusing to replace it (choose another "
            "path, remove it yourself, or pass overwrite=True)"
        )


def _swap(tmp: Path, path: Path) -> None:
    """Move the previous `path` aside, the complete `tmp` into place, then drop the previous
    copy. A kill between the renames is repaired by the next `recover`."""
    pid_and_suffix = tmp.name[len(f".{path.name}.tmp-") :]
    old = path.parent / f".{path.name}.old-{pid_and_suffix}"
    moved = os.path.lexists(path)
    if moved:
        os.rename(path, old)
    try:
        os.rename(tmp, path)
    except BaseException:
        if moved:
            os.rename(old, path)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(path.parent)
    if moved:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(
    path: str | os.PathLike[str],
    kind: str | None = None,
    *,
    version: int = 1,
    overwrite: bool = False,
    legacy: Legacy | None = None,
) -> Iterator[Path]:
    """Yield a fresh temporary directory; on success it replaces `path` as a whole.

    With a `kind`, the directory gets a manifest (`kind`, `version`, every file's size and
    SHA-256), and a non-empty `path` is replaced only if it is a rankloop artefact of the same
    `kind` (or of another kind with `overwrite=True`): anything else raises `RankloopError`
    before any work is done, and again before the swap. `legacy` recognises artefacts of this
    kind saved before manifests existed. Without a `kind` (plain folders: datasets, models
    saved by other libraries) no manifest is written, and a non-empty `path` is replaced only
    with `overwrite=True`.

    Files and folders are fsynced before the swap, and a save killed at any instant leaves
    the old or the new directory under `path` (the next save, or `open_artifact`, repairs it).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover(path, legacy)
    _check_target(path, kind, overwrite, legacy)
    prefix = f".{path.name}.tmp-{os.getpid()}-"
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=path.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; give the folder normal permissions
        yield tmp
        _seal(tmp, kind, version)
        _check_target(path, kind, overwrite, legacy)  # the target may have changed meanwhile
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _swap(tmp, path)


def open_artifact(
    path: str | os.PathLike[str],
    kind: str,
    *,
    version: int = 1,
    verify: bool = True,
    legacy: Legacy | None = None,
) -> dict[str, Any] | None:
    """Check an artefact directory before a load; returns its manifest.

    First a missing `path` is restored from a killed save's complete copy (with a warning) and
    dead saves' leftovers are deleted. Then every file the manifest lists must exist with its
    recorded size and, when `verify` (the default), SHA-256; else `IndexCorruptError` names the
    file. Returns None when `path` is missing or has no manifest (saved before manifests, or
    not an artefact): the caller's own checks of its metadata then apply.
    """
    path = Path(path)
    recover(path, legacy)
    if not path.is_dir():
        return None
    manifest = read_manifest(path)
    if manifest is None:
        return None
    if manifest["kind"] != kind:
        raise RankloopError(f"{path} holds a rankloop {manifest['kind']}, not a {kind}")
    if manifest["version"] > version:
        raise RankloopError(
            f"{path}: {kind} format version {manifest['version']} is newer than this rankloop "
            f"reads ({version}); upgrade rankloop"
        )
    _check_files(path, manifest, verify)
    return manifest
