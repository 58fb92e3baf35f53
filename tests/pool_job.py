"""A job of three card-pinned steps for the pool test; importable so that the multiprocess
executor can rebuild it in each step's subprocess."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import dagster as dg

POOLS = {"first_on_gpu0": "gpu0", "second_on_gpu0": "gpu0", "beside_on_gpu1": "gpu1"}


def _card_step(name: str, pool: str) -> dg.AssetsDefinition:
    @dg.asset(name=name, pool=pool)
    def step() -> None:
        started = time.time()
        time.sleep(4.0)
        record = {"start": started, "end": time.time(), "pid": os.getpid()}
        (Path(os.environ["POOL_TEST_DIR"]) / f"{name}.json").write_text(json.dumps(record))

    return step


def pool_job() -> dg.JobDefinition:
    defs = dg.Definitions(
        assets=[_card_step(name, pool) for name, pool in POOLS.items()],
        jobs=[dg.define_asset_job("pool_job", executor_def=dg.multiprocess_executor)],
    )
    return defs.resolve_job_def("pool_job")
