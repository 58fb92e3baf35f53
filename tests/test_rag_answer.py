"""RAG answering: retrieval on real papers, the corpus-trained re-ranker, the three methods end
to end, the causal-LM loading path, and the `rag_benchmark` asset in-process."""

from __future__ import annotations

import json
import shutil

import dagster as dg
import numpy as np
import polars as pl
import pytest
import torch

from assets_defs.rag_answer import generator_model, rag_benchmark, reranker_model
from assets_defs.resources import ModelRegistry, resources_for
from lab_pipelines import models
from lab_pipelines.paths import REPO_ROOT
from lab_pipelines.rag import benchmark, rerank
from lab_pipelines.rag.answer import (
    AnswerChecks,
    answer_advanced,
    answer_naive,
    answer_vanilla,
    fuse_ranks,
    read_answer,
)
from lab_pipelines.rag.generate import Generator, build_prompt, is_abstention
from lab_pipelines.rag.index import embed_texts, sync_index
from lab_pipelines.rag.library import build_library, scan_library
from lab_pipelines.rag.qa import contains_answer, load_qa
from lab_pipelines.rag.search import PaperSearch
from lab_pipelines.tables import read_table

PAPERS = REPO_ROOT / "data" / "papers"
FIXTURE_PDFS = ["attention_is_all_you_need_1706.03762.pdf", "zoo__zoo-quickref.pdf",
                "sandwich__sandwich.pdf"]
QA_FILE = REPO_ROOT / "data" / "eval" / "rag_qa.jsonl"


@pytest.fixture(scope="module")
def embedder():
    return models.load_embedder()


# Eight real papers, ~440 chunks: enough pseudo-queries for the re-ranker to learn from while
# two whole papers stay held out.
TRAINING_PDFS = ["zoo__zoo.pdf", "quantreg__rq.pdf", "sandwich__sandwich.pdf",
                 "attention_is_all_you_need_1706.03762.pdf", "strucchange__strucchange-intro.pdf",
                 "lme4__Theory.pdf", "survival__concordance.pdf", "glmnet__Coxnet.pdf"]


def _indexed_library(root, names, embedder) -> pl.DataFrame:
    """The papers chunked and indexed into LanceDB under `root`, as the ingestion assets would."""
    missing = [name for name in names if not (PAPERS / name).exists()]
    if missing:
        pytest.skip(f"papers not fetched (run `make setup`): {missing}")
    (root / "papers").mkdir()
    for name in names:
        shutil.copy(PAPERS / name, root / "papers" / name)
    built = build_library(scan_library(root / "papers"))
    built.chunks.write_parquet(root / "chunks.parquet")
    sync_index(root / "lancedb", built.chunks, lambda t: embed_texts(embedder, t), 384)
    return built.chunks


@pytest.fixture(scope="module")
def library(tmp_path_factory, embedder):
    """Three real papers, chunked and indexed."""
    root = tmp_path_factory.mktemp("rag_lab")
    return root, _indexed_library(root, FIXTURE_PDFS, embedder)


@pytest.fixture(scope="module")
def training_library(tmp_path_factory, embedder):
    root = tmp_path_factory.mktemp("rag_train")
    _indexed_library(root, TRAINING_PDFS, embedder)
    return root


@pytest.fixture(scope="module")
def search(library, embedder):
    root, _ = library
    return PaperSearch(root / "lancedb", lambda q: embed_texts(embedder, [q])[0])


def _known_passages(chunks: pl.DataFrame) -> list[tuple[str, str]]:
    """(a sentence from the middle of the paper, its file) per paper."""
    out = []
    for name in FIXTURE_PDFS:
        rows = chunks.filter(pl.col("file_name") == name)
        text = rows["text"][rows.height // 2]
        sentence = max(rerank.split_sentences(text), key=len)
        out.append((sentence, name))
    return out


@pytest.mark.parametrize("mode", ["dense", "keyword", "hybrid"])
def test_retrieval_returns_the_right_paper_for_known_passages(library, search, mode):
    _, chunks = library
    for sentence, name in _known_passages(chunks):
        top = getattr(search, mode)(sentence, 3)
        assert top[0].file_name == name, (mode, sentence[:60], [p.file_name for p in top])


def test_hard_negatives_exclude_source_and_overlapping_neighbours(library, embedder):
    root, _ = library
    chunks, vectors = rerank.read_index(root / "lancedb")
    queries = rerank.mine_pseudo_queries(chunks, 20, keep_sentence_prob=1.0, seed=0)
    groups = rerank.add_hard_negatives(queries, chunks, vectors,
                                       embed_texts(embedder, queries["query"].to_list()), 3)
    assert len(groups) >= 15
    for g in groups:
        assert g.query in g.positive  # kept with probability 1 here
        assert all(g.query not in n for n in g.negatives)
        assert g.positive not in g.negatives


def test_pseudo_queries_lie_inside_what_the_cross_encoder_reads(library, embedder):
    root, _ = library
    config = rerank.RerankerConfig(n_queries=80, max_length=128, keep_sentence_prob=1.0)
    train, heldout = rerank.build_training_set(
        root / "lancedb", lambda t: embed_texts(embedder, t), config)
    tokenizer = rerank.init_cross_encoder(config, "cpu").tokenizer
    assert len(train) + len(heldout) >= 40
    for g in train + heldout:
        enc = tokenizer(g.query, g.positive, truncation="longest_first", max_length=128,
                        return_offsets_mapping=True)
        read_up_to = max(end for (_, end), side in zip(enc["offset_mapping"], enc.sequence_ids())
                         if side == 1)
        assert g.positive.index(g.query) + len(g.query) <= read_up_to, g.query[:60]


def test_reranker_beats_its_untrained_initialisation_and_reloads_identically(training_library,
                                                                            embedder):
    root = training_library
    # The library-wide defaults (three layers, one pass) on a smaller library at 128 tokens:
    # ~60 steps, about a minute on 2 cores. One layer does not learn at all; measured.
    config = rerank.RerankerConfig(n_queries=600, queries_per_chunk=2, max_length=128,
                                   heldout_fraction=0.25, seed=0)
    train, heldout = rerank.build_training_set(
        root / "lancedb", lambda t: embed_texts(embedder, t), config)
    assert len(train) >= 300 and len(heldout) >= 50
    assert {g.doc_id for g in heldout}.isdisjoint({g.doc_id for g in train})  # split by paper
    cross_encoder, report = rerank.train_reranker(train, heldout, config)
    assert report.steps == -(-len(train) // config.batch_groups)
    assert report.chance == 0.25
    # Papers unseen in training: the fine-tuned model must rank the positive first clearly
    # more often than the same network with its fresh head (measured 0.21 -> 0.66 at seed 0).
    assert report.heldout_accuracy_after >= report.heldout_accuracy_before + 0.15, report
    saved = rerank.save_reranker(cross_encoder, root / "reranker")
    reloaded = models.load_cross_encoder(str(saved))
    assert reloaded.max_seq_length == 128  # the trained length travels with the model
    assert rerank.group_accuracy(reloaded, heldout) == pytest.approx(
        report.heldout_accuracy_after, abs=1e-9)
    scorer = rerank.Reranker(reloaded)
    hits = sum(int(scorer.score(g.query, [g.positive, *g.negatives]).argmax() == 0)
               for g in heldout)
    assert hits / len(heldout) == pytest.approx(report.heldout_accuracy_after, abs=1e-9)


def test_a_classic_sequence_classification_cross_encoder_can_replace_ours(tmp_path):
    """What `models.reranker` points at is usually a hub CrossEncoder: a BERT with a
    classification head, not our modular folder. A tiny random one saved like a hub folder."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(models.resolve_model_dir(models.EMBEDDER_DEFAULT))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, num_labels=1)
    BertForSequenceClassification(config).eval().save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    reranker = rerank.Reranker(models.load_cross_encoder(str(tmp_path), max_length=64))
    passages = ["Attention maps queries to keys.", "Zoo handles irregular time series.", "x"]
    scores = reranker.score("What does attention map?", passages)
    assert scores.shape == (3,) and np.isfinite(scores).all() and len(set(scores.tolist())) == 3
    # Same numbers as sentence-transformers' own predict (raw logits, no sigmoid).
    expected = reranker.cross_encoder.predict(
        [("What does attention map?", p) for p in passages], activation_fn=torch.nn.Identity())
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-5)


def test_tiny_causal_lm_loads_with_sdpa_on_cpu_and_generates(tiny_lm_dir):
    model, tokenizer = models.load_causal_lm(str(tiny_lm_dir), "cpu")
    assert model.config._attn_implementation == models.attention_implementation("cpu") == "sdpa"
    generator = Generator(model, tokenizer, "completion", max_new_tokens=4)
    assert isinstance(generator.answer("What is attention?", ["Attention maps queries."]), str)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_tiny_qwen2_loads_and_reads_in_the_chat_format(tiny_qwen_dir, dtype):
    model, tokenizer = models.load_causal_lm(str(tiny_qwen_dir), "cpu", dtype=dtype)
    assert model.config.model_type == "qwen2" and model.dtype == models.DTYPES[dtype]
    generator = Generator(model, tokenizer, "chat", max_new_tokens=6)
    passage = "The big model reaches a BLEU score of 28.4 on English-to-German."
    assert isinstance(generator.answer("What BLEU score does it reach?", [passage]), str)
    stats = generator.last
    assert stats.prompt_tokens > 40 and 1 <= stats.new_tokens <= 6
    assert stats.prefill_s > 0 and stats.decode_s >= 0


def test_flash_attention_only_when_importable_on_cuda(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "flash_attn" else real(name, *a))
    assert models.attention_implementation("cuda:0") == "flash_attention_2"
    assert models.attention_implementation("cpu") == "sdpa"


def test_hub_model_not_on_disk_fails_with_one_clear_line(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    for load in (lambda: models.load_causal_lm("nobody-here/not-a-model"),
                 lambda: models.load_cross_encoder("nobody-here/not-a-reranker")):
        with pytest.raises(models.ModelNotAvailable) as err:
            load()
        message = str(err.value)
        assert "\n" not in message and "nobody-here/not-a-" in message


def test_prompts_and_abstention():
    prompt = build_prompt("Which year?", ["It opened in 1999."], "completion")
    assert prompt.endswith("Question: Which year?\nAnswer:") and "1999" in prompt
    assert "Passage" not in build_prompt("Which year?", None, "completion")
    assert is_abstention("I don't know.") and is_abstention("The passages do not mention it; "
                                                            "not mentioned.")
    assert not is_abstention("28.4 BLEU")
    with pytest.raises(ValueError, match="prompt format"):
        build_prompt("q", None, "poem")


def test_each_method_runs_end_to_end(search, tiny_lm_dir):
    model, tokenizer = models.load_causal_lm(str(tiny_lm_dir), "cpu")
    generator = Generator(model, tokenizer, "completion", max_new_tokens=4)
    config = rerank.RerankerConfig(n_layers=1, max_length=64)
    reranker = rerank.Reranker(rerank.init_cross_encoder(config, "cpu"))
    question = "What BLEU score does the big Transformer reach on English-to-German?"
    vanilla = answer_vanilla(question, generator)
    naive = answer_naive(question, generator, search, k=3)
    advanced = answer_advanced(question, generator, search, reranker, pool_k=8, top_n=2)
    assert vanilla.ranked == () and vanilla.generation_s > 0
    assert naive.prompt_passages == 3 and len(naive.ranked) == 5
    assert advanced.prompt_passages == 2 and len(advanced.ranked) == len(advanced.pool) == 8
    assert {p.chunk_id for p in advanced.ranked} == {p.chunk_id for p in advanced.pool}
    assert advanced.abstained or advanced.citations


def test_rank_fusion_lets_the_cross_encoder_vote_without_overriding_retrieval():
    pool_rank = np.arange(4)
    # Both agree: order unchanged. Swapped neighbours tie on RRF: the pool's order wins.
    assert fuse_ranks(pool_rank, pool_rank).tolist() == [0, 1, 2, 3]
    assert fuse_ranks(pool_rank, np.array([1, 0, 2, 3])).tolist() == [0, 1, 2, 3]
    # The cross-encoder's favourite, third in the pool, moves up past the items it ranks last.
    assert fuse_ranks(pool_rank, np.array([3, 2, 0, 1])).tolist() == [2, 0, 1, 3]


def test_summary_scores_answers_with_the_shared_definition():
    reader = {"prompt_tokens": 100, "new_tokens": 5, "prefill_s": 0.5, "decode_s": 0.4}
    rows = [
        {"method": "naive", "correct": True, "abstained": False, "hallucinated": False,
         "withheld": False, "withheld_correct": False, **reader,
         "gold_rank": 1, "gold_rank_before_rerank": 1, "latency_s": 1.0, "retrieval_s": 0.1},
        {"method": "naive", "correct": False, "abstained": True, "hallucinated": False,
         "withheld": True, "withheld_correct": True, **reader,
         "gold_rank": 7, "gold_rank_before_rerank": 7, "latency_s": 3.0, "retrieval_s": 0.3},
        {"method": "naive", "correct": False, "abstained": False, "hallucinated": True,
         "withheld": False, "withheld_correct": False, **reader,
         "gold_rank": None, "gold_rank_before_rerank": None, "latency_s": 2.0,
         "retrieval_s": 0.2},
    ]
    row = benchmark.summarize(pl.DataFrame(rows)).row(0, named=True)
    assert row["accuracy"] == row["abstention_rate"] == row["hallucination_rate"] == \
        pytest.approx(1 / 3)
    assert row["retrieval_recall_at_5"] == pytest.approx(1 / 3)
    assert row["latency_p50_s"] == pytest.approx(2.0)
    assert row["retrieval_p50_ms"] == pytest.approx(200.0)
    assert row["withheld_rate"] == pytest.approx(1 / 3) and row["withheld_correct"] == 1
    # 300 prompt tokens in 1.5 s of prefill; 4 tokens after the first per answer in 1.2 s.
    assert row["prefill_tokens_per_s"] == pytest.approx(200.0)
    assert row["decode_tokens_per_s"] == pytest.approx(10.0)


def test_rag_benchmark_asset_writes_rows_and_answers(library, tiny_lm_dir, monkeypatch, tmp_path):
    root, _ = library
    monkeypatch.setenv("LAB_DATA_DIR", str(root))
    items = [i for i in load_qa(QA_FILE) if i.source in FIXTURE_PDFS][:2]
    qa_file = tmp_path / "qa.jsonl"
    qa_file.write_text("".join(json.dumps({"id": i.id, "question": i.question,
                                           "answers": list(i.answers), "source": i.source,
                                           "page": i.page}) + "\n" for i in items))
    # The tiny local LM stands in for SmolLM2 only to keep the test fast: the same loader path
    # (a local folder spec) that serves a user's Llama folder.
    resources = {**resources_for("embedded"), "models": ModelRegistry(generator=str(tiny_lm_dir))}
    result = dg.materialize(
        [generator_model, reranker_model, rag_benchmark],
        resources=resources,
        run_config={"ops": {
            "reranker_model": {"config": {"n_queries": 60, "n_layers": 1, "max_length": 128}},
            "rag_benchmark": {"config": {"qa_file": str(qa_file), "max_new_tokens": 8,
                                         "pool_k": 6, "prompt_format": "completion",
                                         "compress_to": 4, "peer": False}},
        }},
    )
    assert result.success
    table = read_table("rag_benchmark", root / "lab.duckdb")
    assert sorted(table["method"]) == ["advanced", "naive", "oracle", "vanilla"]
    assert (table["n_questions"] == 2).all()
    answers = pl.read_parquet(next((root / "rag_benchmark_answers").glob("*.parquet")))
    assert answers.height == 8 and answers["answer"].dtype == pl.Utf8
    # The oracle reads the gold page itself: no retrieval ranks to report, tokens counted.
    oracle = table.filter(pl.col("method") == "oracle").row(0, named=True)
    assert oracle["retrieval_recall_at_5"] is None and oracle["prefill_tokens_per_s"] > 0
    advanced = table.filter(pl.col("method") == "advanced").row(0, named=True)
    assert 0 <= advanced["retrieval_recall_at_5"] <= 1


def test_oracle_passage_is_the_gold_page_chunk_holding_the_answer(search):
    items = [i for i in load_qa(QA_FILE) if i.source in FIXTURE_PDFS]
    assert items
    for item in items:
        gold = benchmark.oracle_passage(item, search)
        assert gold is not None and gold.file_name == item.source
        assert gold.page_start <= item.page <= gold.page_end
        # The QA set is verified against its pages, so the chunk holds a gold answer.
        assert any(contains_answer(gold.text, a) for a in item.answers), item.id


def test_batched_reading_matches_reading_one_prompt_at_a_time(tiny_lm_dir):
    model, tokenizer = models.load_causal_lm(str(tiny_lm_dir), "cpu")
    generator = Generator(model, tokenizer, "completion", max_new_tokens=4)
    passages = ["Attention maps queries.",
                ("A much longer passage about recurrent networks and how they process tokens "
                 "one after another."),
                "Short."]
    prompts = [build_prompt("What does attention map?", [p], "completion") for p in passages]
    batch = generator.complete_batch(prompts)
    assert len(batch) == 3 and all(confidence <= 0 for _, confidence in batch)
    # Left padding changes nothing: each prompt gets the same greedy answer as alone.
    assert [text for text, _ in batch] == [generator.complete(p) for p in prompts]
    assert generator.last.new_tokens >= 1 and generator.last.confidence <= 0


def test_reading_in_both_orders_keeps_the_more_confident_answer(tiny_lm_dir):
    model, tokenizer = models.load_causal_lm(str(tiny_lm_dir), "cpu")
    generator = Generator(model, tokenizer, "completion", max_new_tokens=4)
    question = "What does attention map?"
    passages = ["Attention maps queries to keys.", "Recurrent networks read tokens in order."]
    readings = generator.answers(question, [passages, passages[::-1]])
    both = read_answer(generator, question, passages, read_reversed=True)
    assert generator.last.prompt_tokens > 0
    best = max(readings, key=lambda r: (not is_abstention(r[0]), r[1]))
    assert (both.raw_text, both.stats.confidence) == best
    one = read_answer(generator, question, passages)
    assert (one.raw_text, one.stats.confidence) == readings[0]
    # A reader sure of nothing is withheld by the confidence gate, whatever it said.
    gated = read_answer(generator, question, passages, AnswerChecks(min_confidence=0.0))
    assert gated.abstained and (gated.withheld or is_abstention(gated.raw_text))
