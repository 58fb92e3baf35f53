"""Retrieve, verify, refine: the ELEVATE loop around a reader and a critic.

1. The reader drafts an answer of one to three short sentences from the retrieved passages.
2. The answer is cut into claims (`claims.split_claims`); the critic checks each against the
   evidence.
3. For each failed claim, the library is searched again with the claim as the query; a claim
   the new passages back is kept as it is.
4. Claims still failing go back to the reader with a correction signal that names each one and
   the evidence sentence contradicting it (or says nothing backs it), and the reader answers
   again with those sentences leading its passages. Back to 2, at most `max_rounds` times.
5. A final pass keeps the verified claims of the round that verified most (a rewrite that
   loses what the draft had right does not cost it) and drops every other claim; nothing left
   means an abstention.
Instructions inside the evidence change nothing: the critic strips them before reading
(`critic.strip_instructions`), and the reader sees the same cleaned passages.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from lab_pipelines.elevate.claims import Claim, join_claims, split_claims, trim_unfinished
from lab_pipelines.elevate.critic import ClaimVerdict, Critic, strip_instructions
from lab_pipelines.rag.generate import ABSTAIN, Generator, is_abstention
from lab_pipelines.rag.rerank import passage_input
from lab_pipelines.rag.search import Passage

Requery = Callable[[str, int], list[Passage]]  # (query, k) -> passages

_ANSWER_INSTRUCTION = (
    "Answer the question in one to three short sentences that state the key facts, using only "
    f'the passages. If the passages do not contain the answer, answer "{ABSTAIN}".')
# No number and no name, so nothing in it can leak into an answer about the library.
_EXAMPLE = ("Passage 1: The gardener waters the roses early in the morning, before the heat of "
            "the day, and feeds them with compost in spring.\n\nQuestion: When does the gardener "
            "water the roses?\nAnswer: The gardener waters the roses early in the morning, "
            "before the heat of the day.")


@dataclass(frozen=True)
class LoopConfig:
    max_rounds: int = 2
    requery_k: int = 2  # passages retrieved per failed claim
    # Passages shown to the reader when it refines: the draft's budget, since on a CPU the
    # prompt pass is most of a rewrite's cost; the critic still reads every re-retrieved one.
    max_passages: int = 3
    max_new_tokens: int = 48  # one to three short sentences; decode is ~10 tokens/s on CPU
    # Quote the rejected claims in the reader's prompt, not only the sentences that contradict
    # them. Off by default: the embedded 0.5B reader copies a claim it is shown back into its
    # answer (docs/elevate.md: 1 of 4 rewrites right with the claims quoted, 3 of 4 without,
    # 0 of 4 when the draft was shown as well). A larger instruction model may use them.
    show_rejected: bool = False


def _passage_block(passages: Sequence[str]) -> str:
    return "\n\n".join(f"Passage {i}: {p}" for i, p in enumerate(passages, start=1))


def answer_prompt(question: str, passages: Sequence[str], note: str = "") -> str:
    return (f"{_ANSWER_INSTRUCTION}\n\n{_EXAMPLE}\n\n{note}{_passage_block(passages)}\n\n"
            f"Question: {question}\nAnswer:")


def correction_signal(failed: Sequence[tuple[Claim, ClaimVerdict]]) -> str:
    """One line per rejected claim: the contradicting sentence, or that nothing backs it."""
    lines = []
    for claim, verdict in failed:
        if verdict.label == "contradicted" and verdict.evidence:
            lines.append(f'- "{claim.text}" is contradicted by the passage sentence: '
                         f'"{verdict.evidence}"')
        else:
            lines.append(f'- "{claim.text}" is not backed by any passage.')
    return "\n".join(lines)


def refine_prompt(question: str, passages: Sequence[str],
                  failed: Sequence[tuple[Claim, ClaimVerdict]], show_rejected: bool = False) -> str:
    """The answer prompt again, led by the correction: the evidence sentences that contradict
    the failed claims come first, as passages of their own, so the reader answers from what the
    passages say where its draft went wrong. The draft is not shown, since a small reader
    "corrects" a draft by copying it; the rejected claims only with `show_rejected`."""
    pointers = [v.evidence for _, v in failed if v.label == "contradicted" and v.evidence]
    note = (f"A critic rejected these claims of an earlier answer:\n"
            f"{correction_signal(failed)}\n\n" if show_rejected else "")
    return answer_prompt(question, [*dict.fromkeys(pointers), *passages], note)


def draft_answer(question: str, passages: Sequence[str], generator: Generator,
                 max_new_tokens: int = LoopConfig.max_new_tokens) -> str:
    """The reader's answer in the claim style (one to three sentences, one line)."""
    return trim_unfinished(generator.complete(
        answer_prompt(question, strip_instructions(passages)), max_new_tokens,
        stop_at_newline=True))


@dataclass
class LoopResult:
    text: str  # what ships: verified claims only, or an abstention
    draft: str
    rounds: int  # refinement rounds used (0: the draft verified, or nothing to verify)
    claims: list[tuple[Claim, ClaimVerdict]] = field(default_factory=list)  # the shipped round's
    corrections: list[str] = field(default_factory=list)  # the correction signal of each rewrite
    kept: list[Claim] = field(default_factory=list)  # what `text` is made of
    dropped: list[Claim] = field(default_factory=list)  # unverified at the end, not shipped
    generations: int = 1
    seconds: float = 0.0  # verification, re-retrieval and rewrites, the draft excluded

    @property
    def abstained(self) -> bool:
        return is_abstention(self.text)


def _evidence(passages: Sequence[Passage]) -> list[str]:
    """What the critic reads: each passage behind its paper's title, which names what the
    passage is about even when its sentences do not."""
    return [passage_input(p.title, p.text) for p in passages]


def _cite(verdict: ClaimVerdict, passages: Sequence[Passage]) -> str:
    return next((p.citation for p, text in zip(passages, _evidence(passages), strict=True)
                 if verdict.evidence and verdict.evidence in " ".join(text.split())), "")


def _retrieve_for(failed: Sequence[tuple[Claim, ClaimVerdict]], evidence: Sequence[Passage],
                  requery: Requery, k: int) -> list[Passage]:
    """Passages not yet in `evidence`, `k` searched with each failed claim as the query."""
    seen, found = {p.chunk_id for p in evidence}, []
    for claim, _ in failed:
        new = [p for p in requery(claim.text, k) if p.chunk_id not in seen]
        seen.update(p.chunk_id for p in new)
        found += new
    return found


def _recheck(judged: list[tuple[Claim, ClaimVerdict]], failed: list[tuple[Claim, ClaimVerdict]],
             critic: Critic, evidence: Sequence[Passage]
             ) -> tuple[list[tuple[Claim, ClaimVerdict]], list[tuple[Claim, ClaimVerdict]]]:
    """The failed claims verified again against the grown evidence: every verdict, and the
    claims still failing."""
    rechecked = critic.verify_many([c.text for c, _ in failed], _evidence(evidence))
    fixed = {c: v for (c, _), v in zip(failed, rechecked, strict=True)}
    judged = [(c, fixed[c] if c in fixed and fixed[c].verified else v) for c, v in judged]
    return judged, [(c, v) for c, v in fixed.items() if not v.verified]


def _verified_count(judged: Sequence[tuple[Claim, ClaimVerdict]]) -> int:
    return sum(v.verified for _, v in judged)


def refine(question: str, draft: str, passages: Sequence[Passage], generator: Generator,
           critic: Critic, requery: Requery | None = None,
           config: LoopConfig = LoopConfig()) -> LoopResult:
    """Verify `draft` (the reader's answer from `passages`) claim by claim and refine it."""
    started = time.perf_counter()
    evidence = list(passages)
    text, rounds, generations = draft, 0, 1
    best: list[tuple[Claim, ClaimVerdict]] = []  # the round with the most verified claims
    corrections: list[str] = []
    while not is_abstention(text):
        claims = split_claims(text, question)
        verdicts = critic.verify_many([c.text for c in claims], _evidence(evidence))
        judged = list(zip(claims, verdicts, strict=True))
        failed = [(c, v) for c, v in judged if not v.verified]
        if failed and rounds < config.max_rounds:
            rounds += 1
            if requery is not None:
                evidence += _retrieve_for(failed, evidence, requery, config.requery_k)
                judged, failed = _recheck(judged, failed, critic, evidence)
        if _verified_count(judged) >= _verified_count(best):  # a tie goes to the correction
            best = judged
        if not failed or generations > rounds:
            break  # all verified, or no round left (every rewrite asked for has been checked)
        shown = strip_instructions([p.text for p in evidence[:config.max_passages]])
        corrections.append(correction_signal(failed))
        rewrite = trim_unfinished(generator.complete(
            refine_prompt(question, shown, failed, config.show_rejected),
            config.max_new_tokens, stop_at_newline=True))
        generations += 1
        if rewrite == text:
            break  # the reader will not change it: another round would cost the same for nothing
        text = rewrite
    kept = [Claim(c.text, c.citation or _cite(v, evidence)) for c, v in best if v.verified]
    dropped = [c for c, v in best if not v.verified]
    final = join_claims(kept) if kept else ABSTAIN
    return LoopResult(final, draft, rounds, claims=best, kept=kept, dropped=dropped,
                      generations=generations, corrections=corrections,
                      seconds=time.perf_counter() - started)
