"""Rating loaders: Coat, Yahoo! R3 layout, MovieLens, CSV/Parquet; bad rows name file and line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rankloop.data.ratings import load_coat, load_movielens, load_yahoo_r3, read_ratings
from rankloop.errors import DataNotAvailableError, FormatError, RankloopError


def test_load_coat_real(coat):
    assert coat.train.shape == coat.test.shape == (290, 300)
    assert (coat.train.nnz, coat.test.nnz) == (6960, 4640)
    assert coat.train.kind == coat.test.kind == "explicit"
    assert set(np.unique(coat.test.user_items.data)) == {1, 2, 3, 4, 5}
    assert (coat.test.user_counts() == 16).all()  # 16 uniformly random items per user (MAR)
    assert coat.user_features.shape == (290, 14) and coat.item_features.shape == (300, 33)
    assert coat.item_feature_names[0] == "gender:men"
    assert coat.shipped_propensities.shape == (290, 300)


def test_load_coat_through_env(coat_dir, monkeypatch):
    monkeypatch.setenv("RANKLOOP_DATA", str(coat_dir.parents[1]))
    assert load_coat().train.nnz == 6960
    small = load_coat().head(10, 20)
    assert small.train.shape == (10, 20) and small.user_features.shape == (10, 14)


def _coat_like(tmp_path: Path, train: str, test: str | None = None) -> Path:
    (tmp_path / "train.ascii").write_text(train)
    (tmp_path / "test.ascii").write_text(test if test is not None else train)
    return tmp_path


def test_coat_bad_rows_name_file_and_line(tmp_path):
    d = _coat_like(tmp_path, "0 1 2\n3 0 5\n4 4\n")
    with pytest.raises(FormatError) as e:
        load_coat(d)
    assert (
        e.value.line == 3
        and e.value.path.endswith("train.ascii")
        and "3 integers" in e.value.expected
    )
    d = _coat_like(tmp_path, "0 1 2\n3 0 7\n")
    with pytest.raises(FormatError, match=r"train.ascii:2"):
        load_coat(d)
    d = _coat_like(tmp_path, "0 1 2\n3 x 1\n")
    with pytest.raises(FormatError, match=r"train.ascii:2"):
        load_coat(d)
    d = _coat_like(tmp_path, "0 1 2\n3 0 1\n", "0 1 2\n")
    with pytest.raises(FormatError, match=r"test\.ascii"):
        load_coat(d)
    with pytest.raises(DataNotAvailableError):
        load_coat(tmp_path / "nowhere")


def test_coat_missing_everywhere(monkeypatch, tmp_path):
    monkeypatch.setenv("RANKLOOP_DATA", str(tmp_path))
    monkeypatch.setenv("RANKLOOP_CACHE", str(tmp_path / "cache"))
    import rankloop.data.registry as reg

    def offline(*a, **k):
        raise DataNotAvailableError("coat: offline in tests")

    monkeypatch.setattr(reg, "fetch", offline)
    with pytest.raises(DataNotAvailableError, match="coat"):
        load_coat()


def _yahoo(tmp_path: Path, train: str, test: str) -> Path:
    (tmp_path / "train.txt").write_text(train)
    (tmp_path / "test.txt").write_text(test)
    return tmp_path


def test_yahoo_layout_shares_ids_between_splits(tmp_path):
    d = _yahoo(tmp_path, "1\t1\t5\n1\t3\t2\n2\t2\t4\n", "1\t2\t1\n3\t3\t5\n")
    data = load_yahoo_r3(d)
    assert data.train.user_ids == data.test.user_ids == ["1", "2", "3"]
    assert data.train.item_ids == ["1", "2", "3"]
    assert data.test.user_items[2, 2] == 5 and data.train.user_items[0, 2] == 2


@pytest.mark.parametrize(
    ("train", "line", "what"),
    [
        ("1\t1\t5\n1\t2\n", 2, "field"),
        ("1\t1\t5\n1\t2\t4\t9\n", 2, "field"),
        ("1\t1\t5\n\n2\t1\tfive\n", 3, "rating"),
        ("1\t1\t5\n2\t1\t9\n", 2, "rating"),
        ("1\t1\t5\n1\t1\t4\n", 2, "one row per"),
        ("1\t1\t5\n\t1\t4\n", 2, "non-empty"),
    ],
)
def test_yahoo_bad_rows(tmp_path, train, line, what):
    d = _yahoo(tmp_path, train, "1\t1\t5\n")
    with pytest.raises(FormatError) as e:
        load_yahoo_r3(d)
    assert e.value.line == line and what in str(e.value) and e.value.path.endswith("train.txt")


def test_yahoo_needs_a_path(tmp_path):
    with pytest.raises(DataNotAvailableError, match="licence"):
        load_yahoo_r3()
    with pytest.raises(DataNotAvailableError, match=r"train\.txt"):
        load_yahoo_r3(tmp_path)


def test_movielens_layouts(tmp_path):
    d100 = tmp_path / "ml-100k"
    d100.mkdir()
    (d100 / "u.data").write_text(
        "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n"
    )
    log = load_movielens("movielens-100k", d100)
    assert len(log) == 3 and log.user_ids == ["22", "186", "196"] and log.timestamps[0] == 881250949
    x = log.to_interactions()
    assert x.kind == "explicit" and x.shape == (3, 3)
    d1m = tmp_path / "ml-1m"
    d1m.mkdir()
    (d1m / "ratings.dat").write_text(
        "1::1193::5::978300760\n1::661::3::978302109\n2::661::x::978302109\n"
    )
    with pytest.raises(FormatError) as e:
        load_movielens("movielens-1m", d1m)
    assert e.value.line == 3
    with pytest.raises(RankloopError, match="unknown MovieLens"):
        load_movielens("movielens-20m", d1m)


def test_read_ratings_csv_and_parquet(tmp_path):
    df = pd.DataFrame(
        {
            "user": ["u1", "u2", "u1"],
            "item": ["a", "b", "b"],
            "count": [3, 1, 2],
            "timestamp": [1, 2, 3],
        }
    )
    csv = tmp_path / "log.csv"
    df.to_csv(csv, index=False)
    log = read_ratings(csv, timestamp_col="timestamp")
    assert log.value_name == "count" and log.to_interactions().kind == "implicit"
    assert log.to_interactions().user_items[0, 1] == 2
    pq = tmp_path / "log.parquet"
    df.rename(columns={"count": "rating"}).to_parquet(pq)
    assert read_ratings(pq).to_interactions().kind == "explicit"
    bad = tmp_path / "bad.csv"
    bad.write_text("user,item,rating\nu1,a,4\nu2,b,lots\n")
    with pytest.raises(FormatError) as e:
        read_ratings(bad)
    assert e.value.line == 3
    with pytest.raises(FormatError, match="columns"):
        read_ratings(bad, user_col="uid")
    pq_bad = tmp_path / "bad.parquet"
    pd.DataFrame({"user": ["u"], "item": ["i"], "rating": ["oops"]}).to_parquet(pq_bad)
    with pytest.raises(FormatError, match=r"bad\.parquet:1"):
        read_ratings(pq_bad)
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(FormatError, match="Parquet"):
        read_ratings(tmp_path / "junk.parquet")


_line = st.lists(
    st.one_of(st.integers(-3, 9).map(str), st.sampled_from(["", "x", "4.5", "1e3", " ", "nan"])),
    min_size=0,
    max_size=5,
).map("\t".join)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(lines=st.lists(_line, min_size=1, max_size=6))
def test_yahoo_reader_fuzz_raises_only_format_errors(tmp_path, lines):
    d = _yahoo(tmp_path, "\n".join(lines) + "\n", "1\t1\t5\n")
    try:
        data = load_yahoo_r3(d)
    except FormatError:
        return
    assert data.train.kind == "explicit"
    assert (
        data.train.nnz == 0
        or 1 <= data.train.user_items.data.min() <= data.train.user_items.data.max() <= 5
    )


# --- strict parsing (issue "Nothing lost, nothing silently wrong") ------------------------------

_TRAIN = "0 1 5\n3 0 2\n"


@pytest.mark.parametrize(
    ("props", "line", "needle"),
    [
        ("0.5 0.5 0.5\n0.5 nan 0.5\n", 2, "finite propensity"),
        ("0.5 0.5 0.5\n0.5 inf 0.5\n", 2, "finite propensity"),
        ("0.5 0.5 0.5\n0.5 0 0.5\n", 2, r"propensity in \(0, 1\]"),
        ("0.5 0.5 0.5\n0.5 -0.1 0.5\n", 2, r"propensity in \(0, 1\]"),
        ("0.5 0.5 0.5\n0.5 1.5 0.5\n", 2, r"propensity in \(0, 1\]"),
        ("0.5 0.5 0.5\n\n0.5 1_0 0.5\n", 3, "numeric propensity"),
        ("0.5 0.5 0.5\n0.5 ٠.٥ 0.5\n", 2, "numeric propensity"),
        ("0.5 0.5 0.5\n0.5 0.5\n", 2, "3 numbers per line"),
        ("0.5 0.5 0.5\n", None, "2 rows like train"),
        ("\n", None, "propensity matrix"),
    ],
)
def test_coat_propensities_are_checked(tmp_path, props, line, needle):
    d = _coat_like(tmp_path, _TRAIN)
    (d / "propensities.ascii").write_text(props, encoding="utf-8")
    with pytest.raises(FormatError, match=needle) as e:
        load_coat(d)
    assert e.value.line == line and e.value.path.endswith("propensities.ascii")


def test_coat_propensities_read(tmp_path, coat):
    d = _coat_like(tmp_path, _TRAIN)
    (d / "propensities.ascii").write_text("\ufeff5.0e-01 1 1E-3\r\n\r\n.25 0.5 1.\r\n")
    prop = load_coat(d).shipped_propensities
    np.testing.assert_array_equal(prop, [[0.5, 1, 1e-3], [0.25, 0.5, 1.0]])
    real = coat.shipped_propensities
    assert real.shape == (290, 300) and 0 < real.min() and real.max() <= 1


@pytest.mark.parametrize("value", ["1_0", "٣", "３", "+-1", "99999999999999999999"])
def test_coat_ratings_are_strict_ascii_integers(tmp_path, value):
    with pytest.raises(FormatError, match=r"train\.ascii:2") as e:
        load_coat(_coat_like(tmp_path, f"0 1 2\n3 {value} 1\n", "0 1 2\n3 0 1\n"))
    assert "integer rating" in str(e.value)


def test_rating_files_must_be_utf8(tmp_path):
    d = _yahoo(tmp_path, "", "1\t1\t5\n")
    (d / "train.txt").write_bytes(b"1\t1\t5\n\nu\xe9\t2\t4\n")
    with pytest.raises(FormatError, match="UTF-8") as e:
        load_yahoo_r3(d)
    assert e.value.line == 3 and e.value.path.endswith("train.txt")
    (tmp_path / "coat").mkdir()
    coat = _coat_like(tmp_path / "coat", _TRAIN)
    (coat / "propensities.ascii").write_bytes(b"0.5 0.5 0.5\n0.5 \xff 0.5\n")
    with pytest.raises(FormatError, match=r"propensities\.ascii:2: expected UTF-8"):
        load_coat(coat)
    csv = tmp_path / "log.csv"
    csv.write_bytes(b"user,item,rating\nu1,a,4\nu\xff,b,5\n")
    with pytest.raises(FormatError, match="UTF-8") as e:
        read_ratings(csv)
    assert e.value.line == 3


@pytest.mark.parametrize(
    ("rating", "needle"),
    [
        ("1e39", "rating in column 'rating' in"),
        ("nan", "finite"),
        ("1_0", "numeric"),
        ("٤", "numeric"),
    ],
)
def test_ratings_are_finite_strict_numbers(tmp_path, rating, needle):
    csv = tmp_path / "log.csv"
    csv.write_text(f"user,item,rating\nu1,a,4\nu2,b,{rating}\n")
    with pytest.raises(FormatError, match=needle) as e:
        read_ratings(csv)
    assert e.value.line == 3
    csv.write_text("\ufeffuser,item,rating\r\nu1,a,-3.4e38\r\nu2,b,1E2\r\n")
    assert read_ratings(csv).values.tolist() == [np.float32(-3.4e38), 100.0]


def test_movielens_values_and_timestamps_are_checked(tmp_path):
    d = tmp_path / "ml-100k"
    d.mkdir()
    for row, needle in [
        ("1\t2\t1e39\t5", r"rating in column 'rating' in \[0\.5, 5\]"),
        ("1\t2\t3\t1.5", "integer timestamp"),
        ("1\t2\t3\t-1", "timestamp"),
        ("1\t2\t3\t99999999999999999999", "timestamp"),
    ]:
        (d / "u.data").write_text(f"1\t1\t3\t9\n\n{row}\n")
        with pytest.raises(FormatError, match=needle) as e:
            load_movielens("movielens-100k", d)
        assert e.value.line == 3


def test_header_only_and_bad_headers(tmp_path):
    csv = tmp_path / "log.csv"
    for text, needle in [
        ("user,item,rating\n", "at least one data row"),
        ("", "header line"),
        ("user,item,user\nu,i,u\n", "distinct, non-empty"),
        ("user,,rating\nu,i,1\n", "distinct, non-empty"),
    ]:
        csv.write_text(text)
        with pytest.raises(FormatError, match=needle):
            read_ratings(csv)
