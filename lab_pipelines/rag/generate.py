"""Answer generation with a causal LM: prompt formats, greedy decoding, abstention detection.

Two prompt formats, because for a small instruction model the format matters as much as the
retrieval (see docs/rag.md for the measurement):
- `completion`: an instruction and one worked example, then `Question: ... Answer:`; decoding
  stops at the end of the line, which keeps answers to a short span;
- `chat`: the same instruction as a system message through the tokenizer's chat template.
Both tell the model to answer only from the passages and to say "I don't know" otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

import torch

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
# A worked example that is about nothing in the library, so it cannot leak an answer.
_EXAMPLE_PASSAGE = "The bridge opened in 1932 after six years of work and carries eight lanes."
_EXAMPLE_QUESTION = "How many lanes does the bridge carry?"
_EXAMPLE_ANSWER = "eight lanes"
_CLOSED_BOOK_EXAMPLE = ("How many wheels does a bicycle have?", "two")

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


def build_prompt(question: str, passages: Sequence[str] | None, prompt_format: PromptFormat,
                 tokenizer=None) -> str:
    """The full prompt text. `passages=None` is the closed-book (vanilla) prompt."""
    if prompt_format == "completion":
        if passages is None:
            example_q, example_a = _CLOSED_BOOK_EXAMPLE
            return (f"{_CLOSED_BOOK_INSTRUCTION}\n\nQuestion: {example_q}\nAnswer: {example_a}"
                    f"\n\nQuestion: {question}\nAnswer:")
        return (f"{_RAG_INSTRUCTION}\n\nPassage 1: {_EXAMPLE_PASSAGE}\nQuestion: "
                f"{_EXAMPLE_QUESTION}\nAnswer: {_EXAMPLE_ANSWER}\n\n{_passage_block(passages)}\n"
                f"Question: {question}\nAnswer:")
    if prompt_format == "chat":
        if tokenizer is None or tokenizer.chat_template is None:
            raise ValueError("The chat prompt format needs a tokenizer with a chat template.")
        if passages is None:
            messages = [{"role": "system", "content": _CLOSED_BOOK_INSTRUCTION},
                        {"role": "user", "content": question}]
        else:
            messages = [{"role": "system", "content": _RAG_INSTRUCTION},
                        {"role": "user",
                         "content": f"{_passage_block(passages)}\n\nQuestion: {question}"}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    raise ValueError(f"Unknown prompt format {prompt_format!r}; choose one of {PROMPT_FORMATS}.")


class Generator:
    """Greedy answers from a (model, tokenizer) pair loaded by `models.load_causal_lm`."""

    def __init__(self, model, tokenizer, prompt_format: PromptFormat = "completion",
                 max_new_tokens: int = 32) -> None:
        if prompt_format not in PROMPT_FORMATS:
            raise ValueError(f"Unknown prompt format {prompt_format!r}; "
                             f"choose one of {PROMPT_FORMATS}.")
        self.model, self.tokenizer = model, tokenizer
        self.prompt_format = prompt_format
        self.max_new_tokens = max_new_tokens
        self.device = next(model.parameters()).device

    def answer(self, question: str, passages: Sequence[str] | None = None) -> str:
        prompt = build_prompt(question, passages, self.prompt_format, self.tokenizer)
        # The chat template already carries the special tokens; do not add a second BOS.
        enc = self.tokenizer(prompt, return_tensors="pt",
                             add_special_tokens=self.prompt_format == "completion").to(self.device)
        one_line = self.prompt_format == "completion"  # its example answer ends at a newline
        # Stop at the newline when the vocabulary has one (word-piece vocabularies do not).
        stop = {"stop_strings": ["\n"], "tokenizer": self.tokenizer} if (
            one_line and self.tokenizer("\n", add_special_tokens=False)["input_ids"]) else {}
        with torch.inference_mode():
            # Only ids and mask: some tokenizers add token_type_ids that causal LMs reject.
            out = self.model.generate(input_ids=enc["input_ids"],
                                      attention_mask=enc["attention_mask"], max_new_tokens=self.max_new_tokens, do_sample=False,
                                      pad_token_id=self.tokenizer.pad_token_id, **stop)
        text = self.tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        return (text.strip().split("\n")[0] if one_line else text).strip()
