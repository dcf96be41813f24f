"""Dataset registry: names -> publisher URLs, checksums, licence notes and on-disk layout.

Where a dataset is looked for, in order:

1. `$RANKLOOP_DATA/<local>` - a local mirror (layout as in ../shared/data); it wins over any download.
2. `$RANKLOOP_CACHE/<local>` (default `~/.cache/rankloop/<local>`, `rankloop._runtime.cache_dir`)
   - the per-user cache.
3. A download into the cache with pooch (checksum-verified, HTTP timeout, progress bar); archives
   are unpacked with `pooch.Unzip` / `pooch.Untar`. A file without a known checksum downloads
   with an `UnverifiedDownloadWarning`.

With no local copy and no working download, `fetch` raises `DataNotAvailableError` naming the
dataset, every URL tried and the variables to set; a dead host fails within `timeout` seconds.
The entries live in `manifest.yaml` next to this module.
"""

from __future__ import annotations

import difflib
import functools
import os
import re
import shutil
import tarfile
import warnings
import zipfile
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any

import pooch
import yaml

from rankloop import _runtime
from rankloop.data.beir import BeirDataset, load_beir
from rankloop.data.trec import _iter_lines
from rankloop.errors import ConfigError, DataNotAvailableError, FormatError, RankloopError
from rankloop.io import atomic_dir

KINDS = ("beir", "msmarco", "trec", "ratings", "bandits", "clicks")
DEFAULT_TIMEOUT = 60.0
_HEX = {"md5": re.compile(r"[0-9a-f]{32}"), "sha256": re.compile(r"[0-9a-f]{64}")}


class UnverifiedDownloadWarning(UserWarning):
    """A file was downloaded without a published checksum to verify it against."""


@dataclass(frozen=True)
class FileSpec:
    """One download: mirror URLs, checksums, and either a target `path` or an archive to unpack."""

    urls: tuple[str, ...]
    md5: str | None = None
    sha256: str | None = None
    path: str | None = None
    unpack: str | None = None
    marker: str | None = None
    role: str | None = None

    @property
    def known_hash(self) -> str | None:
        """The checksum pooch verifies against (`sha256:` preferred over `md5:`), or None."""
        if self.sha256:
            return f"sha256:{self.sha256}"
        if self.md5:
            return f"md5:{self.md5}"
        return None


@dataclass(frozen=True)
class DatasetInfo:
    """A registry entry: what the data is, where it comes from and how it is laid out."""

    name: str
    kind: str
    description: str
    homepage: str
    licence: str
    local: str
    files: tuple[FileSpec, ...] = ()
    expect: tuple[str, ...] = ()
    splits: tuple[str, ...] = ()
    corpus: str | None = None
    local_only: str | None = None
    # BEIR sets whose queries are documents of the corpus (ArguAna, Quora): BEIR and pyserini
    # drop the query's own id from its results, and every rankloop runner does too.
    remove_query_id: bool = False

    @property
    def urls(self) -> list[str]:
        """Every URL of every file, mirrors included."""
        return [u for f in self.files for u in f.urls]

    @property
    def verified(self) -> bool:
        """True when every download has a checksum."""
        return all(f.known_hash for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (for `rankloop data info --json`)."""
        return asdict(self)


@dataclass(frozen=True)
class FileCheck:
    """One checksum comparison made by `verify`."""

    path: Path
    algorithm: str
    expected: str
    actual: str | None
    source: str

    @property
    def ok(self) -> bool:
        return self.actual == self.expected


def mirror_dir() -> Path | None:
    """The local mirror named by `RANKLOOP_DATA`, or None when unset/empty."""
    value = os.environ.get("RANKLOOP_DATA", "").strip()
    return Path(value).expanduser() if value else None


def cache_dir() -> Path:
    """The per-user download cache: the cache root itself (`_runtime.cache_dir()`), so data sets
    sit at `$RANKLOOP_CACHE/<local>` beside the `indexes/` and `embeddings/` folders."""
    return _runtime.cache_dir()


def _rel(value: Any, what: str, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: {what} must be a non-empty relative path, got {value!r}")
    p = PurePosixPath(value)
    if p.is_absolute() or ".." in p.parts:
        raise ConfigError(f"{where}: {what} must stay inside the dataset folder, got {value!r}")
    return value


def _file_spec(raw: Any, where: str) -> FileSpec:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: each file must be a mapping, got {raw!r}")
    unknown = set(raw) - {"urls", "md5", "sha256", "path", "unpack", "marker", "role"}
    if unknown:
        raise ConfigError(f"{where}: unknown file keys {sorted(unknown)}")
    urls = raw.get("urls")
    if (
        not isinstance(urls, list)
        or not urls
        or not all(isinstance(u, str) and "://" in u for u in urls)
    ):
        raise ConfigError(f"{where}: 'urls' must be a non-empty list of URLs, got {urls!r}")
    for alg in ("md5", "sha256"):
        value = raw.get(alg)
        if value is not None and not (isinstance(value, str) and _HEX[alg].fullmatch(value)):
            raise ConfigError(
                f"{where}: {alg} must be lowercase hex of the right length or null, got {value!r}"
            )
    unpack = raw.get("unpack")
    if unpack not in (None, "zip", "tar"):
        raise ConfigError(f"{where}: unpack must be 'zip', 'tar' or absent, got {unpack!r}")
    if unpack and raw.get("path"):
        raise ConfigError(
            f"{where}: a file is either unpacked (unpack + marker) or placed (path), not both"
        )
    if unpack and not raw.get("marker"):
        raise ConfigError(
            f"{where}: an archive needs a 'marker' (a file that identifies the data folder inside it)"
        )
    if not unpack and not raw.get("path"):
        raise ConfigError(f"{where}: a plain file needs a 'path'")
    return FileSpec(
        urls=tuple(urls),
        md5=raw.get("md5"),
        sha256=raw.get("sha256"),
        path=_rel(raw["path"], "path", where) if raw.get("path") else None,
        unpack=unpack,
        marker=_rel(raw["marker"], "marker", where) if raw.get("marker") else None,
        role=raw.get("role"),
    )


def _dataset_info(name: str, raw: Any, source: str) -> DatasetInfo:
    where = f"{source}: dataset {name!r}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: entry must be a mapping")
    known = {
        "kind",
        "description",
        "homepage",
        "licence",
        "local",
        "files",
        "expect",
        "splits",
        "corpus",
        "local_only",
        "remove_query_id",
    }
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
    for key in ("kind", "description", "homepage", "licence", "local"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise ConfigError(f"{where}: {key!r} must be a non-empty string")
    if raw["kind"] not in KINDS:
        raise ConfigError(f"{where}: kind must be one of {KINDS}, got {raw['kind']!r}")
    files = tuple(_file_spec(f, f"{where} file {i}") for i, f in enumerate(raw.get("files") or []))
    local_only = raw.get("local_only")
    if bool(files) == bool(local_only):
        raise ConfigError(
            f"{where}: give either 'files' (downloads) or 'local_only' (why there is none)"
        )
    if not isinstance(raw.get("remove_query_id", False), bool):
        raise ConfigError(f"{where}: remove_query_id must be true or false")
    expect = raw.get("expect") or [f.path for f in files if f.path]
    if not expect:
        raise ConfigError(f"{where}: 'expect' must list the files that show the dataset is present")
    return DatasetInfo(
        name=name,
        kind=raw["kind"],
        description=raw["description"],
        homepage=raw["homepage"],
        licence=raw["licence"],
        local=_rel(raw["local"], "local", where),
        files=files,
        expect=tuple(_rel(e, "expect", where) for e in expect),
        splits=tuple(raw.get("splits") or ()),
        corpus=raw.get("corpus"),
        local_only=local_only,
        remove_query_id=raw.get("remove_query_id", False),
    )


class Registry:
    """A set of `DatasetInfo` entries with lookup, location, download and verification."""

    def __init__(self, datasets: dict[str, DatasetInfo]) -> None:
        self._datasets = dict(datasets)

    @classmethod
    def from_yaml(cls, text: str, source: str = "<manifest>") -> Registry:
        """Parse and validate a manifest (schema documented at the top of manifest.yaml)."""
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"{source}: not valid YAML ({e})") from None
        if (
            not isinstance(raw, dict)
            or raw.get("schema") != 1
            or not isinstance(raw.get("datasets"), dict)
        ):
            raise ConfigError(f"{source}: expected 'schema: 1' and a 'datasets' mapping")
        return cls({str(n): _dataset_info(str(n), e, source) for n, e in raw["datasets"].items()})

    def names(self) -> list[str]:
        return list(self._datasets)

    def datasets(self) -> list[DatasetInfo]:
        return list(self._datasets.values())

    def info(self, name: str) -> DatasetInfo:
        """The entry for `name`; an unknown name raises with the closest known names."""
        try:
            return self._datasets[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._datasets, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else "; see `rankloop data list`"
            raise RankloopError(f"unknown dataset {name!r}{hint}") from None

    def locate(self, name: str) -> tuple[Path, str] | None:
        """(folder, "mirror" | "cache") of a complete local copy, or None."""
        info = self.info(name)
        for source, base in (("mirror", mirror_dir()), ("cache", cache_dir())):
            if base is not None and _complete(base / info.local, info):
                return base / info.local, source
        return None

    def fetch(self, name: str, timeout: float = DEFAULT_TIMEOUT, progressbar: bool = True) -> Path:
        """Local folder of `name`: the mirror's or the cache's copy, downloading it if needed."""
        info = self.info(name)
        found = self.locate(name)
        if found is not None:
            return found[0]
        mirror = mirror_dir()
        mirror_note = f"RANKLOOP_DATA={mirror}" if mirror else "RANKLOOP_DATA is unset"
        if info.local_only:
            raise DataNotAvailableError(
                f"dataset {name!r} has no download: {info.local_only}. Set RANKLOOP_DATA to a "
                f"mirror that holds {info.local}/ ({mirror_note}; expected {', '.join(info.expect)})."
            )
        target = cache_dir() / info.local
        for spec in info.files:
            _download(info, spec, target, timeout, progressbar, mirror_note)
        if not _complete(target, info):
            missing = [e for e in info.expect if not (target / e).exists()]
            raise DataNotAvailableError(
                f"dataset {name!r}: downloaded {', '.join(info.urls)} but {target} lacks "
                f"{', '.join(missing)}; the publisher's layout may have changed. Set RANKLOOP_DATA "
                f"to a mirror holding {info.local}/ ({mirror_note})."
            )
        return target

    def fetch_file(
        self, name: str, role: str | None = None, timeout: float = DEFAULT_TIMEOUT
    ) -> Path:
        """One file of a multi-file entry (e.g. `role="qrels"` of `dl19-passage`), fetched if needed."""
        info = self.info(name)
        plain = [f for f in info.files if f.path]
        chosen = [f.path for f in plain if role is None or f.role == role]
        if len(chosen) != 1:
            roles = sorted({f.role for f in plain if f.role})
            raise RankloopError(
                f"dataset {name!r}: {'no' if not chosen else 'several'} files for role {role!r}; "
                f"pass one of: {', '.join(roles) or '(none: use fetch() for the folder)'}"
            )
        return self.fetch(name, timeout=timeout) / str(chosen[0])

    def verify(self, name: str) -> list[FileCheck]:
        """Checksum the local copy: plain files against the manifest, plus the mirror's SHA256SUMS.

        A mirror root holding `SHA256SUMS` (`sha256sum` output, paths relative to the root) has
        every listed file under this dataset's folder checked too.
        """
        info = self.info(name)
        found = self.locate(name)
        if found is None:
            raise DataNotAvailableError(
                f"dataset {name!r}: no local copy to verify; run `rankloop data fetch {name}`"
            )
        root, source = found
        checks: dict[Path, FileCheck] = {}
        for spec in info.files:
            if spec.path is None or spec.known_hash is None:
                continue
            alg, expected = spec.known_hash.split(":", 1)
            path = root / spec.path
            checks[path] = FileCheck(path, alg, expected, _hash(path, alg), "manifest")
        mirror = mirror_dir()
        sums = mirror / "SHA256SUMS" if mirror is not None and source == "mirror" else None
        if sums is not None and sums.is_file():
            owned = {root / p for p in info.expect} | {root / f.path for f in info.files if f.path}
            shared = sum(d.local == info.local for d in self._datasets.values()) > 1  # e.g. trec/
            for rel, expected in _read_sha256sums(sums).items():
                path = mirror / rel
                inside = path in owned if shared else root in path.parents
                if inside and path not in checks:
                    checks[path] = FileCheck(
                        path, "sha256", expected, _hash(path, "sha256"), str(sums)
                    )
        return list(checks.values())

    def beir_folder(self, name: str) -> Path:
        """The local BEIR folder of `name`: a registered data set (fetched), or a path to any
        BEIR-layout folder (corpus.jsonl, queries.jsonl, qrels/), so users' own sets work."""
        if _is_beir_folder(name):
            return Path(name).expanduser()
        info = self.info(name)
        if info.kind != "beir":
            raise RankloopError(f"{name!r} is kind {info.kind!r}, not a BEIR-layout data set")
        return self.fetch(name)

    def conventions(self, name: str) -> DatasetInfo | None:
        """The registry entry that carries `name`'s conventions (None for a plain folder)."""
        return None if _is_beir_folder(name) else self.info(name)

    def load(self, name: str, split: str | None = "test") -> BeirDataset:
        """Fetch and load a BEIR-layout dataset (`kind: beir`, or a path to a BEIR folder),
        queries restricted to `split`."""
        if _is_beir_folder(name):
            return load_beir(Path(name).expanduser(), split=split)
        info = self.info(name)
        if info.kind != "beir":
            raise RankloopError(
                f"load() reads BEIR-layout datasets; {name!r} is kind {info.kind!r}: use fetch()/fetch_file() "
                "with the readers in rankloop.data.trec and rankloop.data.msmarco"
            )
        return load_beir(self.fetch(name), split=split, name=name)


def _is_beir_folder(name: str) -> bool:
    """True when `name` is an existing directory: a BEIR-layout folder given by its path (its
    reader then names any missing file), not a registry name."""
    return Path(name).expanduser().is_dir()


def _complete(root: Path, info: DatasetInfo) -> bool:
    return root.is_dir() and all((root / e).exists() for e in info.expect)


def _hash(path: Path, alg: str) -> str | None:
    return pooch.file_hash(str(path), alg=alg) if path.is_file() else None


def _read_sha256sums(path: Path) -> dict[str, str]:
    """`sha256sum` output -> {relative path: hex digest}."""
    out: dict[str, str] = {}
    for lineno, line in _iter_lines(path):
        if not line.strip():
            continue
        m = re.fullmatch(r"([0-9a-fA-F]{64}) [ *](.+)", line)
        if m is None:
            raise FormatError(path, lineno, "'<sha256>  <path>' as written by sha256sum", line)
        rel = m.group(2).strip()
        out[rel[2:] if rel.startswith("./") else rel] = m.group(1).lower()
    return out


def _download(
    info: DatasetInfo,
    spec: FileSpec,
    target: Path,
    timeout: float,
    progressbar: bool,
    mirror_note: str,
) -> None:
    """Download one file (trying each mirror URL) and lay it out under `target`."""
    if spec.known_hash is None:
        warnings.warn(
            f"dataset {info.name!r}: {spec.urls[0]} has no published checksum; the download is unverified",
            UnverifiedDownloadWarning,
            stacklevel=3,
        )
    errors: list[str] = []
    for url in spec.urls:
        downloader = pooch.HTTPDownloader(progressbar=progressbar, timeout=timeout)
        try:
            if spec.path is not None:
                rel = PurePosixPath(spec.path)
                pooch.retrieve(
                    url,
                    known_hash=spec.known_hash,
                    fname=rel.name,
                    path=target / rel.parent,
                    downloader=downloader,
                )
            else:
                _download_archive(info, spec, url, target, downloader)
            return
        except (OSError, ValueError, zipfile.BadZipFile, tarfile.TarError) as e:
            errors.append(f"{url}: {type(e).__name__}: {e}")
    raise DataNotAvailableError(
        f"dataset {info.name!r}: no local copy, and the download failed.\n  tried "
        + "\n  tried ".join(errors)
        + f"\nSet RANKLOOP_DATA to a local mirror holding {info.local}/ ({mirror_note}), or put the "
        f"files under {target} (the cache; RANKLOOP_CACHE moves it), or restore network access."
    )


def _download_archive(
    info: DatasetInfo, spec: FileSpec, url: str, target: Path, downloader: Any
) -> None:
    """Download + unpack with pooch, then move the folder holding `marker` into `target` atomically."""
    downloads = cache_dir() / "_downloads"
    fname = f"{info.name.replace(':', '_')}-{PurePosixPath(url).name}"
    extract = f"{fname}.unpacked"
    processor = (
        pooch.Unzip(extract_dir=extract)
        if spec.unpack == "zip"
        else pooch.Untar(extract_dir=extract)
    )
    members = pooch.retrieve(
        url,
        known_hash=spec.known_hash,
        fname=fname,
        path=downloads,
        processor=processor,
        downloader=downloader,
    )
    marker = PurePosixPath(str(spec.marker))
    hits = sorted(
        (Path(m) for m in members if Path(m).parts[-len(marker.parts) :] == marker.parts),
        key=lambda p: len(p.parts),
    )
    if not hits:
        raise ValueError(
            f"the archive holds no {spec.marker}; the publisher's layout may have changed"
        )
    inner = Path(*hits[0].parts[: len(hits[0].parts) - len(marker.parts)])
    with atomic_dir(target, overwrite=True) as tmp:  # the download cache is ours
        for child in inner.iterdir():
            shutil.move(str(child), str(tmp / child.name))
    shutil.rmtree(downloads / extract, ignore_errors=True)
    (downloads / fname).unlink(missing_ok=True)


@functools.lru_cache(maxsize=1)
def default_registry() -> Registry:
    """The registry from the packaged `manifest.yaml` (parsed once)."""
    text = resources.files("rankloop.data").joinpath("manifest.yaml").read_text(encoding="utf-8")
    return Registry.from_yaml(text, "rankloop/data/manifest.yaml")


def list_datasets() -> list[DatasetInfo]:
    """Every registered dataset, in manifest order."""
    return default_registry().datasets()


def info(name: str) -> DatasetInfo:
    """The registry entry for `name`."""
    return default_registry().info(name)


def locate(name: str) -> tuple[Path, str] | None:
    """(folder, "mirror" | "cache") of a complete local copy of `name`, or None."""
    return default_registry().locate(name)


def fetch(name: str, timeout: float = DEFAULT_TIMEOUT, progressbar: bool = True) -> Path:
    """Local folder holding `name`, from the mirror, the cache, or a fresh download."""
    return default_registry().fetch(name, timeout=timeout, progressbar=progressbar)


def fetch_file(name: str, role: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> Path:
    """One file of `name` (e.g. `fetch_file("dl19-passage", "qrels")`)."""
    return default_registry().fetch_file(name, role, timeout=timeout)


def verify(name: str) -> list[FileCheck]:
    """Checksum the local copy of `name` (see `Registry.verify`)."""
    return default_registry().verify(name)


def beir_folder(name: str) -> Path:
    """The local BEIR folder of a registered data set or a path (see `Registry.beir_folder`)."""
    return default_registry().beir_folder(name)


def remove_query_id(name: str) -> bool:
    """The data set's convention: are its queries corpus documents whose own id is dropped?"""
    entry = default_registry().conventions(name)
    return bool(entry and entry.remove_query_id)


def load(name: str, split: str | None = "test") -> BeirDataset:
    """Fetch and load a BEIR-layout dataset (scifact, nfcorpus, msmarco-dl19-mini, ..., or a
    path to a BEIR-layout folder)."""
    return default_registry().load(name, split=split)
