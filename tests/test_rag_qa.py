"""The gold QA set: answer normalisation, scoring, loading, and the committed file itself."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from lab_pipelines.paths import REPO_ROOT
from lab_pipelines.rag.qa import (
    Outcome,
    QAFormatError,
    UnknownSourceError,
    answer_is_correct,
    eval_split,
    load_qa,
    normalize_answer,
    resolve_source,
    resolve_sources,
    score,
)

QA_FILE = REPO_ROOT / "data" / "eval" / "rag_qa.jsonl"
PAPERS = REPO_ROOT / "data" / "papers"
VERIFY = REPO_ROOT / "scripts" / "verify_qa.py"
SMALL_PDF = "survival__tiedtimes.pdf"  # two pages: cheap to parse in a failure-path test


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Hello, World!", "hello world"),
        ("p < 0.05.", "p 0.05"),  # the decimal point survives, the full stop does not
        ("about 4.5 million", "about 4.5 million"),
        ("1,000 rows", "1,000 rows"),
        ("ﬁnite", "finite"),  # NFKC folds the ligature
        ("２８.４", "28.4"),  # and full-width digits
        ("Texas A&M  International\n\tUniversity", "texas a m international university"),
        ('"HC3" (the default)', "hc3 the default"),
        ("1986–1989", "1986 1989"),
        ("  ", ""),
    ],
)
def test_normalize_answer(raw: str, expected: str) -> None:
    assert normalize_answer(raw) == expected


@pytest.mark.parametrize(
    ("prediction", "answers", "correct"),
    [
        ("The big model scores 28.4 BLEU.", ["28.4"], True),
        ("It reaches 28.45 BLEU", ["28.4"], False),  # a longer number is a different number
        ("alpha is 0.5", ["5"], False),  # tokens, not substrings
        ("They were treated with METFORMIN.", ["metformin"], True),
        ("I don't know.", ["metformin"], False),
        ("Junyang Qian", ["Kenneth Tay", "Junyang Qian"], True),  # any accepted variant
        ("the kernel is Quadratic-Spectral", ["quadratic spectral"], True),
        ("anything", [], False),
    ],
)
def test_answer_is_correct(prediction: str, answers: list[str], correct: bool) -> None:
    assert answer_is_correct(prediction, answers) is correct


def _write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _record(**overrides: object) -> dict:
    record = {
        "id": "q001",
        "question": "What drug?",
        "answers": ["metformin"],
        "source": "x.pdf",
        "page": 1,
    }
    record.update(overrides)
    return record


def test_load_qa_reads_items(tmp_path: Path) -> None:
    items = load_qa(_write_jsonl(tmp_path / "qa.jsonl", [_record(), _record(id="q002", page=3)]))
    assert [(i.id, i.page, i.answers) for i in items] == [
        ("q001", 1, ("metformin",)),
        ("q002", 3, ("metformin",)),
    ]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (_record(page=0), "1-based"),
        (_record(page=True), "'page' must be int"),
        (_record(answers=[]), "non-empty list"),
        (_record(answers=["  "]), "non-empty list"),
        ({k: v for k, v in _record().items() if k != "source"}, "'source' must be str"),
    ],
)
def test_load_qa_rejects_bad_records_naming_the_line(
    tmp_path: Path, bad: dict, message: str
) -> None:
    path = _write_jsonl(tmp_path / "qa.jsonl", [_record(id="q000"), bad])
    with pytest.raises(QAFormatError, match=message) as err:
        load_qa(path)
    assert f"{path}:2" in str(err.value)


def test_load_qa_rejects_duplicate_ids_and_bad_json(tmp_path: Path) -> None:
    with pytest.raises(
        QAFormatError, match=r"qa\.jsonl:2: duplicate id 'q001' \(first on line 1\)"
    ):
        load_qa(_write_jsonl(tmp_path / "qa.jsonl", [_record(), _record()]))
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps(_record()) + "\n{not json\n", encoding="utf-8")
    with pytest.raises(QAFormatError, match=r"broken\.jsonl:2: not valid JSON"):
        load_qa(broken)


def _run_verify(qa: Path, papers: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(VERIFY), "--qa", str(qa), "--papers", str(papers)],
        check=False,
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=300,
    )


def _require_papers(names: set[str]) -> None:
    missing = sorted(n for n in names if not (PAPERS / n).is_file())
    if missing:
        pytest.skip(
            f"{len(missing)} cited PDFs not in {PAPERS} (run `make setup` to fetch the "
            f"corpus), e.g. {missing[0]}"
        )


def test_committed_qa_set_verifies_against_the_papers() -> None:
    items = load_qa(QA_FILE)
    sources = {item.source for item in items}
    assert len(items) >= 70 and len(sources) >= 18
    assert "lme4__PLSvGLS.pdf" not in sources  # quarantined: garbled text layer
    _require_papers(sources)
    result = _run_verify(QA_FILE, PAPERS)
    assert result.returncode == 0, result.stderr
    assert f"{len(items)} questions over {len(sources)} PDFs; 0 problems" in result.stdout


def test_verify_fails_on_wrong_leaked_or_missing_answers(tmp_path: Path) -> None:
    _require_papers({SMALL_PDF})
    qa = _write_jsonl(
        tmp_path / "qa.jsonl",
        [
            _record(
                id="ok",
                question="How many unique age intervals?",
                answers=["eight"],
                source=SMALL_PDF,
            ),
            _record(id="wrong", answers=["metformin"], source=SMALL_PDF),
            _record(
                id="leak", question="Is it eight intervals?", answers=["eight"], source=SMALL_PDF
            ),
            _record(id="short", answers=["8"], source=SMALL_PDF),
            _record(id="nopage", answers=["eight"], source=SMALL_PDF, page=99),
            _record(id="nofile", source="absent.pdf"),
        ],
    )
    result = _run_verify(qa, PAPERS)
    assert result.returncode == 1
    failing = {line.split(":")[0].removeprefix("FAIL ") for line in result.stderr.splitlines()}
    assert failing == {"wrong", "leak", "short", "nopage", "nofile"}


STORED = ["glmnet__relax.pdf", "glmnet__glmnet.pdf", "survival__survival.pdf",
          "strategyllm.pdf", "quantreg__rq.pdf", "lme4__lmer.pdf"]


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("glmnet__relax.pdf", "glmnet__relax.pdf"),  # the stored name itself
        ("relax.pdf", "glmnet__relax.pdf"),  # the vignette's own name
        ("Relax.PDF", "glmnet__relax.pdf"),  # in any case
        ("StrategyLLM.pdf", "strategyllm.pdf"),
        ("survival.pdf", "survival__survival.pdf"),
    ],
)
def test_resolve_source_maps_original_names(given: str, stored: str) -> None:
    assert resolve_source(given, STORED) == stored


def test_resolve_source_lists_near_matches_or_the_ambiguity() -> None:
    with pytest.raises(UnknownSourceError, match=r"'relx\.pdf'.*near matches: glmnet__relax\.pdf"):
        resolve_source("relx.pdf", STORED)
    with pytest.raises(UnknownSourceError, match=r"ambiguous.*a__x\.pdf, b__x\.pdf"):
        resolve_source("x.pdf", ["a__x.pdf", "b__x.pdf"])
    with pytest.raises(UnknownSourceError, match="no PDF named 'nothing.pdf'"):
        resolve_source("nothing.pdf", STORED)


def test_resolve_sources_names_the_question_and_skips_unanswerable(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "qa.jsonl", [
        _record(id="h-001", source="relax.pdf", page=2),
        {"id": "h-002", "question": "Which GPU?", "answerable": False, "type": "name"},
    ])
    items = resolve_sources(load_qa(path), STORED)
    assert [(i.source, i.answerable) for i in items] == [("glmnet__relax.pdf", True), ("", False)]
    with pytest.raises(UnknownSourceError, match=r"^h-001: no PDF named 'rlax.pdf'.*relax"):
        resolve_sources(load_qa(_write_jsonl(tmp_path / "bad.jsonl",
                                             [_record(id="h-001", source="rlax.pdf")])), STORED)


def test_unanswerable_questions_score_abstention_as_correct(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "qa.jsonl", [
        _record(),
        {"id": "u1", "question": "Which GPU trained the glmnet models?", "answerable": False},
    ])
    answerable, unanswerable = load_qa(path)
    assert score(unanswerable, "I don't know.", True) == Outcome(True, False, False)
    assert score(unanswerable, "An A100.", False) == Outcome(False, False, True)
    assert score(answerable, "metformin", False) == Outcome(True, False, False)
    assert score(answerable, "I don't know.", True) == Outcome(False, True, False)
    with pytest.raises(QAFormatError, match="takes no 'answers'"):
        load_qa(_write_jsonl(tmp_path / "bad.jsonl", [
            {"id": "u1", "question": "Q?", "answerable": False, "answers": ["x"]}]))


def test_eval_split_reads_the_file_name() -> None:
    assert eval_split("data/eval/rag_dev.jsonl") == "dev"
    assert eval_split("claims_dev.jsonl") == "dev"
    assert eval_split("data/eval/rag_qa.jsonl") == "test"
    assert eval_split("devices.jsonl") == "test"  # the word, not the letters


def test_verify_accepts_original_pdf_names(tmp_path: Path) -> None:
    _require_papers({SMALL_PDF})
    original = SMALL_PDF.split("__")[1]
    qa = _write_jsonl(tmp_path / "qa.jsonl", [
        _record(id="ok", question="How many unique age intervals?", answers=["eight"],
                source=original),
        _record(id="typo", answers=["eight"], source="tidetimes.pdf"),
    ])
    result = _run_verify(qa, PAPERS)
    assert result.returncode == 1
    assert "FAIL typo: no PDF named 'tidetimes.pdf'" in result.stderr
    assert SMALL_PDF in result.stderr  # the near match is listed
    assert "FAIL ok" not in result.stderr


def test_recheck_applies_the_answer_checks_to_recorded_answers(tmp_path: Path) -> None:
    from lab_pipelines.rag.answer import AnswerChecks
    from lab_pipelines.rag.benchmark import recheck

    items = load_qa(_write_jsonl(tmp_path / "qa.jsonl", [
        _record(id="a", question="Which drug was given to the patients?"),
        {"id": "u", "question": "Which GPU trained the model?", "answerable": False},
    ]))
    shown = ["The patients were given metformin daily.", "Nothing about hardware here."]
    base = {"question": "", "gold": "", "source": "", "page": 1, "citations": "",
            "correct": False, "abstained": False, "hallucinated": False, "withheld": False,
            "withheld_correct": False, "shown": shown}
    frame = pl.DataFrame([
        {**base, "method": "advanced", "id": "a", "raw_answer": "metformin", "answer": "metformin",
         "confidence": -0.1},
        {**base, "method": "advanced", "id": "u", "raw_answer": "A100", "answer": "A100",
         "confidence": -0.1},
        {**base, "method": "oracle", "id": "a", "raw_answer": "metformin", "answer": "metformin",
         "confidence": -0.9},
        {**base, "method": "naive", "id": "u", "raw_answer": "A100", "answer": "A100",
         "confidence": -0.9},
    ])
    rows = recheck(frame, items, AnswerChecks(min_confidence=-0.5)).to_dicts()
    # Backed and confident: shown. Not in the passages: withheld, the right call on "u".
    assert [(r["answer"], r["correct"], r["withheld"]) for r in rows[:2]] == [
        ("metformin", True, False), ("I don't know", True, True)]
    # Below the confidence gate: withheld though right; naive answers are never checked.
    assert rows[2]["withheld"] and rows[2]["withheld_correct"] and not rows[2]["correct"]
    assert rows[3]["hallucinated"] and not rows[3]["withheld"]
