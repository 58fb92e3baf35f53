"""The k8s profile: its Definitions load without a cluster, steps run in pods through the
dagster-k8s executor, and exactly the card steps ask for a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from lab_pipelines.paths import REPO_ROOT

# Loaded in a fresh interpreter: the profile is read once, when the code location is imported.
PROBE = """
import json
from assets_defs.definitions import defs
job = defs.resolve_implicit_global_asset_job_def()
config = job.executor_def.config_schema.resolve_config({}).value["config"]
pools = {a.node_def.name: a.node_def.pool for a in defs.assets}
print(json.dumps({"executor": job.executor_def.name, "config": config, "pools": pools,
                  "devices": [defs.resources[k].device for k in ("gpu0", "gpu1")]}))
"""


def _probe(profile: str) -> dict:
    env = {**os.environ, "LAB_PROFILE": profile}
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=180, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_k8s_definitions_request_a_gpu_for_every_card_step_and_no_other():
    k8s = _probe("k8s")
    assert k8s["executor"] == "k8s_gpu_steps"
    per_step = k8s["config"]["per_step_k8s_config"]
    card_steps = {step for step, pool in k8s["pools"].items() if pool in ("gpu0", "gpu1")}
    assert {"chunk_embeddings", "cmc_model", "rag_benchmark"} <= card_steps
    assert set(per_step) == card_steps
    for config in per_step.values():
        assert config["container_config"]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "benchmark_report" not in per_step and "movielens_ratings" not in per_step
    # One GPU per pod: whichever card role a step has, it finds its card at cuda:0.
    assert k8s["devices"] == ["cuda:0", "cuda:0"]


def test_deploy_instance_config_is_valid_for_dagster_and_its_k8s_launcher(monkeypatch):
    from dagster._config import process_config
    from dagster._core.instance.config import dagster_instance_config
    from dagster_k8s import K8sRunLauncher

    for name in ("DAGSTER_PG_HOST", "DAGSTER_PG_USERNAME", "DAGSTER_PG_PASSWORD",
                 "DAGSTER_PG_DB"):
        monkeypatch.setenv(name, "x")
    config, _ = dagster_instance_config(str(REPO_ROOT / "deploy"))
    assert config["run_launcher"]["class"] == "K8sRunLauncher"
    assert config["run_monitoring"]["free_slots_after_run_end_seconds"] > 0
    launcher = process_config(K8sRunLauncher.config_type(), config["run_launcher"]["config"])
    assert launcher.success, launcher.errors
