"""Shared fixtures: real PDFs from the sample corpus and broken ones made on the spot."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from pypdf import PdfReader, PdfWriter

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
