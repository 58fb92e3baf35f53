"""Recursive character chunking with exact character offsets.

Each chunk ends at the strongest boundary available in the back half of its window (paragraph,
then line, then sentence, then word), so chunks rarely cut a sentence; the next chunk starts
`overlap` characters before that end, moved forward to a word start.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

SEPARATORS = ("\n\n", "\n", ". ", " ")
PAGE_JOINER = "\n\n"


@dataclass(frozen=True)
class Chunk:
    index: int
    text: str
    char_start: int  # offsets into the document text (pages joined by PAGE_JOINER)
    char_end: int
    page_start: int  # 1-based, inclusive
    page_end: int


def split_spans(text: str, size: int = 1000, overlap: int = 200) -> list[tuple[int, int]]:
    """[start, end) spans covering `text`, each at most `size` characters."""
    if not 0 <= overlap < size:
        raise ValueError("need 0 <= overlap < size")
    spans: list[tuple[int, int]] = []
    start, n = 0, len(text)
    while start < n:
        end = min(start + size, n)
        if end < n:
            floor = start + size // 2
            for sep in SEPARATORS:
                cut = text.rfind(sep, floor, end)
                if cut != -1:
                    end = cut + len(sep)
                    break
        spans.append((start, end))
        if end >= n:
            break
        nxt = max(end - overlap, start + 1)
        space = text.find(" ", nxt, end)
        start = space + 1 if space != -1 else nxt
    return spans


def chunk_pages(pages: list[str], size: int = 1000, overlap: int = 200) -> list[Chunk]:
    """Chunk a document given as page texts; chunks may span pages and record which."""
    page_starts, pos = [], 0
    for page in pages:
        page_starts.append(pos)
        pos += len(page) + len(PAGE_JOINER)
    text = PAGE_JOINER.join(pages)
    chunks = []
    for start, end in split_spans(text, size, overlap):
        body = text[start:end].strip()
        if not body:
            continue
        chunks.append(Chunk(
            index=len(chunks), text=body, char_start=start, char_end=end,
            page_start=bisect_right(page_starts, start),
            page_end=bisect_right(page_starts, max(start, end - 1)),
        ))
    return chunks
