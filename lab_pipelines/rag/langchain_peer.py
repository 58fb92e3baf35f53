"""The `langchain_default` peer row of `rag_benchmark`: what a user would build instead, from
the LangChain RAG tutorial's recipe, read by our reader and scored by our judge.

The recipe, step for step:
- load: one document per PDF page with pypdf's raw page text, the source path and the 0-based
  page in its metadata (what the tutorial's `PyPDFLoader` gives; our own parser cleans and
  de-hyphenates, the peer does not);
- split: `RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=200)`;
- store: a Chroma collection with its default distance, holding the same MiniLM embeddings our
  index uses (handed to Chroma explicitly: its own default embedding function downloads a model,
  and nothing here may touch the network; its telemetry is off);
- retrieve: the k = 4 most similar chunks;
- prompt: the tutorial's standard RAG prompt, in our words with its structure (use the context,
  say you don't know when you don't, three sentences at most, concise) as one user turn;
- read and judge: the same `Generator` and the same per-question scoring as every other row.

The collection is built once per library content and recipe (a fingerprint names its folder),
into a temporary folder renamed when complete, so a re-run reuses it and a killed build leaves
nothing a later run would trust.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import polars as pl

from lab_pipelines.progress import LogFn, track
from lab_pipelines.rag import benchmark
from lab_pipelines.rag.answer import Answer, cite
from lab_pipelines.rag.generate import Generator, is_abstention
from lab_pipelines.rag.index import embed_texts
from lab_pipelines.rag.pdf_text import sha256_file
from lab_pipelines.rag.qa import QAItem
from lab_pipelines.rag.search import Passage

METHOD = "langchain_default"
# The tutorial's prompt, reworded: the same four instructions in the same order, then the
# question and the retrieved context.
PROMPT = ("You help answer questions. Answer the question using the pieces of retrieved context "
          "below. If you don't know the answer, just say that you don't know. Use three "
          "sentences at most and keep the answer concise.\n"
          "Question: {question}\nContext: {context}\nAnswer:")


@dataclass(frozen=True)
class PeerConfig:
    chunk_size: int = 1000
    chunk_overlap: int = 200
    k: int = 4
    ranked: int = benchmark.RECALL_K  # retrieved for recall@5; the prompt holds the first k


def sentence_embeddings(model):
    """Our sentence-transformers embedder behind LangChain's `Embeddings` interface (built
    here: langchain is the optional [peer] extra, imported only when the peer runs)."""
    from langchain_core.embeddings import Embeddings

    class SentenceEmbeddings(Embeddings):
        def __init__(self, model) -> None:
            self.model = model

        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return embed_texts(self.model, list(texts)).tolist()

        def embed_query(self, text: str) -> list[float]:
            return self.embed_documents([text])[0]

    return SentenceEmbeddings(model)


def load_pages(pdfs: Sequence[Path]) -> list:
    """One LangChain `Document` per page: pypdf's text, the source path, the 0-based page."""
    from langchain_core.documents import Document
    from pypdf import PdfReader

    return [Document(page_content=page.extract_text() or "",
                     metadata={"source": str(pdf), "page": number})
            for pdf in pdfs for number, page in enumerate(PdfReader(pdf).pages)]


def split_pages(pages: list, config: PeerConfig = PeerConfig()) -> list:
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    splitter = RecursiveCharacterTextSplitter(chunk_size=config.chunk_size,
                                              chunk_overlap=config.chunk_overlap,
                                              add_start_index=True)
    return splitter.split_documents(pages)


def _client_settings():
    from chromadb.config import Settings

    return Settings(anonymized_telemetry=False)


def _forget_clients() -> None:
    """Chroma keeps one client per folder for the life of the process; one left pointing at
    a folder that was renamed or deleted would serve a stale database."""
    from chromadb.api.shared_system_client import SharedSystemClient

    SharedSystemClient.clear_system_cache()


def fingerprint(pdfs: Sequence[Path], embedder_spec: str, config: PeerConfig) -> str:
    """Names the collection's folder: the PDFs' names and bytes, the embedder, the recipe."""
    parts = [embedder_spec, json.dumps(asdict(config), sort_keys=True),
             *(f"{Path(p).name}:{sha256_file(Path(p))}" for p in sorted(pdfs))]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def open_store(pdfs: Sequence[Path], embedder, embedder_spec: str, store_root: Path,
               config: PeerConfig = PeerConfig(), log: LogFn | None = None):
    """The Chroma store of the recipe's chunks of `pdfs`: reused when one was built from the
    same bytes and recipe, else built (into a temporary folder, renamed when complete)."""
    from langchain_chroma import Chroma

    embeddings = sentence_embeddings(embedder)
    target = Path(store_root) / fingerprint(pdfs, embedder_spec, config)
    if not target.is_dir():
        started = time.perf_counter()
        chunks = split_pages(load_pages(pdfs), config)
        tmp = target.with_name(target.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        store = Chroma(collection_name=METHOD, embedding_function=embeddings,
                       persist_directory=str(tmp), client_settings=_client_settings())
        store.add_documents(chunks)
        _forget_clients()
        tmp.rename(target)
        if log:
            log(f"{METHOD}: {len(chunks)} chunks of {len(pdfs)} PDFs into Chroma in "
                f"{time.perf_counter() - started:.0f} s")
        # Drop stores of earlier library versions: only the current one is ever read.
        for old in Path(store_root).iterdir():
            if old != target and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
    return Chroma(collection_name=METHOD, embedding_function=embeddings,
                  persist_directory=str(target), client_settings=_client_settings())


def _passage(document, score: float) -> Passage:
    page = int(document.metadata["page"]) + 1  # the recipe counts pages from 0, we from 1
    name = Path(document.metadata["source"]).name
    return Passage(chunk_id=f"{name}:{page}:{document.metadata.get('start_index', 0)}",
                   doc_id=name, file_name=name, title="", page_start=page, page_end=page,
                   text=document.page_content, score=score)


def retrieve(store, question: str, n: int) -> list[Passage]:
    """The `n` chunks Chroma ranks nearest (its default distance, lower is nearer)."""
    return [_passage(doc, -distance)
            for doc, distance in store.similarity_search_with_score(question, k=n)]


def answer(question: str, store, generator: Generator,
           config: PeerConfig = PeerConfig()) -> Answer:
    """The recipe's answer: top-k chunks as the context of the prompt, one chat turn."""
    started = time.perf_counter()
    ranked = retrieve(store, question, max(config.k, config.ranked))
    context = "\n\n".join(p.text for p in ranked[:config.k])
    retrieval_s = time.perf_counter() - started
    started = time.perf_counter()
    prompt = PROMPT.format(question=question, context=context)
    # One user turn, as the tutorial sends it to a chat model; a base model reads it as text.
    text = (generator.chat([{"role": "user", "content": prompt}])
            if generator.tokenizer.chat_template else generator.complete(prompt))
    abstained = is_abstention(text)
    return Answer(text=text, abstained=abstained, raw_text=text, stats=generator.last,
                  ranked=tuple(ranked), prompt_passages=config.k,
                  citations=() if abstained else cite(text, list(ranked[:config.k])),
                  retrieval_s=retrieval_s, generation_s=time.perf_counter() - started)


def run_questions(items: Sequence[QAItem], generator: Generator, store,
                  config: PeerConfig = PeerConfig(), log: LogFn | None = None) -> pl.DataFrame:
    """The peer's per-question rows, scored like every other `rag_benchmark` method (items'
    sources already as the library stores them)."""
    answer(items[0].question, store, generator, config)  # untimed warm-up, as for the others
    # benchmark._row is the judge of every rag_benchmark row: the peer is scored by it too.
    rows = [benchmark._row(METHOD, item, answer(item.question, store, generator, config))
            for item in track(items, f"{METHOD} questions", log, unit="question")]
    return pl.DataFrame(rows, infer_schema_length=None)


def library_pdfs(rag_dir: Path) -> list[Path]:
    """The PDFs the lab's own index holds (`paper_pdfs`' list less the quarantined ones): the
    peer reads the same library as the rows it is compared with."""
    docs = pl.read_parquet(Path(rag_dir) / "library.parquet")
    quarantine = Path(rag_dir) / "quarantine.parquet"
    if quarantine.exists():
        docs = docs.join(pl.read_parquet(quarantine), on=["doc_id", "doc_sha"], how="anti")
    return [Path(p) for p in docs["path"]]


def run_on_library(items: Sequence[QAItem], generator: Generator, embedder, embedder_spec: str,
                   rag_dir: Path, config: PeerConfig = PeerConfig(),
                   log: LogFn | None = None) -> pl.DataFrame:
    """The peer row's per-question frame for `rag_benchmark`: the recipe's Chroma store of the
    library (kept under `rag_dir`/chroma_peer), then every question."""
    store = open_store(library_pdfs(rag_dir), embedder, embedder_spec,
                       Path(rag_dir) / "chroma_peer", config, log)
    return run_questions(items, generator, store, config, log)
