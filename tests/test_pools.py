"""Card pools: with the instance config that set-up writes, two steps on gpu0 never overlap,
while a gpu1 step runs beside them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.definitions.reconstruct import ReconstructableJob

from lab_pipelines.paths import REPO_ROOT
import pool_job
from pool_job import POOLS


@pytest.mark.timeout(240)
def test_gpu0_steps_are_serialised_and_gpu1_runs_beside(tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(REPO_ROOT / ".dagster_home" / "dagster.yaml", home / "dagster.yaml")
    records = tmp_path / "records"
    records.mkdir()
    monkeypatch.setenv("POOL_TEST_DIR", str(records))
    monkeypatch.setenv("DAGSTER_HOME", str(home))

    with dg.DagsterInstance.get() as instance:
        # Step subprocesses rebuild the job from this file path: tests/ is not a package.
        job = ReconstructableJob.for_file(str(Path(pool_job.__file__)), "pool_job")
        result = dg.execute_job(job, instance=instance)
        assert result.success

    spans = {name: json.loads((records / f"{name}.json").read_text()) for name in POOLS}
    first, second = spans["first_on_gpu0"], spans["second_on_gpu0"]
    gpu0_overlap = min(first["end"], second["end"]) - max(first["start"], second["start"])
    assert gpu0_overlap <= 0, "two gpu0 steps ran at the same time"
    beside = spans["beside_on_gpu1"]
    overlaps = [min(beside["end"], s["end"]) - max(beside["start"], s["start"])
                for s in (first, second)]
    assert max(overlaps) > 0, "the gpu1 step waited for gpu0 although it uses another card"
    assert len({s["pid"] for s in spans.values()}) == 3, "steps ran in separate processes"
