"""The paper library: parsing, quarantine, chunking, incremental index, search."""

from __future__ import annotations

import shutil

import polars as pl
import pytest

from conftest import SMALL_REAL_PDFS, corpus_pdf, write_broken_pdfs
from lab_pipelines.models import load_embedder
from lab_pipelines.rag.chunking import chunk_pages, split_spans
from lab_pipelines.rag.index import embed_texts, sync_index
from lab_pipelines.rag.library import build_library, scan_library
from lab_pipelines.rag.pdf_text import UnusablePdf, clean_text, parse_pdf
from lab_pipelines.rag.search import PaperSearch


@pytest.fixture(scope="module")
def embedder():
    return load_embedder(device="cpu")


def test_clean_text_repairs_ligatures_hyphens_and_t1_control_codes():
    assert clean_text("the \ufb01rst e\ufb00ect") == "the first effect"
    assert clean_text("the \x1crst \x1bect \x15 done") == "the first ffect \u2013 done"
    assert clean_text("comput-\nation of  the\t\tmodel") == "computation of the model"


def test_real_vignette_set_in_t1_fonts_reads_cleanly():
    pages = parse_pdf(corpus_pdf("survival__survival.pdf")).pages
    text = "\n".join(pages)
    assert "was the first" in text
    assert not any(ord(ch) < 32 and ch != "\n" for ch in text)


def test_each_kind_of_bad_pdf_is_rejected_with_its_reason(tmp_path):
    expected = write_broken_pdfs(tmp_path)
    for name, reason in expected.items():
        with pytest.raises(UnusablePdf) as err:
            parse_pdf(tmp_path / name)
        assert str(err.value).startswith(reason or "unreadable PDF"), (name, str(err.value))
        assert "\n" not in str(err.value)


def test_garbled_text_layer_is_rejected():
    with pytest.raises(UnusablePdf, match="garbled text layer"):
        parse_pdf(corpus_pdf("lme4__PLSvGLS.pdf"))


def test_spans_respect_size_overlap_and_cover_the_text():
    text = " ".join(f"Sentence number {i} says something about topic {i % 7}." for i in range(300))
    spans = split_spans(text, size=1000, overlap=200)
    assert all(end - start <= 1000 for start, end in spans)
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    for (s0, e0), (s1, _) in zip(spans, spans[1:]):
        assert s1 < e0, "consecutive chunks overlap"
        assert e0 - s1 <= 200
        assert text[s1 - 1] == " ", "chunks start at a word"
    assert all(text[e - 2:e] == ". " for _, e in spans[:-1]), "cuts fall on sentence ends"


def test_chunks_record_page_spans_and_offsets():
    pages = ["alpha " * 70, "beta " * 300, "gamma " * 50]
    chunks = chunk_pages(pages, size=1000, overlap=200)
    assert chunks[0].page_start == 1 and chunks[0].page_end == 2
    assert chunks[-1].page_end == 3
    joined = "\n\n".join(pages)
    assert all(joined[c.char_start:c.char_end].strip() == c.text for c in chunks)


def test_library_quarantines_bad_files_and_ingests_the_rest(small_library):
    expected = write_broken_pdfs(small_library)
    build = build_library(scan_library(small_library))
    assert set(build.quarantine["doc_id"]) == set(expected)
    assert set(build.chunks["doc_id"]) == {"zoo__zoo-design.pdf", "glmnet__relax.pdf",
                                           "attention_is_all_you_need_1706.03762.pdf"}
    assert build.chunks["chunk_id"].n_unique() == build.chunks.height
    assert build.chunks["text"].str.len_chars().max() <= 1000


def test_rebuild_parses_only_changed_documents(small_library):
    first = build_library(scan_library(small_library))
    again = build_library(scan_library(small_library), first.chunks, first.quarantine)
    assert again.parsed_docs == 0 and again.reused_docs == 3
    assert again.chunks.equals(first.chunks)

    shutil.copyfile(corpus_pdf("zoo__zoo-quickref.pdf"), small_library / "zoo__zoo-design.pdf")
    (small_library / "glmnet__relax.pdf").unlink()
    changed = build_library(scan_library(small_library), first.chunks, first.quarantine)
    assert changed.parsed_docs == 1
    assert "glmnet__relax.pdf" not in set(changed.chunks["doc_id"])
    old_ids = set(first.chunks.filter(pl.col("doc_id") == "zoo__zoo-design.pdf")["chunk_id"])
    new_ids = set(changed.chunks.filter(pl.col("doc_id") == "zoo__zoo-design.pdf")["chunk_id"])
    assert new_ids and not old_ids & new_ids


def test_duplicate_file_under_another_name_gets_its_own_chunk_ids(small_library):
    shutil.copyfile(small_library / "glmnet__relax.pdf", small_library / "relax_copy.pdf")
    chunks = build_library(scan_library(small_library)).chunks
    assert chunks["chunk_id"].n_unique() == chunks.height


def test_index_sync_embeds_only_new_chunks_and_drops_stale_ones(small_library, tmp_path,
                                                                embedder):
    db = tmp_path / "lancedb"
    calls = []

    def embed(texts):
        calls.append(len(texts))
        return embed_texts(embedder, texts)

    first = build_library(scan_library(small_library))
    stats = sync_index(db, first.chunks, embed, 384)
    assert stats.added == first.chunks.height and stats.deleted == 0

    stats = sync_index(db, first.chunks, embed, 384)
    assert stats.added == 0 and stats.deleted == 0 and len(calls) == 1

    (small_library / "zoo__zoo-design.pdf").unlink()
    second = build_library(scan_library(small_library), first.chunks, first.quarantine)
    stats = sync_index(db, second.chunks, embed, 384)
    removed = first.chunks.height - second.chunks.height
    assert stats.added == 0 and stats.deleted == removed > 0
    search = PaperSearch(db, lambda q: embed_texts(embedder, [q])[0])
    assert search.table.count_rows() == second.chunks.height


@pytest.fixture(scope="module")
def small_index(tmp_path_factory, embedder):
    folder = tmp_path_factory.mktemp("papers")
    for name in SMALL_REAL_PDFS:
        shutil.copyfile(corpus_pdf(name), folder / name)
    db = tmp_path_factory.mktemp("index") / "lancedb"
    sync_index(db, build_library(scan_library(folder)).chunks,
               lambda t: embed_texts(embedder, t), 384)
    return PaperSearch(db, lambda q: embed_texts(embedder, [q])[0])


@pytest.mark.parametrize("question, paper", [
    ("How many parallel attention heads does the Transformer use?",
     "attention_is_all_you_need_1706.03762.pdf"),
    ("What is the relaxed lasso and the gamma parameter in glmnet?", "glmnet__relax.pdf"),
    ("Design principles of the zoo class for indexed observations", "zoo__zoo-design.pdf"),
])
def test_hybrid_search_finds_the_right_paper(small_index, question, paper):
    search = small_index
    hits = search.hybrid(question, k=5)
    assert len(hits) == 5
    assert hits[0].file_name == paper
    assert sum(h.file_name == paper for h in hits) >= 4
    assert search.dense(question, k=1)[0].file_name == paper
