"""What dense and late-interaction retrievers share: an `Encoder` for queries, an index of
document vectors, and saving both as one directory (index files plus `retriever.json`)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from rankloop.embed.encoders import Encoder
from rankloop.errors import RankloopError
from rankloop.io import atomic_dir, json_field, open_artifact
from rankloop.retrieval.base import META_FILE, read_meta, write_meta

_R = TypeVar("_R", bound="EncodedIndexRetriever")


class EncodedIndexRetriever:
    """Base of `DenseRetriever` and `MultiVectorRetriever`; subclasses set the class variables."""

    KIND: ClassVar[str]  # the `kind` recorded in retriever.json
    SUBDIR: ClassVar[str]  # where the index files go inside the saved directory
    PREFIX: ClassVar[str]  # run-name prefix, e.g. "dense:"
    INDEX_CLS: ClassVar[Any]  # VectorIndex or MultiVectorIndex (anything with save/load/dim)

    def __init__(self, encoder: Encoder, index: Any) -> None:
        if encoder.dim != index.dim:
            raise RankloopError(
                f"encoder {encoder.name!r} makes {encoder.dim}-d vectors but the index holds "
                f"{index.dim}-d vectors; search with the model that built the index"
            )
        self.encoder = encoder
        self.index = index

    @property
    def name(self) -> str:
        """Run name: the kind's prefix plus the model's short name."""
        return self.PREFIX + self.encoder.name.rstrip("/").rsplit("/", 1)[-1]

    @classmethod
    def _artifact(cls) -> str:
        """The kind recorded in the directory's rankloop.json manifest, e.g. "dense index"."""
        return f"{cls.KIND} index"

    @classmethod
    def _is_legacy(cls, directory: Path) -> bool:
        """A directory of this kind saved before manifests: its retriever.json names the kind."""
        return json_field(directory / META_FILE, "kind") == cls.KIND

    def save(
        self, path: str | os.PathLike[str], *, overwrite: bool = False, **extra_meta: Any
    ) -> Path:
        """Write the index and the encoder settings to `path` (atomically replaced).

        Replaces only an empty folder or an index of the same kind (another rankloop artefact
        with `overwrite=True`); any other folder raises `RankloopError` and is left alone.
        """
        path = Path(path)
        with atomic_dir(path, self._artifact(), overwrite=overwrite, legacy=self._is_legacy) as tmp:
            self.index.save(tmp / self.SUBDIR)
            write_meta(
                tmp,
                self.KIND,
                model=self.encoder.name,
                model_fingerprint=self.encoder.fingerprint,
                backend=self.encoder.backend,
                max_length=self.encoder.max_length,
                dim=self.index.dim,
                **extra_meta,
            )
        return path

    @classmethod
    def load(
        cls: type[_R],
        path: str | os.PathLike[str],
        encoder: Encoder | None = None,
        *,
        verify: bool = True,
        **encoder_kwargs: Any,
    ) -> _R:
        """Open an index saved by `save`; without `encoder`, rebuild the one that made it.

        Every file's size and SHA-256 is checked first (`verify=False`: sizes only).
        """
        manifest = open_artifact(path, cls._artifact(), verify=verify, legacy=cls._is_legacy)
        meta = read_meta(path)
        if meta["kind"] != cls.KIND:
            raise RankloopError(f"{path} holds a {meta['kind']} index, not {cls.KIND}")
        if encoder is None:  # the backend that built the index, unless another is asked for
            encoder_kwargs.setdefault("backend", meta.get("backend", "torch"))
            encoder = Encoder(meta["model"], max_length=meta.get("max_length"), **encoder_kwargs)
            if encoder.fingerprint != meta.get("model_fingerprint"):
                warnings.warn(
                    f"{path}: model {meta['model']!r} differs from the one that built the index "
                    f"({encoder.fingerprint} vs {meta.get('model_fingerprint')})",
                    stacklevel=2,
                )
        # the outer manifest already hashed the index files; pre-manifest ones verify their own
        index = cls.INDEX_CLS.load(Path(path) / cls.SUBDIR, verify=verify and manifest is None)
        return cls(encoder, index)
