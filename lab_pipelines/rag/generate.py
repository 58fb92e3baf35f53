"""Answer generation with a causal LM: prompt formats, greedy decoding, abstention detection.

Two prompt formats, because for a small instruction model the format matters as much as the
retrieval (see docs/rag.md for the measurement):
- `completion`: an instruction and one worked example, then `Question: ... Answer:`; decoding
  stops at the end of the line, which keeps answers to a short span;
- `chat`: the same instruction as a system message and the example as an earlier exchange,
  through the tokenizer's chat template.
Both tell the model to answer only from the passages and to say "I don't know" otherwise.
Timing is split into prefill and decode (`GenerationStats`), since on CPU the prompt pass over
several passages, not the few answer tokens, is what a reader's latency is made of.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from transformers.generation.streamers import BaseStreamer

from lab_pipelines.rag.qa import normalize_answer

PromptFormat = Literal["completion", "chat"]
PROMPT_FORMATS: tuple[str, ...] = ("completion", "chat")
ABSTAIN = "I don't know"

_RAG_INSTRUCTION = (
    "Answer the question in a few words using only the passages. If the passages do not "
    f'contain the answer, answer "{ABSTAIN}".'
)
_CLOSED_BOOK_INSTRUCTION = (
    f'Answer the question in a few words. If you are not sure of the answer, answer "{ABSTAIN}".'
)
# The worked example holds no number and no name: anything a reader copies from it into an
# answer about the library would be plainly wrong, never a lucky leak.
_EXAMPLE_PASSAGE = ("The gardener waters the roses early in the morning, before the heat of "
                    "the day, and feeds them with compost in spring.")
_EXAMPLE_QUESTION = "When does the gardener water the roses?"
_EXAMPLE_ANSWER = "early in the morning"
_CLOSED_BOOK_EXAMPLE = ("What colour is fresh snow?", "white")

# Ways a model says it cannot answer, matched on the normalised answer.
_ABSTENTION = re.compile(
    r"\b(i don t know|i do not know|don t know|not (mentioned|provided|stated|specified|given|"
    r"available|in the passages?)|no information|cannot (be )?(answer|determined?)|can t answer|"
    r"unable to (answer|determine)|not enough information|unknown)\b"
)


def is_abstention(answer: str) -> bool:
    """True when the answer declines (\"I don't know\", \"not mentioned\", ...) or is empty."""
    text = normalize_answer(answer)
    return not text or bool(_ABSTENTION.search(text))


def _passage_block(passages: Sequence[str]) -> str:
    return "\n\n".join(f"Passage {i}: {p}" for i, p in enumerate(passages, start=1))


def _user_turn(question: str, passages: Sequence[str]) -> str:
    return f"{_passage_block(passages)}\n\nQuestion: {question}"


def build_prompt(question: str, passages: Sequence[str] | None, prompt_format: PromptFormat,
                 tokenizer=None) -> str:
    """The full prompt text. `passages=None` is the closed-book (vanilla) prompt.

    Both formats carry the same instruction and the same worked example (in `chat` as an
    earlier user/assistant exchange), so measuring one against the other measures the format.
    """
    if passages is None:
        instruction, (example_q, example_a) = _CLOSED_BOOK_INSTRUCTION, _CLOSED_BOOK_EXAMPLE
        example_user, user = example_q, question
    else:
        instruction, example_a = _RAG_INSTRUCTION, _EXAMPLE_ANSWER
        example_user = _user_turn(_EXAMPLE_QUESTION, [_EXAMPLE_PASSAGE])
        user = _user_turn(question, passages)
    if prompt_format == "completion":
        if passages is None:
            return (f"{instruction}\n\nQuestion: {example_user}\nAnswer: {example_a}"
                    f"\n\nQuestion: {user}\nAnswer:")
        return f"{instruction}\n\n{example_user}\nAnswer: {example_a}\n\n{user}\nAnswer:"
    if prompt_format == "chat":
        return chat_prompt(tokenizer, [
            {"role": "system", "content": instruction},
            {"role": "user", "content": example_user},
            {"role": "assistant", "content": example_a},
            {"role": "user", "content": user}])
    raise ValueError(f"Unknown prompt format {prompt_format!r}; choose one of {PROMPT_FORMATS}.")


def chat_prompt(tokenizer, messages: list[dict[str, str]]) -> str:
    """`messages` through the tokenizer's chat template, ready for the assistant's turn."""
    if tokenizer is None or tokenizer.chat_template is None:
        raise ValueError("The chat prompt format needs a tokenizer with a chat template.")
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


@dataclass(frozen=True)
class GenerationStats:
    """Where one generation's time went: the prompt pass (prefill) and token-by-token decode."""

    prompt_tokens: int
    new_tokens: int
    prefill_s: float  # prompt pass up to the first new token
    decode_s: float  # every later token
    confidence: float  # mean log-probability of the generated tokens (over the batch)


class _Clock(BaseStreamer):
    """`generate` hands a streamer the prompt, then each new token as it is made: the time of
    the first token marks the end of prefill without a second forward pass."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.first_token: float | None = None
        self.stop = self.start
        self.calls = 0

    def put(self, value) -> None:
        self.calls += 1
        if self.calls == 2:
            self.first_token = time.perf_counter()

    def end(self) -> None:
        self.stop = time.perf_counter()


class Generator:
    """Greedy generation from a (model, tokenizer) pair loaded by `models.load_causal_lm`.

    `answer` is the RAG reader; `complete` and `chat` are the primitives other experiments
    (ELEVATE's answer, refine and critic prompts) build their own prompts on. `last` holds the
    latest call's `GenerationStats`.
    """

    def __init__(self, model, tokenizer, prompt_format: PromptFormat = "completion",
                 max_new_tokens: int = 32) -> None:
        if prompt_format not in PROMPT_FORMATS:
            raise ValueError(f"Unknown prompt format {prompt_format!r}; "
                             f"choose one of {PROMPT_FORMATS}.")
        self.model, self.tokenizer = model, tokenizer
        self.prompt_format = prompt_format
        self.max_new_tokens = max_new_tokens
        self.device = next(model.parameters()).device
        # Word-piece vocabularies have no newline token, so they cannot stop on one.
        self._can_stop_at_newline = bool(tokenizer("\n", add_special_tokens=False)["input_ids"])
        self.last: GenerationStats | None = None
        eos = model.generation_config.eos_token_id
        eos = eos if isinstance(eos, list) else [eos] if eos is not None else []
        self._stop_ids = sorted({*eos, tokenizer.pad_token_id, tokenizer.eos_token_id} - {None})

    def complete(self, prompt: str, max_new_tokens: int | None = None,
                 stop_at_newline: bool = False, add_special_tokens: bool = True) -> str:
        """The greedy continuation of `prompt` (special tokens of a chat template already in the
        text call for `add_special_tokens=False`, or the model sees a second BOS)."""
        return self.complete_batch([prompt], max_new_tokens, stop_at_newline,
                                   add_special_tokens)[0][0]

    def complete_batch(self, prompts: Sequence[str], max_new_tokens: int | None = None,
                       stop_at_newline: bool = False, add_special_tokens: bool = True
                       ) -> list[tuple[str, float]]:
        """Greedy continuations of several prompts in one left-padded batch, each with the
        mean log-probability of its tokens (the reader's confidence in what it wrote).

        One batch costs the same prefill as the prompts one by one, but decodes them together:
        on a CPU each decode step reads every weight once whatever the batch size."""
        tokenizer = self.tokenizer
        side, tokenizer.padding_side = tokenizer.padding_side, "left"
        try:
            enc = tokenizer(list(prompts), return_tensors="pt", padding=True,
                            add_special_tokens=add_special_tokens).to(self.device)
        finally:
            tokenizer.padding_side = side
        stop = ({"stop_strings": ["\n"], "tokenizer": tokenizer}
                if stop_at_newline and self._can_stop_at_newline else {})
        clock = _Clock()
        with torch.inference_mode():
            out = self.model.generate(input_ids=enc["input_ids"],
                                      attention_mask=enc["attention_mask"],
                                      max_new_tokens=max_new_tokens or self.max_new_tokens,
                                      do_sample=False, pad_token_id=tokenizer.pad_token_id,
                                      output_scores=True, return_dict_in_generate=True,
                                      streamer=clock, **stop)
            new = out.sequences[:, enc["input_ids"].shape[1]:]
            logprobs = torch.stack(out.scores, dim=1).float().log_softmax(-1)
            chosen = logprobs.gather(-1, new.unsqueeze(-1)).squeeze(-1)
        # A sequence ends at its first end-of-turn/end-of-text token; later positions are pad.
        ends = torch.isin(new, torch.tensor(self._stop_ids, device=new.device))
        lengths = torch.where(ends.any(1), ends.int().argmax(1), new.shape[1])
        results = []
        for row, length, scores in zip(new, lengths.tolist(), chosen, strict=True):
            text = tokenizer.decode(row[:length], skip_special_tokens=True).strip()
            if stop_at_newline:
                text = text.split("\n")[0].strip()
            confidence = float(scores[:length].mean()) if length else float("-inf")
            results.append((text, confidence))
        first = clock.first_token or clock.stop
        self.last = GenerationStats(prompt_tokens=int(enc["attention_mask"].sum()),
                                    new_tokens=int(lengths.sum()), prefill_s=first - clock.start,
                                    decode_s=clock.stop - first,
                                    confidence=sum(c for _, c in results) / len(results))
        return results

    def chat(self, messages: list[dict[str, str]], max_new_tokens: int | None = None) -> str:
        """The assistant's reply to `messages`, through the tokenizer's chat template."""
        return self.complete(chat_prompt(self.tokenizer, messages), max_new_tokens,
                             add_special_tokens=False)

    def answer(self, question: str, passages: Sequence[str] | None = None) -> str:
        """A short answer, from `passages` or closed book when there are none."""
        return self.answers(question, [passages])[0][0]

    def answers(self, question: str, readings: Sequence[Sequence[str] | None]
                ) -> list[tuple[str, float]]:
        """`answer` for each passage list (one batch), each with its confidence."""
        prompts = [build_prompt(question, passages, self.prompt_format, self.tokenizer)
                   for passages in readings]
        completion = self.prompt_format == "completion"
        # The completion example's answer ends at a newline; a chat answer ends at end-of-turn.
        return self.complete_batch(prompts, stop_at_newline=completion,
                                   add_special_tokens=completion)
