"""The RAG reader: the packaged Qwen GGUF's integrity check, the grounding check, and context
compression (the tiny Qwen2 loading test sits beside the other loaders in test_rag_answer)."""

from __future__ import annotations

import hashlib

import pytest

from lab_pipelines import models
from lab_pipelines.rag.compress import compress_passages
from lab_pipelines.rag.generate import ABSTAIN
from lab_pipelines.rag.grounding import (
    check_grounding,
    ground_answer,
    numbers,
    question_alignment,
)
from lab_pipelines.rag.index import embed_texts

PASSAGE = ("The big transformer model reaches a BLEU score of 28.4 on the WMT 2014 "
           "English-to-German translation task, trained for 3.5 days on eight P100 GPUs.")


def _parts(tmp_path, payloads: list[bytes]) -> list:
    paths = []
    for i, payload in enumerate(payloads, start=1):
        path = tmp_path / f"part{i:02d}.bin"
        path.write_bytes(payload)
        paths.append(path)
    return paths


def test_joined_bytes_are_checked_and_a_one_byte_change_is_refused(tmp_path):
    payloads = [b"GGUF" + bytes(range(256)) * 40, bytes(range(255, -1, -1)) * 40, b"tail"]
    pinned = hashlib.sha256(b"".join(payloads)).hexdigest()
    good = models.join_verified(_parts(tmp_path, payloads), tmp_path / "model.gguf", pinned)
    assert good.read_bytes() == b"".join(payloads)

    altered = [payloads[0], payloads[1][:100] + b"\x00" + payloads[1][101:], payloads[2]]
    assert altered[1] != payloads[1]
    target = tmp_path / "altered" / "model.gguf"
    with pytest.raises(models.ModelIntegrityError) as err:
        models.join_verified(_parts(tmp_path, altered), target, pinned)
    assert "\n" not in str(err.value) and pinned in str(err.value)
    # Nothing is left where a loader could pick it up.
    assert not target.exists() and not list(target.parent.glob("*"))


def test_packaged_reader_parts_join_to_the_pinned_bytes(tmp_path):
    try:
        gguf = models.PACKAGED_GENERATORS["Qwen2.5-Coder-0.5B-Instruct"](tmp_path)
    except models.ModelNotAvailable as err:
        pytest.skip(str(err))
    assert gguf.stat().st_size == models.QWEN_BYTES
    assert gguf.read_bytes()[:4] == b"GGUF"


def test_unknown_packaged_generator_fails_with_one_line():
    with pytest.raises(models.ModelNotAvailable, match="Qwen2.5-Coder-0.5B-Instruct"):
        models.packaged_generator_name("packaged:no-such-reader")
    assert models.packaged_generator_name("some/folder") is None


def test_grounding_keeps_a_copied_answer_and_withholds_an_invented_number():
    assert check_grounding("28.4 BLEU", [PASSAGE]).grounded
    assert check_grounding("eight P100 GPUs", [PASSAGE]).grounded
    assert ground_answer("3.5 days", ["Other text.", PASSAGE], ABSTAIN)[0] == "3.5 days"

    text, result = ground_answer("a BLEU score of 41.8", [PASSAGE], ABSTAIN)
    assert text == ABSTAIN and result.missing_numbers == ("41.8",)
    assert "41.8" in result.reason
    # Words from somewhere else entirely: the number is fine, the words are not backed.
    invented = check_grounding("28.4 hectares of vineyards in Burgundy", [PASSAGE])
    assert not invented.grounded and invented.word_share < 0.5


def test_an_answer_lifted_from_a_sentence_about_something_else_is_withheld():
    passages = [("The big transformer reaches 28.4 BLEU on English-to-German translation. "
                 "On English-to-French it reaches 41.0 BLEU, outperforming all published "
                 "single models.")]
    question = "What BLEU score does the big transformer reach on English-to-German?"
    # Both figures are in the passage, so the lexical check alone passes the wrong one too.
    assert check_grounding("41.0", passages).grounded
    right = check_grounding("28.4", passages, question=question, min_alignment=0.25)
    wrong = check_grounding("41.0", passages, question=question, min_alignment=0.25)
    assert right.grounded and right.alignment > wrong.alignment
    assert ground_answer("41.0", passages, ABSTAIN, question=question, min_alignment=0.5
                         )[0] == ABSTAIN
    assert "about the question" in check_grounding(
        "41.0", passages, question=question, min_alignment=0.5).reason
    # An answer no sentence holds was composed by the reader, not read.
    assert question_alignment(question, "about 28 BLEU points", passages) == 0.0
    # A sentence split at an abbreviation still holds the answer across the cut.
    dated = ["The lme4 paper was published online in Oct. 2015 by the journal."]
    assert question_alignment("When was the lme4 paper published online?", "Oct. 2015",
                              dated) > 0.5


def test_numbers_are_compared_in_one_canonical_form():
    assert numbers("37,000 tokens") == numbers("37000 tokens") == {"37000"}
    assert numbers("a rate of 0.50") == {"0.5"} and numbers("P100") == {"100"}
    assert check_grounding("37,000", ["a vocabulary of about 37000 tokens"]).grounded


def test_compression_keeps_the_sentences_nearest_the_question():
    embedder = models.load_embedder()
    passages = [
        "Penguins live in the southern hemisphere. They cannot fly. They swim very well.",
        ("The model was trained on eight GPUs. Training took three and a half days. "
         "The learning rate followed a warm-up schedule."),
    ]
    kept = compress_passages("How long did training take?", passages,
                             lambda texts: embed_texts(embedder, texts), keep=1)
    assert kept == ["Training took three and a half days."]
    # Asking to keep more sentences than there are returns the passages unchanged.
    assert compress_passages("q", passages, lambda t: embed_texts(embedder, t), 10) == passages


def test_compression_shows_a_sentence_shared_by_overlapping_chunks_once():
    embedder = models.load_embedder()
    shared = "Training took three and a half days."
    passages = [f"The model was trained on eight GPUs. {shared}",
                f"{shared} The learning rate followed a warm-up schedule."]
    kept = compress_passages("How long did training take?", passages,
                             lambda texts: embed_texts(embedder, texts), keep=2)
    assert " ".join(kept).count(shared) == 1
