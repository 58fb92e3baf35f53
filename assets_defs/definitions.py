"""Assembles the code location: `assets_defs.definitions:defs`. Nothing else happens here."""

from __future__ import annotations

import dagster as dg

from assets_defs import elevate, library, nerf, rag, rag_answer, recsys, reports, runs, schedules
from assets_defs.resources import profile_name, resources_for

DOMAINS = {
    "rag": [rag, rag_answer, library],
    "elevate": [elevate],
    "recsys": [recsys],
    "nerf": [nerf],
    "reports": [reports],
}

CARD_POOLS = ("gpu0", "gpu1")
# What a card step's pod asks Kubernetes for: one whole GPU (the pool keeps it to one step).
GPU_STEP_K8S_CONFIG = {"container_config": {"resources": {"limits": {"nvidia.com/gpu": 1}}}}

ASSETS = [
    asset
    for group, modules in DOMAINS.items()
    for asset in dg.load_assets_from_modules(modules, group_name=group)
]


def card_steps(assets: list[dg.AssetsDefinition]) -> list[str]:
    """Step keys of the assets that take a card's pool."""
    return sorted(a.node_def.name for a in assets if a.node_def.pool in CARD_POOLS)


def executor_for(profile: str) -> dg.ExecutorDefinition:
    """Locally every run reaps dead runs first (assets_defs/runs.py). On Kubernetes each step
    runs in its own pod and card steps request a GPU; there the run launcher's health check
    and run monitoring find dead runs, so no reaper is needed."""
    if profile != "k8s":
        return runs.multiprocess
    from dagster_k8s import k8s_job_executor  # the [k8s] extra

    return k8s_job_executor.configured(
        {"per_step_k8s_config": {step: GPU_STEP_K8S_CONFIG for step in card_steps(ASSETS)}},
        name="k8s_gpu_steps")


defs = dg.Definitions(
    assets=ASSETS,
    asset_checks=dg.load_asset_checks_from_modules(
        [module for modules in DOMAINS.values() for module in modules]
    ),
    jobs=schedules.JOBS,
    schedules=schedules.SCHEDULES,
    sensors=schedules.SENSORS,
    resources=resources_for(),
    executor=executor_for(profile_name()),
)
