"""Resources, chosen per deployment profile (`LAB_PROFILE`), the way Dagster's example
projects pick resources by deployment. Assets never change between profiles."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from lab_pipelines import models, paths
from lab_pipelines.devices import resolve_device


class CardResource(dg.ConfigurableResource):
    """One accelerator card. One resource key per card (`gpu0`, `gpu1`) because two assets
    cannot share a key with different configs; the pool of the same name serialises steps."""

    device: str = "auto"

    def resolve(self) -> str:
        """The device string to use here, after the honest fallbacks in `devices.py`."""
        return resolve_device(self.device)


class LabResource(dg.ConfigurableResource):
    """Where the lab's data lives and which profile's budgets apply."""

    profile: str = "embedded"
    data_dir: str = ""  # empty: $LAB_DATA_DIR at run time, else data/ in the repo

    def root(self) -> Path:
        return Path(self.data_dir) if self.data_dir else paths.data_dir()

    def duckdb_path(self) -> Path:
        return self.root() / "lab.duckdb"

    def lancedb_uri(self) -> Path:
        return self.root() / "lancedb"

    @property
    def is_gpu_profile(self) -> bool:
        return self.profile == "gpu"


class ModelRegistry(dg.ConfigurableResource):
    """Model specs (see `lab_pipelines.models`): `packaged:<name>`, a local folder, or a hub id
    already in the local cache. An empty re-ranker means the one trained on the corpus (behind
    its quality gate), "none" the hybrid order."""

    embedder: str = models.EMBEDDER_DEFAULT
    generator: str = models.GENERATOR_DEFAULT
    reranker: str = ""


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


def _big_models() -> ModelRegistry:
    return ModelRegistry(
        embedder=_env("LAB_EMBEDDER", "BAAI/bge-large-en-v1.5"),
        generator=_env("LAB_GENERATOR", "meta-llama/Meta-Llama-3-8B-Instruct"),
        reranker=_env("LAB_RERANKER", "BAAI/bge-reranker-base"),
    )


RESOURCES_BY_PROFILE: dict[str, dict[str, dg.ConfigurableResource]] = {
    # CPU, models that ship in packages, small budgets; a card is still used if one exists.
    "embedded": {
        "gpu0": CardResource(device="auto"),
        "gpu1": CardResource(device="auto"),
        "lab": LabResource(profile="embedded"),
        "models": ModelRegistry(),
    },
    # Two cards and the user's big models (local folders or the HF cache), full budgets.
    "gpu": {
        "gpu0": CardResource(device="cuda:0"),
        "gpu1": CardResource(device="cuda:1"),
        "lab": LabResource(profile="gpu"),
        "models": _big_models(),
    },
    # A Kubernetes cluster (deploy/, docs/scaling.md): every card step runs in a pod of its
    # own that requests one GPU, so inside the pod that card is always cuda:0. Data lives on
    # the shared volume LAB_DATA_DIR points at.
    "k8s": {
        "gpu0": CardResource(device="cuda:0"),
        "gpu1": CardResource(device="cuda:0"),
        "lab": LabResource(profile="gpu"),  # the gpu profile's full budgets
        "models": _big_models(),
    },
}


def profile_name(profile: str | None = None) -> str:
    name = profile or os.environ.get("LAB_PROFILE", "embedded")
    if name not in RESOURCES_BY_PROFILE:
        raise ValueError(f"LAB_PROFILE={name!r}: choose one of {sorted(RESOURCES_BY_PROFILE)}.")
    return name


def resources_for(profile: str | None = None) -> dict[str, dg.ConfigurableResource]:
    return RESOURCES_BY_PROFILE[profile_name(profile)]
