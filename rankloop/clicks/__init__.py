"""Clicks: click models (PBM, CM, DCM, UBM, DBN, SDBN), simulation and propensity estimation.

Everything that turns relevance into clicks, or clicks into propensities, goes through here.
The click-log type and its readers live in `rankloop.data.clicklogs` and are re-exported.
"""

from rankloop.clicks.models import (
    DBN,
    DCM,
    MODELS,
    PBM,
    SDBN,
    UBM,
    CascadeModel,
    ClickModel,
    Perplexity,
    make_model,
)
from rankloop.clicks.probabilities import (
    attractiveness_from_grades,
    pbm_examination,
    satisfaction_from_grades,
    ubm_examination,
)
from rankloop.clicks.propensity import (
    em_propensities,
    harvest_propensities,
    swap_interventions,
    swap_propensities,
)
from rankloop.clicks.simulate import (
    sessions_from_lists,
    sessions_from_log,
    sessions_from_run,
    simulate_log,
)
from rankloop.data.clicklogs import (
    ClickLog,
    concat_logs,
    load_yandex_sample,
    read_click_log,
    write_click_log,
)

__all__ = [
    "DBN",
    "DCM",
    "MODELS",
    "PBM",
    "SDBN",
    "UBM",
    "CascadeModel",
    "ClickLog",
    "ClickModel",
    "Perplexity",
    "attractiveness_from_grades",
    "concat_logs",
    "em_propensities",
    "harvest_propensities",
    "load_yandex_sample",
    "make_model",
    "pbm_examination",
    "read_click_log",
    "satisfaction_from_grades",
    "sessions_from_lists",
    "sessions_from_log",
    "sessions_from_run",
    "simulate_log",
    "swap_interventions",
    "swap_propensities",
    "ubm_examination",
    "write_click_log",
]
