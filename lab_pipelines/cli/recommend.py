"""`lab recommend`: a MovieLens user's top films from the CMC checkpoint `make demo` trained,
or a new user's from films they name, each with the rated films nearest to it."""

from __future__ import annotations

import argparse
from pathlib import Path

from lab_pipelines.cli.errors import LabInputError, materialize_hint
from lab_pipelines.paths import data_dir
from lab_pipelines.recsys.data import PACKAGED
from lab_pipelines.recsys.recommend import (
    Recommendation,
    Recommender,
    RecommendInputError,
    normalise,
    split_titles,
)

HELP = "top films for a MovieLens user (--user ID) or for films you like (--likes TITLES)"

# What trains each dataset's checkpoint: the demo's chain, or the full tier's seed runs.
TRAINS = {"ml-100k": "movielens_ratings,cmc_model", "ml-1m": "recsys_seed_benchmark"}


def add_parser(parser: argparse.ArgumentParser) -> None:
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="a user id as the data has it (ML-100K: 1..943)")
    who.add_argument("--likes", help='films a new user liked, comma-separated: '
                     '"Toy Story, Fargo, Heat" (case-insensitive, year optional)')
    parser.add_argument("--dataset", choices=PACKAGED, default="ml-100k")
    parser.add_argument("-n", type=int, default=10, help="how many films (default 10)")
    parser.add_argument("--checkpoint", type=Path,
                        help="a CMC checkpoint (default: the newest trained on --dataset)")


def _load(args: argparse.Namespace) -> Recommender:
    root = data_dir()
    try:
        return Recommender.load(root, args.dataset, args.checkpoint)
    except FileNotFoundError as missing:
        raise LabInputError(f"no CMC checkpoint at {missing}; train it with: "
                            f"{materialize_hint(TRAINS[args.dataset])}") from None


def _print(recs: list[Recommendation], rec: Recommender) -> None:
    width = max(len(r.title) for r in recs)
    for rank, r in enumerate(recs, 1):
        print(f"{rank:>2}. {r.title:<{width}}  {r.predicted:.2f}  near {'; '.join(r.because)}")
    if rec.titles is None:
        print(f"({rec.dataset} as installed ships no titles: items are shown by id)")


def run(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise LabInputError(f"-n must be at least 1, not {args.n}")
    rec = _load(args)
    try:
        if args.user is not None:
            recs = rec.for_user(args.user.strip(), args.n)
            print(f"Top {args.n} for user {args.user} of {rec.dataset} (CMC, "
                  f"{rec.checkpoint.name}); predicted stars, then the user's nearest films:")
        else:
            known = {normalise(t)[0] for t in (rec.titles or {}).values()}
            liked, recs = rec.for_likes(split_titles(args.likes, known), args.n)
            print(f"A new user who liked {'; '.join(rec.title(i) for i in liked)}, folded into "
                  f"CMC ({rec.checkpoint.name}) without retraining; top {args.n}:")
    except RecommendInputError as error:
        raise LabInputError(str(error)) from None
    _print(recs, rec)
    return 0
