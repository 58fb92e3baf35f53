"""Runs that die do not block the lab.

A run whose process is killed (kill -9, OOM, a closed laptop) stays STARTED in the instance and
keeps the pool slots its steps claimed, so the next step on that card waits forever. The daemon's
run monitoring cannot see this for the default run launcher (it has no worker health check) and
CLI runs have no daemon at all. So every run of this code location goes through an executor that
first stamps the run with its own process identity, then reaps: any STARTED run on this host
whose process is gone is marked failed and its slots are freed. It keeps reaping every few
seconds while the run lasts, because a step may already be queued behind a run that dies later.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
from dagster._core.events import DagsterEvent
from dagster._core.execution.context.system import PlanOrchestrationContext
from dagster._core.execution.plan.plan import ExecutionPlan
from dagster._core.execution.retries import RetryMode
from dagster._core.execution.step_dependency_config import StepDependencyConfig
from dagster._core.executor.base import Executor

HOST_TAG = "lab/host"
PID_TAG = "lab/pid"
# A pid alone can be reused by a new process; the kernel's start time of the process cannot.
PROCESS_START_TAG = "lab/process_start"
REAP_EVERY_S = 5.0


def process_start(pid: int) -> str | None:
    """Start time of process `pid` in clock ticks since boot, or None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; fields after its closing parenthesis are fixed.
    return stat.rsplit(")", 1)[1].split()[19]


def own_process_tags() -> dict[str, str]:
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid()),
            PROCESS_START_TAG: process_start(os.getpid()) or ""}


def _is_dead(run: dg.DagsterRun) -> bool:
    tags = run.tags
    if tags.get(HOST_TAG) != socket.gethostname() or PID_TAG not in tags:
        return False  # another machine's process, or a run from before the tags: cannot tell
    return process_start(int(tags[PID_TAG])) != tags.get(PROCESS_START_TAG)


def reap_dead_runs(instance: dg.DagsterInstance, keep_run_id: str = "") -> dict[str, int]:
    """Mark failed every STARTED run on this host whose process is gone and free its pool slots.
    Returns run id -> number of slots freed."""
    reaped = {}
    records = instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
    for record in records:
        run = record.dagster_run
        if run.run_id == keep_run_id or not _is_dead(run):
            continue
        instance.report_run_failed(run, message=(
            f"Marked failed by run {keep_run_id or '(none)'}: process {run.tags[PID_TAG]} on "
            f"{run.tags[HOST_TAG]} is gone."))
        reaped[run.run_id] = instance.event_log_storage.free_concurrency_slots_for_run(
            run.run_id) or 0
    return reaped


class ReapingExecutor(Executor):
    """Wraps an executor: stamps the run, reaps dead runs, then lets the inner one work."""

    def __init__(self, inner: Executor) -> None:
        self._inner = inner

    @property
    def retries(self) -> RetryMode:
        return self._inner.retries

    @property
    def step_dependency_config(self) -> StepDependencyConfig:
        return self._inner.step_dependency_config

    def _reap(self, instance: dg.DagsterInstance, run: dg.DagsterRun) -> None:
        for run_id, freed in reap_dead_runs(instance, run.run_id).items():
            instance.report_engine_event(
                f"Run {run_id} had lost its process: marked failed, {freed} pool slot(s) freed.",
                dagster_run=run)

    def execute(self, plan_context: PlanOrchestrationContext,
                execution_plan: ExecutionPlan) -> Iterator[DagsterEvent]:
        instance, run = plan_context.instance, plan_context.dagster_run
        instance.add_run_tags(run.run_id, own_process_tags())
        self._reap(instance, run)
        done = threading.Event()

        def keep_reaping() -> None:
            while not done.wait(REAP_EVERY_S):
                self._reap(instance, run)

        watcher = threading.Thread(target=keep_reaping, name="lab-reaper", daemon=True)
        watcher.start()
        try:
            yield from self._inner.execute(plan_context, execution_plan)
        finally:
            done.set()
            watcher.join()


def reaping(executor_def: dg.ExecutorDefinition) -> dg.ExecutorDefinition:
    """The same executor, with the same config, wrapped in `ReapingExecutor`."""
    def create(init_context: dg.InitExecutorContext) -> Executor:
        return ReapingExecutor(executor_def.executor_creation_fn(init_context))

    return dg.ExecutorDefinition(
        name=executor_def.name, config_schema=executor_def.config_schema,
        requirements=executor_def.get_requirements, executor_creation_fn=create,
        description=executor_def.description)


multiprocess = reaping(dg.multiprocess_executor)
in_process = reaping(dg.in_process_executor)
