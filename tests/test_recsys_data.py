"""Loaders for every supported ratings format, bad-row errors, splits and their storage."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from lab_pipelines.recsys import data


def _write(path, text: str):
    path.write_text(text)
    return path


@pytest.mark.parametrize("name, text, ratings", [
    ("u.data", "1\t10\t4\t881250949\n2\t10\t3\t881250950\n", [4.0, 3.0]),
    ("u1.base", "1\t10\t4\t881250949\n", [4.0]),
    ("ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n", [5.0, 3.0]),
    ("ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,3.5,964981247\n",
     [4.0, 3.5]),
    ("ml.inter", ("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                  "196\t242\t3\t881250949\n"), [3.0]),
])
def test_each_format_loads(tmp_path, name, text, ratings):
    frame = data.load_ratings(_write(tmp_path / name, text))
    assert frame.columns == ["user_id", "item_id", "rating", "timestamp"]
    assert frame.get_column("rating").to_list() == ratings
    assert frame.schema["timestamp"] == pl.Int64


@pytest.mark.parametrize("name, text, line, why", [
    ("u.data", "1\t10\t4\t881250949\n2\t10\tfive\t881250950\n", 2, "rating is not a number"),
    ("ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,1\n1,2,3.5,2\n1,3\n", 4,
     "expected 4 fields"),
    ("ratings.dat", "1::1193::5::978300760\n\n1::661::3::notatime\n", 3, "timestamp"),
])
def test_malformed_file_names_its_line(tmp_path, name, text, line, why):
    path = _write(tmp_path / name, text)
    with pytest.raises(data.RatingsFormatError, match=f"{name}:{line}: {why}"):
        data.load_ratings(path)


def test_unknown_format_and_missing_file(tmp_path):
    with pytest.raises(data.RatingsFormatError, match="unknown ratings format"):
        data.load_ratings(_write(tmp_path / "ratings.json", "[]"))
    with pytest.raises(FileNotFoundError):
        data.load_ratings(tmp_path / "u.data")


def test_default_is_ml100k_from_recbole():
    frame = data.load_ratings(data.default_ratings_path())
    assert frame.height == 100_000
    assert frame.get_column("user_id").n_unique() == 943
    assert frame.get_column("item_id").n_unique() == 1682


def test_random_split_is_seeded_disjoint_and_saved(tmp_path):
    frame = data.load_ratings(data.default_ratings_path())
    split = data.random_split(frame, "ml-100k", seed=0)
    again = data.random_split(frame, "ml-100k", seed=0)
    other = data.random_split(frame, "ml-100k", seed=1)
    assert (split.train.height, split.val.height, split.test.height) == (76_000, 4_000, 20_000)
    assert split.split == "random80_seed0"
    assert split.test.equals(again.test) and not split.test.equals(other.test)
    keys = [set(zip(*[f.get_column(c).to_list() for c in ("user", "item")]))
            for f in (split.train, split.val, split.test)]
    assert not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2])
    split.save(tmp_path / "s")
    loaded = data.RatingSplit.load(tmp_path / "s")
    assert loaded.train.equals(split.train) and loaded.n_items == 1682
    assert list(loaded.rating_levels) == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_fixed_split_indexes_items_seen_only_in_test(tmp_path):
    base = _write(tmp_path / "u1.base", "1\t10\t4\t1\n2\t10\t3\t2\n2\t11\t5\t3\n")
    test = _write(tmp_path / "u1.test", "1\t12\t2\t4\n")
    split = data.fixed_split(data.load_ratings(base), data.load_ratings(test), "toy", "u1",
                             val_fraction=0.0)
    assert split.n_items == 3 and split.train.height == 3
    test_item = split.test.get_column("item").item()
    assert test_item not in set(split.train.get_column("item").to_list())
    assert np.all(split.arrays("test")[2] == [2.0])


def test_item_side_features_come_from_recbole_in_split_order():
    side = data.packaged_item_side("ml-100k", 1682)
    genres = len(side[0]) - len(data.YEAR_EDGES) - 1
    assert side.shape == (1682, 19 + len(data.YEAR_EDGES) + 1) and genres == 19
    items = data.id_index(data.packaged_ratings("ml-100k"))[1].to_list()
    # Toy Story (raw id 1, 1995): Animation, Children's, Comedy; GoldenEye (2, 1995): Action,
    # Adventure, Thriller. Genre columns are the sorted tokens, the year bins follow.
    tokens = ["Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
              "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
              "Romance", "Sci-Fi", "Thriller", "War", "Western", "unknown"]
    for raw, names in (("1", ["Animation", "Children's", "Comedy"]),
                       ("2", ["Action", "Adventure", "Thriller"])):
        row = side[items.index(raw)]
        assert [tokens[k] for k in np.flatnonzero(row[:genres])] == names
        assert np.flatnonzero(row[genres:]).tolist() == [data.YEAR_EDGES.index(1995) + 1]
    # One year bin per film, except the two whose year in the file is not a number.
    assert sorted(np.unique(side[:, genres:].sum(1), return_counts=True)[1]) == [2, 1680]
    # No side file, or a split indexed differently: none, so CMC runs without them.
    assert data.packaged_item_side("ml-1m", 3706) is None
    assert data.packaged_item_side("ml-100k", 1000) is None
