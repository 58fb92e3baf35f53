"""`lab ask` on three real papers indexed on the spot, read by the packaged 0.5B reader: a
cited answer, verified claim by claim; an abstention on a question the papers cannot answer;
the advanced answer without verification; and the one-line error when there is no index."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import SMALL_REAL_PDFS, corpus_pdf

from lab_pipelines import models
from lab_pipelines.cli import main
from lab_pipelines.paths import REPO_ROOT
from lab_pipelines.rag.index import embed_texts, sync_index
from lab_pipelines.rag.library import build_library, scan_library

ENCODER = "How many identical layers is the encoder stack of the Transformer composed of?"
ATTENTION = "attention_is_all_you_need_1706.03762.pdf"
# Nothing in the three papers (a zoo design note, glmnet's relaxed fits, the Transformer).
UNANSWERABLE = "What is the boiling point of liquid nitrogen at sea level in kelvin?"


def _reader_cache(tmp_path_factory):
    """The packaged reader's safetensors copy: the one `make demo` left under data/models if
    there is one (read only), else converted once for this module."""
    name = models.packaged_generator_name(models.GENERATOR_DEFAULT)
    built = REPO_ROOT / "data" / "models" / name
    if (built / "config.json").exists():
        return built
    try:
        return models.cache_packaged_generator(models.GENERATOR_DEFAULT,
                                               tmp_path_factory.mktemp("reader"))
    except models.ModelNotAvailable as err:
        pytest.fail(f"the packaged reader is not installed ({err})")


@pytest.fixture(scope="module")
def asked_library(tmp_path_factory, small_library_module):
    """A data directory holding the three papers' index and a link to the reader's copy."""
    root = tmp_path_factory.mktemp("ask_data")
    built = build_library(scan_library(small_library_module))
    embedder = models.load_embedder()
    sync_index(root / "lancedb", built.chunks, lambda t: embed_texts(embedder, t), 384)
    (root / "models").mkdir()
    reader = _reader_cache(tmp_path_factory)
    (root / "models" / reader.name).symlink_to(reader, target_is_directory=True)
    return root


@pytest.fixture(scope="module")
def small_library_module(tmp_path_factory):
    folder = tmp_path_factory.mktemp("papers")
    for name in SMALL_REAL_PDFS:
        (folder / name).symlink_to(corpus_pdf(name))
    return folder


def _cites_page(citation: str, pdf: str, page: int) -> bool:
    """'file.pdf, p. 3' or 'file.pdf, pp. 2-3' names `page` of `pdf`."""
    name, _, pages = citation.rpartition(", ")
    first, _, last = pages.removeprefix("pp. ").removeprefix("p. ").partition("-")
    return name == pdf and int(first) <= page <= int(last or first)


def _ask(monkeypatch, root, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setenv("LAB_DATA_DIR", str(root))
    code = main(["ask", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_lab_ask_gives_a_verified_answer_cited_to_the_right_page(asked_library, monkeypatch,
                                                                  capsys):
    # Two passages keep the reader's prompt short; the answer's page ranks first anyway.
    code, out, err = _ask(monkeypatch, asked_library, capsys, ENCODER, "--json", "-k", "2")
    assert code == 0
    answer = json.loads(out)  # one JSON object, notes on stderr
    assert answer["method"] == "elevate" and not answer["abstained"]
    assert "6" in answer["answer"].split() or "six" in answer["answer"].lower()
    shipped = [c for c in answer["claims"] if c["shipped"]]
    assert shipped and all(c["verdict"] == "supported" for c in shipped)
    # The encoder's six layers are stated on page 3 of the paper; a chunk that runs on from
    # page 2 is cited as "pp. 2-3", which holds page 3 too.
    assert any(_cites_page(c, ATTENTION, 3) for c in answer["citations"]), answer["citations"]
    assert "classifier" not in err  # rules alone by default, the development set's choice


def test_lab_ask_says_not_in_your_library_when_nothing_backs_an_answer(asked_library,
                                                                      monkeypatch, capsys):
    code, out, _ = _ask(monkeypatch, asked_library, capsys, UNANSWERABLE, "-k", "2")
    assert code == 0
    assert "Not in your library" in out and "Closest passages:" in out
    assert "Sources:" not in out


def test_lab_ask_without_verification_gives_the_advanced_answer(asked_library, monkeypatch,
                                                                capsys):
    code, out, _ = _ask(monkeypatch, asked_library, capsys, ENCODER, "--no-verify", "--json",
                        "-k", "2")
    assert code == 0
    answer = json.loads(out)
    assert answer["method"] == "advanced" and "6" in answer["answer"]
    assert all(c["verdict"] == "unchecked" for c in answer["claims"])
    assert any(c.startswith(f"{ATTENTION}, p") for c in answer["citations"])


def test_lab_ask_without_an_index_names_the_command_that_builds_it(tmp_path, monkeypatch,
                                                                   capsys):
    code, out, err = _ask(monkeypatch, tmp_path, capsys, ENCODER)
    assert code == 2 and not out
    assert err.count("\n") == 1 and "chunk_embeddings" in err and "dagster asset materialize" in err

    # The installed console script says the same, from a fresh process.
    lab = os.path.join(os.path.dirname(sys.executable), "lab")
    done = subprocess.run([lab, "ask", ENCODER], check=False, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "LAB_DATA_DIR": str(tmp_path / "empty")})
    assert done.returncode == 2 and done.stderr.strip().startswith("lab ask: no paper index")
    assert done.stderr.count("\n") == 1 and not done.stdout


def test_the_library_critic_is_the_rules_unless_the_classifier_is_asked_for(tmp_path):
    from lab_pipelines.cli.errors import LabInputError
    from lab_pipelines.rag.ask import library_critic

    rules, note = library_critic(tmp_path)
    assert rules.judge is None and note is None
    fallback, note = library_critic(tmp_path, kind="rules+classifier")
    assert fallback.judge is None and "claim_classifier" in note  # names what builds it
    with pytest.raises(LabInputError, match="choose one of rules"):
        library_critic(tmp_path, kind="llm")
