"""The benchmark's judge of claims: separate from the critic, and allowed to see the gold.

The critic only ever sees the retrieved evidence; the judge sees the gold answers, the gold
page and the whole library. Its rules, in order:
- correct: the claim states a gold answer (`qa.answer_is_correct`), or the gold page backs it
  (every number in it, and at least `min_word_share` of its content words, are on the page);
- hallucinated: the question's gold answer is a number and a claim about the question's
  subject (at least half its content words are the question's) states numbers, none of
  them a gold one and none on the gold page (a wrong value), or nothing in the library backs
  the claim (the passages full-text and vector search rank first for it, with the same test);
- neutral: backed somewhere in the library but neither the gold answer nor the gold page: a
  true side remark, counted in neither rate.
The backing test shares its token view with the critic's rules (`rag.grounding`), but the
judge reads different text (gold page, whole library) with a stricter word share, so the
critic passing a claim does not make it correct.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from lab_pipelines.rag.grounding import check_grounding, content_words, numbers
from lab_pipelines.rag.qa import QAItem, answer_is_correct
from lab_pipelines.rag.search import PaperSearch

Judgement = Literal["correct", "hallucinated", "neutral"]


@dataclass(frozen=True)
class Judge:
    search: PaperSearch
    min_word_share: float = 0.8
    library_k: int = 5

    def backed(self, claim: str, texts: Sequence[str]) -> bool:
        return bool(texts) and check_grounding(claim, texts, self.min_word_share).grounded

    def gold_page(self, item: QAItem) -> list[str]:
        if not item.answerable:
            return []
        return [p.text for p in self.search.on_page(item.source, item.page)]

    def judge(self, claim: str, item: QAItem, gold_page: Sequence[str]) -> Judgement:
        if answer_is_correct(claim, item.answers) or self.backed(claim, gold_page):
            return "correct"
        gold_numbers = set().union(*(numbers(a) for a in item.answers))
        stated, words = numbers(claim), content_words(claim)
        on_topic = bool(words) and len(words & content_words(item.question)) >= 0.5 * len(words)
        if (gold_numbers and stated and on_topic
                and not stated & (gold_numbers | numbers(" ".join(gold_page)))):
            return "hallucinated"
        library = [p.text for p in self.search.hybrid(claim, self.library_k)]
        return "neutral" if self.backed(claim, library) else "hallucinated"
