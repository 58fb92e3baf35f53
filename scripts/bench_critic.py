"""Measure ELEVATE critics on a claim set without Dagster, and the judge threshold that the
critic would use, swept: the tool behind the development-set choices in docs/elevate.md. The
development set is the default (thresholds are chosen there); `--claims data/eval/claims.jsonl`
reports the test set at a fixed `--threshold`, never swept.

    .venv/bin/python scripts/bench_critic.py --judge rules llm classifier
    .venv/bin/python scripts/bench_critic.py --claims data/eval/claims.jsonl --judge llm \
        --threshold 0.4

`llm` is the reader as a judge (lab_pipelines.elevate.critic.LLMJudge: P("Verified") from its
next-token scores); `classifier` the corpus-trained claim classifier the `claim_classifier`
asset saved. Prints balanced accuracy, faithful claims kept and contradictions caught.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from lab_pipelines import machine, models, paths
from lab_pipelines.elevate import CLASSIFIER_DIR
from lab_pipelines.elevate.claimset import balanced_accuracy, load_claims
from lab_pipelines.elevate.critic import Critic, LLMJudge, RuleConfig
from lab_pipelines.rag.qa import eval_split

THRESHOLDS = np.round(np.arange(0.05, 1.0, 0.05), 2)


def _judge(name: str, device: str):
    if name == "llm":
        return LLMJudge(*models.load_causal_lm(models.reader_default(), device,
                                                paths.data_dir() / "models"))
    if name == "classifier":
        from lab_pipelines.elevate.classifier import ClaimClassifier

        folder = paths.data_dir() / "models" / CLASSIFIER_DIR
        return ClaimClassifier(models.load_cross_encoder(str(folder), device))
    raise ValueError(f"Unknown judge {name!r}; choose rules, llm or classifier.")


def _rates(truth: np.ndarray, said: np.ndarray) -> tuple[float, float, float]:
    return balanced_accuracy(truth, said), float(said[truth].mean()), float((~said[~truth]).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--claims", default="data/eval/claims_dev.jsonl")
    parser.add_argument("--judge", nargs="+", default=["rules", "llm"])
    parser.add_argument("--threshold", type=float, help="report this threshold only")
    parser.add_argument("--min-word-share", type=float, default=RuleConfig.min_word_share)
    parser.add_argument("--window", type=int, default=RuleConfig.window)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    cases = load_claims(paths.REPO_ROOT / args.claims)
    truth = np.array([c.label == "supported" for c in cases])
    rules = RuleConfig(min_word_share=args.min_word_share, window=args.window)
    print(f"{args.claims} (split {eval_split(args.claims)}), {len(cases)} cases; "
          f"machine: {machine.describe()}")
    for name in args.judge:
        started = time.perf_counter()
        judge = None if name == "rules" else _judge(name, args.device)
        # Threshold 0 keeps every judged claim, so each verdict carries the judge's score and
        # any threshold can be applied afterwards without scoring again.
        verdicts = [Critic(judge=judge, threshold=0.0, rule_config=rules).verify(
            c.claim, [c.evidence]) for c in cases]
        seconds = time.perf_counter() - started
        judged = np.array([v.reason.startswith("judge") for v in verdicts])
        passed = np.array([v.verified for v in verdicts])
        scores = np.array([v.score for v in verdicts])
        # A judge's scores need not spread over [0, 1] (the 0.5B reader puts P("Verified")
        # under 0.5 for every claim): the sweep also takes the deciles of its own scores.
        deciles = np.quantile(scores[judged], np.linspace(0.1, 0.9, 9)) if judged.any() else []
        sweep = ([args.threshold] if args.threshold is not None
                 else sorted({*THRESHOLDS, *np.round(deciles, 4)}) if judge is not None
                 else [0.0])
        print(f"\n{name}: {seconds:.0f} s, {judged.sum()} claims judged past the rules")
        for t in sweep:
            said = passed & (~judged | (scores >= t))
            balanced, kept, caught = _rates(truth, said)
            print(f"  threshold {t:.4f}: balanced {balanced:.3f}  faithful kept {kept:.3f}  "
                  f"contradictions caught {caught:.3f}")


if __name__ == "__main__":
    main()
