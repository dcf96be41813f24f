"""The Open Bandit Dataset reader: the shipped sample and malformed files."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from rankloop.data.banditlogs import load_obd
from rankloop.errors import DataNotAvailableError, FormatError, RankloopError


@pytest.mark.parametrize("campaign,n_items", [("all", 80), ("men", 34), ("women", 46)])
def test_random_logs_have_uniform_propensities(obd_root, campaign, n_items):
    log = load_obd("random", campaign, path=obd_root)
    assert len(log) == 10_000 and log.n_actions == n_items and log.len_list == 3
    np.testing.assert_allclose(log.pscore, 1 / n_items)
    assert set(np.unique(log.position)) == {0, 1, 2}
    assert log.context.shape[0] == 10_000 and log.action_context.shape[0] == n_items
    np.testing.assert_allclose(log.action_distribution().sum(axis=0), 1.0)
    assert 0 < log.ctr < 0.02


def test_bts_log_and_subset(obd_root):
    log = load_obd("bts", "men", path=obd_root)
    assert log.behavior == "bts" and log.ctr == pytest.approx(0.0069)
    head = log.subset(np.arange(10))
    assert len(head) == 10 and head.timestamp is not None and len(head.timestamp) == 10


def _copy_campaign(obd_root, tmp_path):
    dst = tmp_path / "obd" / "random" / "men"
    dst.mkdir(parents=True)
    for f in ("men.csv", "item_context.csv"):
        shutil.copy(obd_root / "random" / "men" / f, dst / f)
    return tmp_path / "obd", dst / "men.csv"


def test_malformed_values_name_the_file_and_line(obd_root, tmp_path):
    root, csv = _copy_campaign(obd_root, tmp_path)
    lines = csv.read_text().splitlines()
    cells = lines[3].split(",")
    cells[4] = "7"  # click column
    lines[3] = ",".join(cells)
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(FormatError) as e:
        load_obd("random", "men", path=root)
    assert e.value.line == 4 and "click" in str(e.value)


def test_missing_columns_and_files(obd_root, tmp_path):
    root, csv = _copy_campaign(obd_root, tmp_path)
    csv.write_text(",timestamp,item_id\n0,2019,1\n")
    with pytest.raises(FormatError, match="columns"):
        load_obd("random", "men", path=root)
    with pytest.raises(DataNotAvailableError):
        load_obd("random", "women", path=root)
    with pytest.raises(RankloopError, match="behavior"):
        load_obd("greedy", "men", path=root)
