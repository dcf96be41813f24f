"""rankloop: retrieval and recommendation with feedback loops."""

from rankloop.errors import FormatError, RankloopError

__version__ = "0.1.0"
__all__ = ["FormatError", "RankloopError", "__version__"]
