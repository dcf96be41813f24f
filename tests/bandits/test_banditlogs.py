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


# --- strict parsing (issue "Nothing lost, nothing silently wrong") ------------------------------

_ITEMS = ",item_id,item_feature_0,item_feature_1\n0,0,-0.5,a\n1,1,0.25,b\n2,2,0.1,c\n"
_HEADER = ",timestamp,item_id,position,click,propensity_score,user_feature_0,user-item_affinity_0"
_ROW = "{i},2019-11-24 00:03:13+00:00,{item},{pos},{click},{p},u,{aff}"


def _tiny_obd(tmp_path, rows, items=_ITEMS):
    folder = tmp_path / "random" / "men"
    folder.mkdir(parents=True)
    (folder / "men.csv").write_text("\n".join([_HEADER, *rows]) + "\n")
    (folder / "item_context.csv").write_text(items)
    return tmp_path


def _row(i=0, item="1", pos="1", click="0", p="0.5", aff="0.0"):
    return _ROW.format(i=i, item=item, pos=pos, click=click, p=p, aff=aff)


def test_tiny_log_reads(tmp_path):
    log = load_obd("random", "men", _tiny_obd(tmp_path, [_row(), "", _row(1, "2", "3", "1")]))
    assert log.action.tolist() == [1, 2] and log.position.tolist() == [0, 2]
    assert log.len_list == 3 and log.reward.tolist() == [0, 1]


def test_header_only_logs_are_a_clear_error(tmp_path):
    with pytest.raises(FormatError, match="at least one data row") as e:
        load_obd("random", "men", _tiny_obd(tmp_path, []))
    assert e.value.path.endswith("men.csv")
    items_only_header = ",item_id,item_feature_0\n"
    with pytest.raises(FormatError, match="at least one data row") as e:
        load_obd("random", "men", _tiny_obd(tmp_path / "b", [_row()], items_only_header))
    assert e.value.path.endswith("item_context.csv")


@pytest.mark.parametrize(
    ("bad", "needle"),
    [
        ({"click": "7"}, "'click' in"),
        ({"p": "0"}, r"'propensity_score' in \(0, 1\]"),
        ({"p": "nan"}, "finite"),
        ({"item": "1.0"}, "integer 'item_id'"),
        ({"item": "٣"}, "integer 'item_id'"),
        ({"pos": "4"}, r"'position' in \[1, 3\]"),
        ({"pos": "1e300"}, "integer 'position'"),
        ({"aff": "1_0"}, "numeric 'user-item_affinity_0'"),
    ],
)
def test_blank_lines_keep_physical_line_numbers(tmp_path, bad, needle):
    rows = [_row(), "", "  ", _row(1, **bad)]
    with pytest.raises(FormatError, match=needle) as e:
        load_obd("random", "men", _tiny_obd(tmp_path, rows))
    assert e.value.line == 5


def test_timestamps_and_item_ids_are_checked(tmp_path):
    rows = [_row(), _row(1).replace("2019-11-24 00:03:13+00:00", "now")]
    with pytest.raises(FormatError, match="ISO 8601") as e:
        load_obd("random", "men", _tiny_obd(tmp_path, rows))
    assert e.value.line == 3
    items = ",item_id,item_feature_0\n0,0,1\n1,2,1\n2,2,1\n"
    with pytest.raises(FormatError, match="already on line 3") as e:
        load_obd("random", "men", _tiny_obd(tmp_path / "b", [_row()], items))
    assert e.value.line == 4
