"""ELEVATE: retrieve, verify every claim, refine (see docs/elevate.md).

`verify_claim(claim, evidence)` is the critic's stable entry point: the rule checks, plus the
corpus-trained claim classifier once the `claim_classifier` asset has saved one under
`<data>/models/claim_classifier`.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from lab_pipelines.elevate.critic import ClaimVerdict, Critic
from lab_pipelines.paths import data_dir

CLASSIFIER_DIR = "claim_classifier"  # under <data>/models


@lru_cache(maxsize=1)
def default_critic() -> Critic:
    """Rules + the saved claim classifier, or rules alone before one is trained."""
    folder = data_dir() / "models" / CLASSIFIER_DIR
    if not (folder / "config.json").exists():
        return Critic()
    from lab_pipelines.elevate.classifier import ClaimClassifier
    from lab_pipelines.models import load_cross_encoder

    return Critic(judge=ClaimClassifier(load_cross_encoder(str(folder))))


def verify_claim(claim: str, evidence: list[str] | Sequence[str]) -> ClaimVerdict:
    """Is `claim` supported, contradicted, or not backed by `evidence` (passage texts)?"""
    return default_critic().verify(claim, list(evidence))


__all__ = ["ClaimVerdict", "Critic", "default_critic", "verify_claim"]
