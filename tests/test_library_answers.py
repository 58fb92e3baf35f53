"""The `library_answers` asset in-process: a real paper ingested by the real assets, questions
from a file, one `library_answers` row per question (a re-run of the run replaces, never
duplicates), and the report section that shows them. The reader is a tiny random-weight
Qwen2, so what is checked is the table, not the answers' quality (test_cli_ask does that)."""

from __future__ import annotations

import json
import shutil

import dagster as dg
import pytest
from conftest import corpus_pdf

from assets_defs.library import library_answers
from assets_defs.rag import chunk_embeddings, paper_pdfs, pdf_chunks
from assets_defs.resources import ModelRegistry, resources_for
from lab_pipelines.rag import ask
from lab_pipelines.tables import append_rows, read_table

QUESTIONS = ["Which class does the zoo package provide for irregular time series?",
             "What is the boiling point of liquid nitrogen at sea level?"]


def test_library_answers_writes_one_row_per_question(tmp_path, lab_data, tiny_qwen_dir):
    (lab_data / "papers").mkdir()
    shutil.copyfile(corpus_pdf("zoo__zoo-design.pdf"), lab_data / "papers" / "zoo-design.pdf")
    questions = tmp_path / "mine.txt"
    questions.write_text(f"# my questions\n{QUESTIONS[0]}\n\n{QUESTIONS[1]}\n")
    resources = {**resources_for("embedded"), "models": ModelRegistry(generator=str(tiny_qwen_dir))}
    result = dg.materialize(
        [paper_pdfs, pdf_chunks, chunk_embeddings, library_answers], resources=resources,
        run_config={"ops": {"library_answers": {"config": {"questions_file": str(questions)}}}})
    assert result.success
    db = lab_data / "lab.duckdb"
    rows = read_table(ask.ANSWERS_TABLE, db)
    assert rows["question"].to_list() == QUESTIONS  # comments and blank lines skipped
    assert set(ask.ANSWER_COLUMNS) | {"run_id", "created_at"} <= set(rows.columns)
    assert rows["run_id"].unique().to_list() == [result.run_id]
    assert set(rows["method"]) == {"elevate"}
    for row in rows.iter_rows(named=True):
        claims = json.loads(row["claims"])
        assert row["verdicts"] == ", ".join(c["verdict"] for c in claims)
        # What ships is verified claims or the abstention, never an unchecked sentence.
        shipped = [c for c in claims if c["shipped"]]
        assert all(c["verdict"] == "supported" for c in shipped)
        assert (row["answer"] == ask.NOT_IN_LIBRARY) == (not shipped)
    meta = result.asset_materializations_for_node("library_answers")[0].metadata
    assert QUESTIONS[0] in meta["answers"].value

    # The same run written again replaces its rows.
    append_rows(ask.ANSWERS_TABLE, rows.drop("run_id", "created_at", "machine"),
                run_id=result.run_id, db_path=db)
    assert read_table(ask.ANSWERS_TABLE, db).height == len(QUESTIONS)

    section = ask.report_section(db, lab_data)
    assert section is not None and section.anchor == "library-answers"
    assert QUESTIONS[1] in section.html and QUESTIONS[1] in section.markdown


def test_questions_file_defaults_and_errors(tmp_path):
    assert ask.questions_path("", tmp_path) == ask.DEFAULT_QUESTIONS
    assert len(ask.load_questions(ask.DEFAULT_QUESTIONS)) >= 3
    (tmp_path / "questions.txt").write_text("Why?\n")
    assert ask.questions_path("", tmp_path) == tmp_path / "questions.txt"
    with pytest.raises(FileNotFoundError, match="one question per line"):
        ask.load_questions(tmp_path / "absent.txt")
    (tmp_path / "blank.txt").write_text("\n# nothing\n")
    with pytest.raises(ValueError, match="holds no question"):
        ask.load_questions(tmp_path / "blank.txt")
    assert ask.report_section(tmp_path / "lab.duckdb", tmp_path) is None
