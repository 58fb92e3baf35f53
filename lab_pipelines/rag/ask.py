"""Ask the paper library: one question in, a cited answer out, verified claim by claim.

`open_library(data_root)` loads, once per process, what answering needs from what the demo
built under `data_root`: the LanceDB index, the embedder it was built with, the reader (its
safetensors copy under `models/`), the corpus-trained re-ranker if it passed its quality gate,
and the critic. `ask(question, library)` is the one pipeline both `lab ask` and the
`library_answers` asset run:

- `verify=True` (the default): ELEVATE as `elevate_benchmark` measures it. The reader drafts one
  to three sentences from the re-ranked passages, the critic checks every claim, failed claims
  are searched again and sent back for a rewrite, and only verified claims ship, each with the
  (file, page) of the passage that backs it.
- `verify=False`: the advanced RAG method as `rag_benchmark` measures it (hybrid pool,
  re-ranked, compressed, read in both orders, withheld unless the passages back it): a short
  answer with the (file, page) of the passages that hold it.

An answer nothing backs is an abstention, which the front door shows as "not in your library".
Every fallback (no re-ranker, rules-only critic) is named in `Library.notes`, never silent.
"""

from __future__ import annotations

import html
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import lancedb

from lab_pipelines import models
from lab_pipelines.cli.errors import LabInputError, materialize_hint
from lab_pipelines.elevate import CLASSIFIER_DIR, THRESHOLD_FILE, load_critic
from lab_pipelines.elevate import benchmark as elevate_benchmark
from lab_pipelines.elevate.claims import split_claims
from lab_pipelines.elevate.critic import ClaimVerdict, Critic
from lab_pipelines.elevate.loop import draft_answer, refine
from lab_pipelines.paths import REPO_ROOT
from lab_pipelines.rag import benchmark as rag_benchmark
from lab_pipelines.rag.answer import answer_advanced, cite, rerank
from lab_pipelines.rag.generate import Generator
from lab_pipelines.rag.index import TABLE, embed_texts
from lab_pipelines.rag.rerank import Reranker
from lab_pipelines.rag.search import PaperSearch, Passage
from lab_pipelines.tables import latest_run, markdown_table

if TYPE_CHECKING:
    from lab_pipelines.report import Section

NOT_IN_LIBRARY = "not in your library"
RERANKER_DIR = "reranker"  # under <data>/models, written by the reranker_model asset
RERANKER_QUALITY = "reranker_quality.json"  # its held-out scores, beside it
INDEX_SPEC = ("rag", "index.json")  # the embedder chunk_embeddings indexed with
CLOSEST = 3  # passages named when the library holds no answer


@dataclass(frozen=True)
class CheckedClaim:
    text: str
    verdict: str  # supported | contradicted | unsupported (the critic's), or unchecked
    citation: str = ""  # "file.pdf, p. 3" of the passage that backs it
    shipped: bool = True  # in the answer: verified, or (without verification) read
    evidence: str = ""  # the passage sentence the critic's verdict rests on
    reason: str = ""


@dataclass(frozen=True)
class LibraryAnswer:
    question: str
    answer: str  # "" when the library backs no answer
    claims: tuple[CheckedClaim, ...]
    citations: tuple[str, ...]
    method: str  # "elevate" (verified) or "advanced"
    seconds: float  # retrieval + reading + verification, model loading excluded
    rounds: int = 0  # ELEVATE rewrites
    closest: tuple[str, ...] = ()  # the top passages' citations, for an abstention

    @property
    def abstained(self) -> bool:
        return not self.answer

    def to_dict(self) -> dict:
        return {**asdict(self), "abstained": self.abstained}


@dataclass
class Library:
    """Everything `ask` reads, loaded once."""

    root: Path
    generator: Generator
    generator_spec: str
    search: PaperSearch
    embedder: object
    reranker: Reranker | None
    critic: Critic
    notes: list[str] = field(default_factory=list)  # honest fallbacks, one line each
    load_s: float = 0.0

    def embed(self, texts):
        return embed_texts(self.embedder, texts)


def require_index(data_root: Path) -> None:
    """`LabInputError` naming the command that builds the index, if there is none."""
    uri = Path(data_root) / "lancedb"
    indexed = False
    if uri.is_dir():
        db = lancedb.connect(str(uri))
        indexed = TABLE in db.list_tables().tables and db.open_table(TABLE).count_rows() > 0
    if not indexed:
        raise LabInputError(f"no paper index under {data_root} (LanceDB table '{TABLE}'); build "
                            f"it with: {materialize_hint('*chunk_embeddings')}")


def index_embedder(data_root: Path) -> str:
    """The embedder the index was built with: query vectors must come from the same one."""
    spec = Path(data_root).joinpath(*INDEX_SPEC)
    return json.loads(spec.read_text())["embedder"] if spec.exists() else models.EMBEDDER_DEFAULT


def gated_reranker(models_dir: Path, configured: str = "", device: str = "cpu"
                   ) -> tuple[Reranker | None, str]:
    """The re-ranker the advanced method uses, and a line that says which and why.

    A configured cross-encoder is used as given. The corpus-trained one is used only if, on
    held-out pseudo-queries, it picks the positive more often than both its untrained
    initialisation and the bi-encoder retriever: a re-ranker that does not beat the ranking it
    re-orders would only cost recall and latency. None means the hybrid order stands, as
    `configured` "none" asks without loading anything."""
    if configured == "none":
        return None, "no re-ranker (configured 'none'): hybrid order kept"
    if configured:
        return (Reranker(models.load_cross_encoder(configured, device), bf16=True),
                f"cross-encoder {configured}")
    quality_file = Path(models_dir) / RERANKER_QUALITY
    if not quality_file.exists():
        return None, ("no trained re-ranker, hybrid order kept (build it with: "
                      f"{materialize_hint('reranker_model')})")
    quality = json.loads(quality_file.read_text())
    after = quality.get("heldout_top1_after")
    bars = {k: quality.get(f"heldout_top1_{k}") for k in ("before", "retriever")}
    if after is None or any(bar is None or after <= bar for bar in bars.values()):
        return None, (f"corpus-trained re-ranker rejected by its quality gate (held-out top-1 "
                      f"{after} vs untrained {bars['before']}, retriever {bars['retriever']}): "
                      "hybrid order kept")
    cross_encoder = models.load_cross_encoder(str(Path(models_dir) / RERANKER_DIR), device)
    return Reranker(cross_encoder, bf16=True), "corpus-trained cross-encoder"


LIBRARY_CRITICS = ("rules", "rules+classifier")


def library_critic(models_dir: Path, device: str = "cpu", kind: str = "rules"
                   ) -> tuple[Critic, str | None]:
    """The critic `lab ask` verifies with, and a note on any fallback.

    Rules alone by default: on the development claims they scored 0.806 balanced accuracy
    against 0.774 with the corpus-trained classifier behind them (docs/elevate.md), the choice
    elevate_benchmark makes too. `rules+classifier` falls back to the rules, with a note, before
    the `claim_classifier` asset has saved one."""
    if kind not in LIBRARY_CRITICS:
        raise LabInputError(f"Unknown critic {kind!r}; choose one of {', '.join(LIBRARY_CRITICS)}.")
    folder = Path(models_dir) / CLASSIFIER_DIR
    if kind == "rules":
        return Critic(), None
    if (folder / THRESHOLD_FILE).exists():
        return load_critic(folder, device), None
    return Critic(), ("no claim classifier: rules alone verify claims (build it with: "
                      f"{materialize_hint('claim_classifier')})")


def open_library(data_root: Path, generator: str | None = None, device: str = "cpu",
                 reranker: str = "", critic: str = "rules", dtype: str = "auto") -> Library:
    """Load the index and models under `data_root`; `LabInputError` (one line) for a missing
    index or a model that is not on this machine. `dtype`: the reader's weights (auto: bf16
    where the CPU has it natively)."""
    started = time.perf_counter()
    data_root = Path(data_root)
    require_index(data_root)
    spec = generator or models.reader_default()
    models_dir = data_root / "models"
    try:
        model, tokenizer = models.load_causal_lm(spec, device, models_dir, dtype)
        embedder = models.load_embedder(index_embedder(data_root), device)
        ranker, ranker_note = gated_reranker(models_dir, reranker, device)
        critic, critic_note = library_critic(models_dir, device, critic)
    except models.ModelNotAvailable as error:
        raise LabInputError(str(error)) from None
    search = PaperSearch(data_root / "lancedb", lambda q: embed_texts(embedder, [q])[0])
    notes = [n for n in (ranker_note if ranker is None else None, critic_note) if n]
    library = Library(root=data_root, generator=Generator(model, tokenizer),
                      generator_spec=spec, search=search, embedder=embedder, reranker=ranker,
                      critic=critic, notes=notes)
    # One untimed pass, so lazy initialisation (kernels, the FTS reader) is load time, not the
    # first question's.
    library.search.hybrid("warm-up", 1)
    draft_answer("warm-up", ["warm-up"], library.generator, 2)
    library.load_s = time.perf_counter() - started
    return library


def _closest(passages: list[Passage]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(p.citation for p in passages[:CLOSEST]))


def _verified(question: str, library: Library, k: int | None) -> LibraryAnswer:
    config = elevate_benchmark.BenchmarkConfig()
    started = time.perf_counter()
    _, ranked = rerank(question, library.search, library.reranker, config.pool_k, config.fuse)
    shown = ranked[:k or config.top_n]
    draft = draft_answer(question, [p.text for p in shown], library.generator,
                         config.loop.max_new_tokens)
    result = refine(question, draft, shown, library.generator, library.critic,
                    lambda query, n: library.search.hybrid(query, n), config.loop)
    kept = iter(result.kept)  # the verified claims of `result.claims`, in order, cited
    claims = []
    for claim, verdict in result.claims:
        citation = ""
        if verdict.verified:
            citation = next(kept).citation or _fallback_cite(claim.text, shown)
        claims.append(_checked(claim.text, verdict, citation, verdict.verified))
    answer = " ".join(c.text for c in claims if c.shipped)
    return LibraryAnswer(
        question=question, answer=answer, claims=tuple(claims),
        citations=tuple(dict.fromkeys(c.citation for c in claims if c.shipped and c.citation)),
        method="elevate", seconds=time.perf_counter() - started, rounds=result.rounds,
        closest=() if answer else _closest(ranked))


def _checked(text: str, verdict: ClaimVerdict, citation: str, shipped: bool) -> CheckedClaim:
    return CheckedClaim(text=text, verdict=verdict.label, citation=citation, shipped=shipped,
                        evidence=verdict.evidence, reason=verdict.reason)


def _fallback_cite(text: str, shown: list[Passage]) -> str:
    """A verified claim whose evidence sentence the loop could not place: the shown passage
    that holds it, else the top one."""
    return cite(text, shown)[0] if shown else ""


def _unverified(question: str, library: Library, k: int | None) -> LibraryAnswer:
    config = rag_benchmark.BenchmarkConfig()
    answer = answer_advanced(question, library.generator, library.search, library.reranker,
                             config.pool_k, k or config.top_n, config.fuse, config.compress_to,
                             library.embed, config.checks, config.read_reversed)
    citation = "; ".join(answer.citations)
    claims = () if answer.abstained else tuple(
        CheckedClaim(c.text, "unchecked", citation) for c in split_claims(answer.text)
    ) or (CheckedClaim(answer.text, "unchecked", citation),)
    return LibraryAnswer(
        question=question, answer="" if answer.abstained else answer.text, claims=claims,
        citations=answer.citations, method="advanced", seconds=answer.latency_s,
        closest=_closest(list(answer.ranked)) if answer.abstained else ())


def ask(question: str, library: Library, k: int | None = None,
        verify: bool = True) -> LibraryAnswer:
    """Answer `question` from the library: ELEVATE-verified claims (`verify`), or the advanced
    RAG answer; `k` passages in the reader's prompt (None: each method's benchmarked default)."""
    question = " ".join(question.split())
    if not question:
        raise LabInputError("the question is empty: ask something, e.g. "
                            "lab ask \"How many layers does the encoder have?\"")
    if k is not None and k < 1:
        raise LabInputError(f"-k must be at least 1 (got {k})")
    return (_verified if verify else _unverified)(question, library, k)


# --- many questions: the library_answers table --------------------------------------------

ANSWERS_TABLE = "library_answers"
ANSWER_COLUMNS = ("question", "answer", "claims", "verdicts", "citations", "method")
QUESTIONS_FILE = "questions.txt"  # under the data directory: the user's own questions
DEFAULT_QUESTIONS = REPO_ROOT / "data" / "eval" / "questions.txt"  # shipped, when they have none


def questions_path(configured: str, data_root: Path) -> Path:
    """The questions file: `configured` (relative to the repository root), else
    `<data>/questions.txt` when the user has one, else the shipped example."""
    if configured:
        path = Path(configured)
        return path if path.is_absolute() else REPO_ROOT / path
    own = Path(data_root) / QUESTIONS_FILE
    return own if own.exists() else DEFAULT_QUESTIONS


def load_questions(path: Path) -> list[str]:
    """One question per line; blank lines and `#` comments are skipped."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"Questions file {path} does not exist: write one question per "
                                "line, or set questions_file in the run config.")
    questions = [" ".join(line.split()) for line in Path(path).read_text().splitlines()]
    questions = [q for q in questions if q and not q.startswith("#")]
    if not questions:
        raise ValueError(f"Questions file {path} holds no question (one per line).")
    return questions


def answer_row(answer: LibraryAnswer) -> dict:
    """One `library_answers` row: claims with their verdicts and citations as JSON, the
    verdicts and citations also on their own for SQL (`verdicts LIKE '%contradicted%'`)."""
    return {
        "question": answer.question,
        "answer": answer.answer or NOT_IN_LIBRARY,
        "claims": json.dumps([asdict(c) for c in answer.claims]),
        "verdicts": ", ".join(c.verdict for c in answer.claims),
        "citations": "; ".join(answer.citations),
        "method": answer.method,
        "abstained": answer.abstained,
        "rounds": answer.rounds,
        "latency_s": answer.seconds,
    }


def report_section(db_path: Path, data_root: Path) -> Section | None:
    """The latest `library_answers` run for the HTML report: each question, its answer, and
    its claims with verdicts and citations; None before the asset has run."""
    from lab_pipelines.report import Section  # matplotlib: not for every `lab ask`

    latest = latest_run(ANSWERS_TABLE, db_path)
    if latest.is_empty():
        return None
    rows = latest.select("question", "answer", "verdicts", "citations", "method")
    when = f"{latest['created_at'].max():%Y-%m-%d %H:%M} UTC"
    intro = (f"{latest.height} questions from run {latest['run_id'][0][:8]} ({when}), "
             f"answered by `lab ask`'s pipeline; an answer nothing in the library backs reads "
             f"'{NOT_IN_LIBRARY}'.")
    body = "".join(
        f"<tr><td>{html.escape(r['question'])}</td><td>{html.escape(r['answer'])}</td>"
        f"<td>{html.escape(r['verdicts'])}</td><td>{html.escape(r['citations'])}</td>"
        f"<td>{html.escape(r['method'])}</td></tr>" for r in rows.iter_rows(named=True))
    page = (f"<p>{html.escape(intro)}</p><table><thead><tr><th>question</th><th>answer</th>"
            f"<th>verdicts</th><th>citations</th><th>method</th></tr></thead>"
            f"<tbody>{body}</tbody></table>")
    return Section(anchor="library-answers", title="Answers from your library",
                   markdown=f"{intro}\n\n{markdown_table(rows)}", html=page)
