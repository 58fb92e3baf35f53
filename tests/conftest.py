"""Shared fixtures: real PDFs from the sample corpus and broken ones made on the spot, and tiny
random-weight causal LMs that go through the real model-loading path."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from pypdf import PdfReader, PdfWriter

from lab_pipelines import models
from lab_pipelines.paths import REPO_ROOT

CORPUS = REPO_ROOT / "data" / "papers"
SMALL_REAL_PDFS = ("zoo__zoo-design.pdf", "glmnet__relax.pdf",
                   "attention_is_all_you_need_1706.03762.pdf")


def corpus_pdf(name: str) -> Path:
    path = CORPUS / name
    if not path.exists():
        pytest.fail(f"{path} is missing: `make setup` fetches the sample corpus")
    return path


@pytest.fixture
def lab_data(tmp_path, monkeypatch) -> Path:
    """An empty data directory used as $LAB_DATA_DIR for the test."""
    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.setenv("LAB_DATA_DIR", str(root))
    return root


def write_broken_pdfs(folder: Path) -> dict[str, str]:
    """Five unusable files; returns file name -> expected start of the quarantine reason."""
    folder.mkdir(parents=True, exist_ok=True)
    real = corpus_pdf("zoo__zoo-design.pdf")
    writer = PdfWriter(clone_from=PdfReader(real))
    writer.encrypt("secret")
    with open(folder / "encrypted.pdf", "wb") as fh:
        writer.write(fh)
    data = real.read_bytes()
    (folder / "truncated.pdf").write_bytes(data[: len(data) // 5])
    (folder / "empty.pdf").write_bytes(b"")
    (folder / "notes.pdf").write_text("just some text that is not a PDF at all\n")
    blank = PdfWriter()
    blank.add_blank_page(width=612, height=792)
    with open(folder / "blank.pdf", "wb") as fh:
        blank.write(fh)
    return {"encrypted.pdf": "encrypted", "truncated.pdf": "", "empty.pdf": "empty file",
            "notes.pdf": "not a PDF", "blank.pdf": "no extractable text"}


@pytest.fixture
def small_library(tmp_path) -> Path:
    """Three real papers from the corpus in a folder of their own."""
    folder = tmp_path / "papers"
    folder.mkdir()
    for name in SMALL_REAL_PDFS:
        shutil.copyfile(corpus_pdf(name), folder / name)
    return folder


def _save_tiny_lm(folder, config_class, model_class, chat_template: str | None = None):
    """A random-weight causal LM of the given architecture with the MiniLM word-piece
    tokenizer, saved like a hub folder."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(models.resolve_model_dir(models.EMBEDDER_DEFAULT))
    tokenizer.chat_template = chat_template
    torch.manual_seed(0)
    config = config_class(vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=64,
                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                          max_position_embeddings=2048, pad_token_id=tokenizer.pad_token_id)
    model_class(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_lm_dir(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForCausalLM

    return _save_tiny_lm(tmp_path_factory.mktemp("tiny_llama"), LlamaConfig, LlamaForCausalLM)


@pytest.fixture(scope="module")
def tiny_qwen_dir(tmp_path_factory):
    """The default reader's architecture (Qwen2), with a minimal chat template."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    template = ("{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} {% endfor %}"
                "{% if add_generation_prompt %}<assistant>{% endif %}")
    return _save_tiny_lm(tmp_path_factory.mktemp("tiny_qwen2"), Qwen2Config, Qwen2ForCausalLM,
                         template)
