"""The project's own error types: every boundary raises one of these, never a bare traceback."""

from __future__ import annotations

import os


class RankloopError(Exception):
    """Base class of every error rankloop raises on purpose."""


class FormatError(RankloopError, ValueError):
    """Malformed input file: names the file, the 1-based line number and what was expected."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        line: int | None,
        expected: str,
        got: str | None = None,
    ) -> None:
        self.path = None if path is None else str(path)
        self.line = line
        self.expected = expected
        self.got = got
        where = self.path or "<input>"
        if line is not None:
            where = f"{where}:{line}"
        msg = f"{where}: expected {expected}"
        if got is not None:
            shown = got if len(got) <= 120 else got[:117] + "..."
            msg += f", got {shown!r}"
        super().__init__(msg)


class DataNotAvailableError(RankloopError):
    """A registry dataset has no local copy and could not be downloaded."""


class ModelNotAvailableError(RankloopError):
    """A model needs a download that cannot happen (offline, or no such model)."""


class IndexCorruptError(RankloopError):
    """An index on disk is missing files, truncated or inconsistent."""


class ConfigError(RankloopError, ValueError):
    """A config file or parameter has an invalid value."""
