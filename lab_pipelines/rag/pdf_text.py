"""PDF -> cleaned page texts with pypdf, or a one-line reason the file cannot be used.

Cleaning: NFKC folds ligature code points ("ﬁ" -> "fi"); LaTeX documents set in T1 (Cork)
fonts without a ToUnicode map come out of pypdf as control characters (0x1C for "fi", 0x15 for
an en dash, ...), which pypdf's layout mode does not recover either, so those code points are
mapped back by the T1 table; words hyphenated across a line break are joined; runs of
whitespace collapse.
"""

from __future__ import annotations

import hashlib
import logging
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import pypdf
from pypdf.errors import PdfReadError

# pypdf logs every recoverable syntax quirk as a warning; the quarantine reason is what matters.
logging.getLogger("pypdf").setLevel(logging.ERROR)

# T1 (Cork) encoding slots that land in the C0 control range.
_T1_CONTROLS = {
    0x10: "\u201c", 0x11: "\u201d", 0x12: "\u201e", 0x13: "\u00ab", 0x14: "\u00bb",
    0x15: "\u2013", 0x16: "\u2014", 0x1B: "ff", 0x1C: "fi", 0x1D: "fl", 0x1E: "ffi", 0x1F: "ffl",
}
_CONTROL_REPAIR = str.maketrans(
    {**{c: " " for c in range(0x20) if c not in (0x0A,)}, **_T1_CONTROLS}
)
_HYPHEN_BREAK = re.compile(r"(\w)-\n(\w)")
_SPACES = re.compile(r"[ \t\u00a0]+")
_BLANK_LINES = re.compile(r"\n\s*\n+")
_BOILERPLATE = re.compile(r"permission|reproduce|arxiv|copyright|licen[cs]e|preprint|journal of", re.I)
MIN_TEXT_CHARS = 50  # below this a PDF is a scan or an empty shell: nothing to retrieve


MIN_READABLE_FRACTION = 0.8
_READABLE = re.compile(r"[\x20-\x7e\n\u00c0-\u024f\u0370-\u03ff\u2010-\u2030]")


def _readable_fraction(text: str) -> float:
    return len(_READABLE.findall(text)) / max(len(text), 1)


class UnusablePdf(ValueError):
    """A PDF that cannot be ingested; `str(err)` is the one-line quarantine reason."""


@dataclass(frozen=True)
class ParsedPdf:
    pages: list[str]
    title: str


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def clean_text(raw: str) -> str:
    text = unicodedata.normalize("NFKC", raw.translate(_CONTROL_REPAIR))
    text = _HYPHEN_BREAK.sub(r"\1\2", text)
    text = _SPACES.sub(" ", text)
    text = _BLANK_LINES.sub("\n\n", text)
    return "\n".join(line.strip() for line in text.split("\n")).strip()


def _title(reader: pypdf.PdfReader, pages: list[str], fallback: str) -> str:
    meta = reader.metadata
    title = (meta.title or "").strip() if meta else ""
    if len(title) >= 4 and not title.lower().endswith((".dvi", ".tex", ".pdf")):
        return title
    # No usable metadata: the first substantial line of page 1 that is not boilerplate.
    for line in (pages[0] if pages else "").split("\n"):
        if len(line.split()) >= 3 and not _BOILERPLATE.search(line):
            return line[:160]
    return fallback


def parse_pdf(path: Path) -> ParsedPdf:
    """Cleaned text per page, or `UnusablePdf` with the reason."""
    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(1024)
    if not head:
        raise UnusablePdf("empty file")
    if b"%PDF-" not in head:
        raise UnusablePdf("not a PDF (no %PDF- header)")
    try:
        reader = pypdf.PdfReader(path, strict=False)
        if reader.is_encrypted:
            raise UnusablePdf("encrypted PDF")
        pages = [clean_text(page.extract_text() or "") for page in reader.pages]
    except UnusablePdf:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError, IndexError) as err:
        raise UnusablePdf(f"unreadable PDF ({type(err).__name__}: {str(err)[:120]})") from None
    if not pages:
        raise UnusablePdf("PDF has no pages")
    if sum(len(p) for p in pages) < MIN_TEXT_CHARS:
        raise UnusablePdf(f"no extractable text (under {MIN_TEXT_CHARS} characters; a scan?)")
    readable = _readable_fraction("".join(pages))
    if readable < MIN_READABLE_FRACTION:
        raise UnusablePdf(f"garbled text layer ({readable:.0%} readable characters; a font "
                          f"without a Unicode map)")
    return ParsedPdf(pages=pages, title=_title(reader, pages, path.stem))
