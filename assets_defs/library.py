"""Ask the library in bulk: the researcher's questions, answered by `lab ask`'s pipeline."""

import dagster as dg
import polars as pl
from pydantic import Field

from assets_defs.resources import CardResource, LabResource, ModelRegistry
from lab_pipelines.rag import ask
from lab_pipelines.tables import append_rows, markdown_table


class LibraryAnswersConfig(dg.Config):
    questions_file: str = Field(
        default="", description="One question per line; empty: <data>/questions.txt if it "
                                "exists, else the shipped data/eval/questions.txt.")
    verify: bool = True  # ELEVATE checks every claim; False: the advanced RAG answer alone
    k: int = 0  # passages in the reader's prompt; 0: the benchmarked default


@dg.asset(pool="gpu0", deps=["generator_model", "reranker_model", "claim_classifier",
                             "chunk_embeddings"])
def library_answers(context: dg.AssetExecutionContext, config: LibraryAnswersConfig,
                    gpu0: CardResource, lab: LabResource,
                    models: ModelRegistry) -> dg.MaterializeResult:
    """Every question of the questions file answered from the paper library, claims with
    their verdicts and (file, page) citations, in the DuckDB table `library_answers`."""
    path = ask.questions_path(config.questions_file, lab.root())
    questions = ask.load_questions(path)
    library = ask.open_library(lab.root(), generator=models.generator, device=gpu0.resolve(),
                               reranker=models.reranker)
    for note in library.notes:
        context.log.warning(note)
    answers = [ask.ask(q, library, k=config.k or None, verify=config.verify) for q in questions]
    rows = pl.DataFrame([ask.answer_row(a) for a in answers]).with_columns(
        pl.lit(str(path)).alias("questions_file"),
        pl.lit(library.generator_spec).alias("generator"))
    append_rows(ask.ANSWERS_TABLE, rows, run_id=context.run.run_id, db_path=lab.duckdb_path(),
                required=ask.ANSWER_COLUMNS)
    latency = rows["latency_s"]
    return dg.MaterializeResult(metadata={
        "answers": dg.MetadataValue.md(markdown_table(
            rows.select("question", "answer", "verdicts", "citations"))),
        "questions": len(questions), "answered": int((~rows["abstained"]).sum()),
        "questions_file": dg.MetadataValue.path(str(path)),
        "latency_p50_s": round(float(latency.median()), 2),
        "load_s": round(library.load_s, 1), "notes": "; ".join(library.notes) or "-"})
