"""ELEVATE: retrieve, verify every claim, refine (see docs/elevate.md).

`verify_claim(claim, evidence)` is the critic's stable entry point: the rule checks, plus the
corpus-trained claim classifier once the `claim_classifier` asset has saved one under
`<data>/models/claim_classifier`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from lab_pipelines.elevate.critic import ClaimVerdict, Critic
from lab_pipelines.paths import data_dir

CLASSIFIER_DIR = "claim_classifier"  # under <data>/models
THRESHOLD_FILE = "veto_threshold.json"  # beside the classifier: set on its held-out pairs


def save_threshold(folder: Path, threshold: float) -> None:
    (folder / THRESHOLD_FILE).write_text(json.dumps({"veto_threshold": threshold}))


def load_critic(folder: Path, device: str = "cpu") -> Critic:
    """Rules + the classifier saved in `folder`, vetoing below its held-out threshold."""
    from lab_pipelines.elevate.classifier import ClaimClassifier
    from lab_pipelines.models import load_cross_encoder

    threshold = json.loads((folder / THRESHOLD_FILE).read_text())["veto_threshold"]
    return Critic(judge=ClaimClassifier(load_cross_encoder(str(folder), device)),
                  threshold=threshold)


@lru_cache(maxsize=1)
def default_critic() -> Critic:
    """Rules + the saved claim classifier, or rules alone before one is trained."""
    folder = data_dir() / "models" / CLASSIFIER_DIR
    if not (folder / THRESHOLD_FILE).exists():
        return Critic()
    return load_critic(folder)


def verify_claim(claim: str, evidence: list[str] | Sequence[str]) -> ClaimVerdict:
    """Is `claim` supported, contradicted, or not backed by `evidence` (passage texts)?"""
    return default_critic().verify(claim, list(evidence))


__all__ = ["ClaimVerdict", "Critic", "default_critic", "load_critic", "verify_claim"]
