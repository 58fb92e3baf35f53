"""`lab recommend` on a CMC checkpoint trained briefly on the packaged ML-100K (its users,
items and titles are the real ones), and without any checkpoint."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lab_pipelines.cli import main
from lab_pipelines.paths import REPO_ROOT
from lab_pipelines.recsys.cmc import CMCConfig
from lab_pipelines.recsys.data import packaged_split
from lab_pipelines.recsys.recommend import Recommender, RecommendInputError, split_titles
from lab_pipelines.recsys.train import train_cmc

# A few full-graph epochs: enough for real embeddings, not for a good model.
BRIEF = CMCConfig(dim=16, max_epochs=15, eval_every=5, patience=15)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    split = packaged_split("ml-100k", seed=0)
    train_cmc(split, BRIEF, "cpu", root / "checkpoints" / "cmc_ml-100k_random80_seed0.pt",
              log=lambda _: None)
    return root


def _lines(capsys) -> list[str]:
    return capsys.readouterr().out.strip().splitlines()


def test_without_a_checkpoint_one_line_names_the_command(lab_data, capsys):
    assert main(["recommend", "--user", "42"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "no CMC checkpoint" in err
    assert "dagster asset materialize" in err and "cmc_model" in err
    # The installed console script says the same, and exits 2.
    lab = Path(sys.executable).with_name("lab")
    done = subprocess.run([str(lab), "recommend", "--user", "42"], capture_output=True, text=True,
                          check=False, cwd=REPO_ROOT, env={"LAB_DATA_DIR": str(lab_data), "PATH": "/usr/bin"})
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "cmc_model" in done.stderr


def test_user_gets_n_distinct_unseen_titled_films_with_a_why(data_root, monkeypatch, capsys):
    monkeypatch.setenv("LAB_DATA_DIR", str(data_root))
    assert main(["recommend", "--user", "42", "-n", "7"]) == 0
    lines = _lines(capsys)
    assert "user 42" in lines[0] and len(lines) == 8
    rec = Recommender.load(data_root, "ml-100k")
    recs = rec.for_user("42", 7)
    seen = {rec.item_ids[i] for i in rec.rated(rec.user_index["42"])[0]}
    assert len({r.item_id for r in recs}) == 7 and seen.isdisjoint(r.item_id for r in recs)
    titles = set(rec.titles.values())
    for line, r in zip(lines[1:], recs):
        assert r.title in line and r.title in titles
        assert r.because and all(b in titles for b in r.because) and r.because[0] in line


def test_likes_fold_in_a_new_user_from_titles(data_root, monkeypatch, capsys):
    monkeypatch.setenv("LAB_DATA_DIR", str(data_root))
    assert main(["recommend", "--likes", "toy story, FARGO (1996), Heat", "-n", "5"]) == 0
    lines = _lines(capsys)
    assert "Toy Story (1995); Fargo (1996); Heat (1995)" in lines[0] and len(lines) == 6
    rec = Recommender.load(data_root, "ml-100k")
    liked, recs = rec.for_likes(["Toy Story", "Fargo", "Heat"], 5)
    assert {rec.item_ids[i] for i in liked}.isdisjoint(r.item_id for r in recs)
    # A title with a comma of its own survives the comma-separated list.
    known = {"usual suspects", "fargo"}
    assert split_titles("Usual Suspects, The, Fargo", known) == ["Usual Suspects, The", "Fargo"]
    for typed in ("The Usual Suspects", "usual suspects (1995)", "Usual Suspects, The"):
        assert rec.title(rec.match(typed)) == "Usual Suspects, The (1995)"


def test_an_unknown_title_lists_near_matches(data_root, monkeypatch, capsys):
    monkeypatch.setenv("LAB_DATA_DIR", str(data_root))
    assert main(["recommend", "--likes", "Toy Story, Fargoo"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "'Fargoo'" in err and "Fargo (1996)" in err
    rec = Recommender.load(data_root, "ml-100k")
    with pytest.raises(RecommendInputError, match="near matches: .*Heat \\(1995\\)"):
        rec.match("Heat (1999)")  # the year, given, must agree
    assert main(["recommend", "--user", "99999"]) == 2
    assert "no user '99999'" in capsys.readouterr().err
