"""ELEVATE assets: the corpus-trained claim classifier and the standard/grounded/ELEVATE
benchmark. The critic runs on card `gpu1`, the reader on `gpu0`."""

import io
import time
from dataclasses import replace
from pathlib import Path

import dagster as dg
import polars as pl

from assets_defs.rag_answer import gated_reranker
from assets_defs.resources import CardResource, LabResource, ModelRegistry
from lab_pipelines import models as model_registry
from lab_pipelines.elevate import CLASSIFIER_DIR, benchmark, classifier, load_critic, save_threshold
from lab_pipelines.elevate.claimset import evaluate_critic, load_claims
from lab_pipelines.elevate.critic import LLM_THRESHOLD, Critic, LLMJudge, NLIJudge
from lab_pipelines.elevate.judge import Judge
from lab_pipelines.elevate.loop import LoopConfig
from lab_pipelines.paths import REPO_ROOT, atomic_write_bytes
from lab_pipelines.rag.generate import Generator
from lab_pipelines.rag.index import embed_texts
from lab_pipelines.rag.qa import eval_split, load_qa
from lab_pipelines.rag.rerank import read_index, save_reranker
from lab_pipelines.rag.search import PaperSearch
from lab_pipelines.tables import append_rows, markdown_table

BENCHMARK_TABLE = "elevate_benchmark"
REQUIRED_COLUMNS = ("method", "n_questions", "n_claims", "correct_claims", "hallucinated_claims",
                    "avg_latency_s")
CLAIMS_FILE = "data/eval/claims.jsonl"  # the test set: reported, never tuned on
DEV_CLAIMS_FILE = "data/eval/claims_dev.jsonl"  # where the critic's knobs are chosen
CRITICS = ("rules+classifier", "rules", "nli", "llm")


def _repo_path(path: str) -> Path:
    """Relative config paths are from the repository root."""
    return Path(path) if Path(path).is_absolute() else REPO_ROOT / path


def _classifier_dir(lab: LabResource) -> Path:
    return lab.root() / "models" / CLASSIFIER_DIR


def _critic_table(claims_file: Path, critics: dict[str, Critic]) -> tuple[pl.DataFrame, dict]:
    """Per-perturbation accuracy of each critic on the claim set, and each one's overall; the
    `split` column says whether the set is for choosing (dev) or reporting (test)."""
    cases = load_claims(claims_file)
    frames, overall = [], {}
    for name, critic in critics.items():
        scores, per = evaluate_critic(critic.verify, cases)
        overall[name] = scores
        frames.append(per.select("perturbation", "n", pl.col("accuracy").alias(name)))
    table = frames[0]
    for frame in frames[1:]:
        table = table.join(frame.drop("n"), on="perturbation")
    summary = pl.DataFrame([{"perturbation": "balanced accuracy", "n": len(cases),
                             **{k: v["balanced_accuracy"] for k, v in overall.items()}}],
                           schema=table.schema)
    return (pl.concat([summary, table]).with_columns(pl.lit(eval_split(claims_file)).alias("split")),
            overall)


class ClaimClassifierConfig(dg.Config):
    claims_file: str = CLAIMS_FILE  # its papers are kept out of training
    n_sentences: int = classifier.ClassifierConfig.n_sentences
    n_layers: int = classifier.ClassifierConfig.n_layers
    max_length: int = classifier.ClassifierConfig.max_length
    epochs: int = classifier.ClassifierConfig.epochs
    seed: int = classifier.ClassifierConfig.seed


# The full tier (`make benchmark`, nightly): every critic the demo and `lab ask` use by default
# is the rules alone (chosen on claims_dev), so the classifier is an opt-in experiment, and its
# 4.5 minutes of training shared the demo's two cores with `dnerf_checkpoint`.
@dg.asset(pool="gpu1", deps=["chunk_embeddings"], tags={"tier": "full"})
def claim_classifier(context: dg.AssetExecutionContext, config: ClaimClassifierConfig,
                     gpu1: CardResource, lab: LabResource) -> dg.MaterializeResult:
    """A FactCC-style MiniLM classifier on (evidence, claim) pairs from the library: real
    sentences and paraphrases (supported) against rule-based corruptions (contradicted). The
    metadata holds its held-out accuracy and the critic's accuracy on the claim set."""
    device = gpu1.resolve()
    settings = classifier.ClassifierConfig(n_sentences=config.n_sentences,
                                           n_layers=config.n_layers,
                                           max_length=config.max_length, epochs=config.epochs,
                                           seed=config.seed)
    claims_file = _repo_path(config.claims_file)
    held_papers = {c.source for c in load_claims(claims_file)}
    chunks, _ = read_index(lab.lancedb_uri())
    pairs = classifier.make_pairs(chunks, settings.n_sentences, settings.seed, held_papers)
    train, heldout = classifier.split_by_document(pairs, settings.heldout_fraction, settings.seed)
    context.log.info(f"{len(train)} training and {len(heldout)} held-out pairs; "
                     f"{len(held_papers)} claim-set papers excluded")
    model, report = classifier.train_classifier(train, heldout, settings, device,
                                                log=context.log.info)
    target = save_reranker(model.cross_encoder, _classifier_dir(lab))
    save_threshold(target, report.veto_threshold)
    critics = {"rules": Critic(), "classifier": Critic(judge=model, rules=False),
               "rules+classifier": Critic(judge=model, threshold=report.veto_threshold)}
    table, overall = _critic_table(claims_file, critics)
    dev_table, dev_overall = _critic_table(_repo_path(DEV_CLAIMS_FILE), critics)
    return dg.MaterializeResult(metadata={
        "path": str(target), "device": device, "train_pairs": report.n_train,
        "heldout_pairs": report.n_heldout, "steps": report.steps,
        "train_seconds": round(report.train_seconds, 1),
        "heldout_accuracy": report.heldout_accuracy,
        "heldout_majority": report.heldout_majority, "veto_threshold": report.veto_threshold,
        "critic_balanced_accuracy": overall["rules+classifier"]["balanced_accuracy"],
        "critic_balanced_accuracy_dev": dev_overall["rules+classifier"]["balanced_accuracy"],
        "critic_on_dev_claims": dg.MetadataValue.md(markdown_table(dev_table)),
        "critic_on_claim_set": dg.MetadataValue.md(markdown_table(table))})


@dg.asset_check(asset=claim_classifier)
def classifier_beats_majority(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    """On held-out papers the classifier should beat always answering the commonest label."""
    event = context.instance.get_latest_materialization_event(dg.AssetKey("claim_classifier"))
    meta = event.asset_materialization.metadata if event else {}
    accuracy = meta["heldout_accuracy"].value if "heldout_accuracy" in meta else None
    majority = meta["heldout_majority"].value if "heldout_majority" in meta else None
    passed = accuracy is not None and majority is not None and accuracy > majority
    return dg.AssetCheckResult(passed=passed, metadata={"accuracy": accuracy,
                                                        "majority": majority})


class ElevateBenchmarkConfig(dg.Config):
    qa_file: str = "data/eval/rag_qa.jsonl"
    claims_file: str = CLAIMS_FILE
    # Spread evenly over the QA set; 0: every question (84, about 10 minutes on 2 cores). On 24
    # one claim moves a rate by 4 points, too coarse for the bars the benchmark is judged by.
    max_questions: int = 0
    # Chosen on claims_dev.jsonl (docs/elevate.md): the rules alone 0.806 balanced accuracy;
    # behind them the classifier at its held-out veto (~0.15) 0.774, the reader as judge at
    # its best threshold 0.806 (it vetoes nothing there) and 0.772 at 0.15. Was
    # rules+classifier, chosen on the test claims.
    critic: str = "rules"  # or rules+classifier, nli, llm
    nli_model: str = ""  # critic "nli": a local folder (or cached hub id) of an NLI cross-encoder
    llm_model: str = ""  # critic "llm": empty = the reader itself
    # P(supported) under which the judge vetoes a claim the rules passed; None: the critic's
    # own (the classifier's held-out veto threshold; LLM_THRESHOLD, chosen on claims_dev)
    judge_threshold: float | None = None
    max_rounds: int = LoopConfig.max_rounds
    requery_k: int = LoopConfig.requery_k
    max_new_tokens: int = LoopConfig.max_new_tokens
    show_rejected: bool = LoopConfig.show_rejected  # quote the rejected claims to the reader
    pool_k: int = benchmark.BenchmarkConfig.pool_k
    top_n: int = benchmark.BenchmarkConfig.top_n
    fuse: bool = benchmark.BenchmarkConfig.fuse


def _critic(config: ElevateBenchmarkConfig, lab: LabResource, device: str,
            reader: Generator) -> Critic:
    critic = _judged_critic(config, lab, device, reader)
    if config.judge_threshold is None or critic.judge is None:
        return critic
    return replace(critic, threshold=config.judge_threshold)


def _judged_critic(config: ElevateBenchmarkConfig, lab: LabResource, device: str,
                   reader: Generator) -> Critic:
    if config.critic not in CRITICS:
        raise ValueError(f"Unknown critic {config.critic!r}; choose one of {CRITICS}.")
    if config.critic == "rules":
        return Critic()
    if config.critic == "nli":
        if not config.nli_model:
            raise ValueError("critic 'nli' needs nli_model: the folder of an NLI cross-encoder.")
        return Critic(judge=NLIJudge(model_registry.load_cross_encoder(config.nli_model, device)))
    if config.critic == "llm":
        judge = (LLMJudge(reader.model, reader.tokenizer) if not config.llm_model else
                 LLMJudge(*model_registry.load_causal_lm(config.llm_model, device,
                                                         lab.root() / "models")))
        return Critic(judge=judge, threshold=LLM_THRESHOLD)
    return load_critic(_classifier_dir(lab), device)


def _spread(items: list, n: int) -> list:
    """`n` items evenly spaced over the list, so a subset covers every paper's questions."""
    if not n or n >= len(items):
        return items
    return [items[i * len(items) // n] for i in range(n)]


@dg.asset(pool="gpu0", deps=["generator_model", "reranker_model", "claim_classifier",
                             "chunk_embeddings"])
def elevate_benchmark(context: dg.AssetExecutionContext, config: ElevateBenchmarkConfig,
                      gpu0: CardResource, gpu1: CardResource, lab: LabResource,
                      models: ModelRegistry) -> dg.MaterializeResult:
    """standard_rag vs grounded_rag vs elevate on the gold QA set, claims judged against the
    gold: one DuckDB row per method, every answer in a Parquet file beside the database."""
    items = _spread(load_qa(_repo_path(config.qa_file)), config.max_questions)
    reader_device, critic_device = gpu0.resolve(), gpu1.resolve()
    model, tokenizer = model_registry.load_causal_lm(models.generator, reader_device,
                                                     lab.root() / "models")
    reader = Generator(model, tokenizer, "completion", config.max_new_tokens)
    critic = _critic(config, lab, critic_device, reader)
    embedder = model_registry.load_embedder(models.embedder, reader_device)
    search = PaperSearch(lab.lancedb_uri(), lambda q: embed_texts(embedder, [q])[0])
    reranker, reranker_used = gated_reranker(lab, models, reader_device, context.log.warning)
    settings = benchmark.BenchmarkConfig(
        pool_k=config.pool_k, top_n=config.top_n, fuse=config.fuse,
        loop=LoopConfig(max_rounds=config.max_rounds, requery_k=config.requery_k,
                        max_new_tokens=config.max_new_tokens,
                        show_rejected=config.show_rejected))
    started = time.perf_counter()
    per_question = benchmark.run_questions(items, reader, search, reranker, critic,
                                           Judge(search), settings, log=context.log.info)
    wall_s = time.perf_counter() - started
    critic_table, overall = _critic_table(_repo_path(config.claims_file),
                                          {config.critic: critic})
    per_perturbation = {f"critic_{r['perturbation']}": r[config.critic]
                        for r in critic_table.iter_rows(named=True)
                        if r["perturbation"] != "balanced accuracy"}
    summary = benchmark.summarize(per_question).with_columns(
        pl.lit(config.critic).alias("critic"), pl.lit(models.generator).alias("generator"),
        pl.lit(reader_device).alias("device"), pl.lit(round(wall_s, 1)).alias("wall_s"),
        pl.lit(overall[config.critic]["balanced_accuracy"]).alias("critic_balanced_accuracy"),
        pl.lit(eval_split(config.qa_file)).alias("split"),
        pl.lit(eval_split(config.claims_file)).alias("critic_split"),
        *[pl.lit(v).alias(k) for k, v in per_perturbation.items()])
    append_rows(BENCHMARK_TABLE, summary, run_id=context.run.run_id, db_path=lab.duckdb_path(),
                required=REQUIRED_COLUMNS)
    answers_path = (lab.duckdb_path().parent / "elevate_benchmark_answers"
                    / f"{context.run.run_id}.parquet")
    buffer = io.BytesIO()
    per_question.write_parquet(buffer)
    atomic_write_bytes(answers_path, buffer.getvalue())
    shown = summary.select(*REQUIRED_COLUMNS, "correct_claims_per_question", "accuracy",
                           "hallucination_rate", "abstention_rate", "rounds_mean",
                           "latency_p50_s", "latency_p95_s")
    return dg.MaterializeResult(metadata={
        "table": dg.MetadataValue.md(markdown_table(shown)),
        "critic_on_claim_set": dg.MetadataValue.md(markdown_table(critic_table)),
        "answers_parquet": dg.MetadataValue.path(str(answers_path)),
        "critic": config.critic, "reranker": reranker_used, "n_questions": len(items),
        "wall_s": round(wall_s, 1), "reader_device": reader_device,
        "critic_device": critic_device})
