"""The stage catalogue: every registered stage, and pipeline expressions parsed into stages.

Importing this module registers every stage, so that
`rankloop.pipeline.parse("bm25 >> rocchio(fb_docs=3, beta=0.5)", ctx)` can build any pipeline
over a shared `Context`; `parse_pipelines(config_mapping, ctx)` builds a config's named
pipelines in order, so later ones may use earlier ones by name (`ref('bm25+rm3')`, or the bare name when it is an
identifier). An unknown stage, an unknown parameter or a value of the wrong type fails here,
before any work, with the file, the line and the valid names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import rankloop.prf.stages
import rankloop.rerank.cross_encoder
import rankloop.rerank.knn_feedback
import rankloop.rerank.stages
import rankloop.retrieval.stages  # noqa: F401 - importing registers the stages
from rankloop._runtime import where
from rankloop.errors import ConfigError
from rankloop.pipeline import STAGES, Stage, build_stage, parse, stage_names
from rankloop.retrieval.context import Context

__all__ = ["STAGES", "build_stage", "parse", "parse_pipelines", "stage_names"]

def parse_pipelines(pipelines: Mapping[str, Any], ctx: Context, *,
                    known: Mapping[str, Stage] | None = None) -> dict[str, Stage]:  # fmt: skip
    """Named pipelines from a config mapping (name -> expression), built in order; `known`
    are pipelines the expressions may also use by name. Errors name the file and line."""
    if not isinstance(pipelines, Mapping) or not pipelines:
        raise ConfigError(f"{where(pipelines)}: expected a mapping of name -> pipeline expression")
    refs: dict[str, Stage] = dict(known or {})
    out: dict[str, Stage] = {}
    for name, text in pipelines.items():
        at = where(pipelines, name)
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{at}: a pipeline name must be a non-empty string, got {name!r}")
        if name in refs:
            raise ConfigError(f"{at}: pipeline name {name!r} is used twice")
        if not isinstance(text, str):
            raise ConfigError(f"{at}: pipeline {name!r}: expected an expression string such as "
                              f"\"bm25 >> rocchio(fb_docs=3)\", got {text!r}")  # fmt: skip
        stage = parse(text, ctx, refs, where=f"{at}: pipeline {name!r}")
        out[name] = refs[name] = stage
    return out
