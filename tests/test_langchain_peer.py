"""The `langchain_default` peer: the tutorial's recipe over a real paper in a Chroma collection
with our MiniLM embeddings, built once per library content, retrieving the right page, and
its answers scored by the judge every rag_benchmark row uses."""

from __future__ import annotations

import pytest
from conftest import corpus_pdf

from lab_pipelines import models
from lab_pipelines.rag import benchmark, langchain_peer
from lab_pipelines.rag.generate import Generator
from lab_pipelines.rag.qa import QAItem

ATTENTION = "attention_is_all_you_need_1706.03762.pdf"


@pytest.fixture(scope="module")
def embedder():
    return models.load_embedder()


@pytest.fixture(scope="module")
def store_root(tmp_path_factory):
    return tmp_path_factory.mktemp("chroma")


@pytest.fixture(scope="module")
def store(store_root, embedder):
    return langchain_peer.open_store([corpus_pdf(ATTENTION)], embedder,
                                     models.EMBEDDER_DEFAULT, store_root)


def test_recipe_chunks_pages_as_the_tutorial_does():
    pages = langchain_peer.load_pages([corpus_pdf(ATTENTION)])
    assert len(pages) == 15 and pages[2].metadata["page"] == 2
    chunks = langchain_peer.split_pages(pages)
    assert max(len(c.page_content) for c in chunks) <= 1000
    assert {c.metadata["page"] for c in chunks} == set(range(15))  # a chunk stays in its page


def test_chroma_collection_retrieves_the_right_page_and_is_reused(store, store_root, embedder):
    found = langchain_peer.retrieve(store, "How many identical layers is the encoder stack "
                                           "composed of?", 4)
    # "The encoder is composed of a stack of N = 6 identical layers" is on page 3.
    assert found[0].file_name == ATTENTION and found[0].page_start == 3
    assert "identical layers" in found[0].text or "identical layers" in found[1].text
    # Our embedder is the one Chroma uses: its own default would download a model.
    assert store.embeddings.model is embedder
    built = sorted(p.name for p in store_root.iterdir())
    again = langchain_peer.open_store([corpus_pdf(ATTENTION)], embedder,
                                      models.EMBEDDER_DEFAULT, store_root)
    assert sorted(p.name for p in store_root.iterdir()) == built  # same bytes: no rebuild
    assert again._collection.count() == store._collection.count() > 40


def test_peer_answers_are_scored_like_every_other_row(store, tiny_qwen_dir):
    model, tokenizer = models.load_causal_lm(str(tiny_qwen_dir))
    item = QAItem(id="t1", question="How many identical layers does the encoder stack have?",
                  answers=("6",), source=ATTENTION, page=3)
    rows = langchain_peer.run_questions([item], Generator(model, tokenizer), store)
    row = rows.row(0, named=True)
    assert row["method"] == langchain_peer.METHOD and row["gold_rank"] == 1
    assert row["correct"] + row["abstained"] + row["hallucinated"] == 1
    summary = benchmark.summarize(rows)
    assert summary["method"].to_list() == [langchain_peer.METHOD]
    assert summary["retrieval_recall_at_5"][0] == 1.0
