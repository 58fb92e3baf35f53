"""Ask the paper library from the shell: hybrid (vector + full-text, RRF) top-k with citations.

    .venv/bin/python scripts/search_papers.py "How are tied event times handled?" -k 5
"""

import argparse
import time

from lab_pipelines.models import EMBEDDER_DEFAULT, load_embedder
from lab_pipelines.paths import lancedb_uri
from lab_pipelines.rag.index import embed_texts
from lab_pipelines.rag.search import PaperSearch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("questions", nargs="+")
    parser.add_argument("-k", type=int, default=5)
    parser.add_argument("--embedder", default=EMBEDDER_DEFAULT)
    args = parser.parse_args()
    model = load_embedder(args.embedder)
    search = PaperSearch(lancedb_uri(), lambda q: embed_texts(model, [q])[0])
    for question in args.questions:
        started = time.perf_counter()
        hits = search.hybrid(question, k=args.k)
        elapsed_ms = (time.perf_counter() - started) * 1000
        print(f"\n{question}  ({elapsed_ms:.0f} ms)")
        for rank, hit in enumerate(hits, 1):
            print(f"  {rank}. {hit.citation:55s} {hit.text[:70]!r}")


if __name__ == "__main__":
    main()
