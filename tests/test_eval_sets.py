"""The development sets are apart from the test sets: no shared question, page or answer; the
dev QA set checks out against the corpus pages; the dev claim set rewords, and keeps to papers
the test claims do not use where it can."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest

from lab_pipelines.elevate.claimset import load_claims
from lab_pipelines.elevate.critic import quoted
from lab_pipelines.elevate.perturb import PERTURBATIONS
from lab_pipelines.paths import REPO_ROOT
from lab_pipelines.rag.qa import load_qa, normalize_answer

EVAL = REPO_ROOT / "data" / "eval"
PAPERS = REPO_ROOT / "data" / "papers"
DEV, TEST = load_qa(EVAL / "rag_dev.jsonl"), load_qa(EVAL / "rag_qa.jsonl")


def test_dev_qa_set_is_large_mixed_and_partly_unanswerable() -> None:
    assert len(DEV) >= 150
    unanswerable = [item for item in DEV if not item.answerable]
    assert len(unanswerable) >= 0.15 * len(DEV)
    assert all(not item.answers and not item.source for item in unanswerable)
    types = Counter(item.type for item in DEV)
    assert set(types) == {"number", "name", "date", "method", "definition"}
    assert min(types.values()) >= 8


def test_dev_and_test_share_no_question_page_or_answer() -> None:
    test_questions = {normalize_answer(item.question) for item in TEST}
    assert not [i.id for i in DEV if normalize_answer(i.question) in test_questions]
    test_pages = {(item.source, item.page) for item in TEST}
    assert not [i.id for i in DEV if i.answerable and (i.source, i.page) in test_pages]
    test_answers = {normalize_answer(a) for item in TEST for a in item.answers}
    assert not [(i.id, a) for i in DEV for a in i.answers if normalize_answer(a) in test_answers]
    triples = {(i.source, i.page, normalize_answer(a)) for i in TEST for a in i.answers}
    assert not {(i.source, i.page, normalize_answer(a)) for i in DEV for a in i.answers} & triples


def test_dev_qa_set_verifies_against_the_corpus() -> None:
    sources = {item.source for item in DEV if item.answerable}
    missing = sorted(s for s in sources if not (PAPERS / s).is_file())
    if missing:
        pytest.skip(f"{len(missing)} cited PDFs not in {PAPERS} (run `make setup` to fetch the "
                    f"corpus), e.g. {missing[0]}")
    result = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "verify_qa.py"),
                             "--qa", str(EVAL / "rag_dev.jsonl"), "--papers", str(PAPERS)],
                            check=False, capture_output=True, text=True, cwd=REPO_ROOT,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    assert f"{len(DEV)} questions over {len(sources)} PDFs; 0 problems" in result.stdout


CLAIMS_DEV, CLAIMS_TEST = load_claims(EVAL / "claims_dev.jsonl"), load_claims(EVAL / "claims.jsonl")


def test_dev_claims_reword_and_keep_apart_from_the_test_claims() -> None:
    assert len(CLAIMS_DEV) >= 250
    assert not {c.source for c in CLAIMS_DEV} & {c.source for c in CLAIMS_TEST}
    assert not {normalize_answer(c.claim) for c in CLAIMS_DEV} & {
        normalize_answer(c.claim) for c in CLAIMS_TEST}
    supported = [c for c in CLAIMS_DEV if c.label == "supported"]
    assert 0.4 <= len(supported) / len(CLAIMS_DEV) <= 0.6
    # Every supported claim is a rewording, never a span copied from its evidence.
    assert not [c.claim for c in supported if quoted(c.claim, [c.evidence])]
    assert {c.rewording for c in supported} == {"voice", "synonyms", "reorder", "number_words",
                                                "merge"}
    contradicted = Counter(c.perturbation for c in CLAIMS_DEV if c.label == "contradicted")
    assert set(contradicted) <= set(PERTURBATIONS) and min(contradicted.values()) >= 10
