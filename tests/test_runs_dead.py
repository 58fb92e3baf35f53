"""A CLI run killed with -9 mid-step must not block the next run on its card.

The module doubles as the small code location the CLI runs (`-f` this file): two gpu0 assets
under the lab's own executor. The slow one opens a DuckDB write transaction under the lab's
table lock and is killed inside it.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from assets_defs import runs
from lab_pipelines.paths import REPO_ROOT
from lab_pipelines.tables import append_rows, locked_connection, read_table

TABLE = "dead_run_probe"
DAGSTER = str(Path(sys.executable).with_name("dagster"))


def _db() -> Path:
    return Path(os.environ["LAB_DATA_DIR"]) / "lab.duckdb"


@dg.asset(pool="gpu0")
def killed_mid_write(context: dg.AssetExecutionContext) -> None:
    with locked_connection(_db()) as con:
        con.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (x BIGINT, run_id VARCHAR, "
                    "created_at TIMESTAMPTZ)")
        con.execute("BEGIN TRANSACTION")
        con.execute(f"INSERT INTO {TABLE} SELECT range, ?, now() FROM range(1000)",
                    [context.run.run_id])
        (Path(os.environ["LAB_DATA_DIR"]) / "mid_write").write_text(context.run.run_id)
        time.sleep(600)
        con.execute("COMMIT")


@dg.asset(pool="gpu0")
def next_on_gpu0(context: dg.AssetExecutionContext) -> None:
    append_rows(TABLE, [{"x": 1}], run_id=context.run.run_id, db_path=_db())


defs = dg.Definitions(assets=[killed_mid_write, next_on_gpu0], executor=runs.multiprocess)


def _materialize(asset: str, env: dict[str, str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen([DAGSTER, "asset", "materialize", "-f", __file__, "--select", asset],
                            env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kwargs)


@pytest.mark.timeout(400)
def test_killed_cli_run_is_reaped_and_frees_its_slot(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(REPO_ROOT / ".dagster_home" / "dagster.yaml", home / "dagster.yaml")
    data = tmp_path / "data"
    data.mkdir()
    env = {**os.environ, "DAGSTER_HOME": str(home), "LAB_DATA_DIR": str(data)}

    # A session of its own, so kill -9 takes the run process and its step subprocess together,
    # as a crash or an OOM kill of the whole run would.
    victim = _materialize("killed_mid_write", env, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not (data / "mid_write").exists():
            assert victim.poll() is None, victim.stdout.read()
            assert time.monotonic() < deadline, "the first run never reached its write"
            time.sleep(0.5)
    finally:
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait()
    killed_run_id = (data / "mid_write").read_text()

    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_run_by_id(killed_run_id).status == dg.DagsterRunStatus.STARTED
        held = instance.event_log_storage.get_concurrency_info("gpu0").active_run_ids
        assert held == {killed_run_id}, "the killed run should still hold the gpu0 slot"

    started = time.monotonic()
    survivor = _materialize("next_on_gpu0", env)
    try:
        out, _ = survivor.communicate(timeout=240)
    finally:
        survivor.kill()  # only matters when it hung: a blocked run must not outlive the test
    took = time.monotonic() - started
    assert survivor.returncode == 0, out
    print(f"second run on gpu0 finished in {took:.1f} s")

    with dg.DagsterInstance.from_config(str(home)) as instance:
        killed = instance.get_run_by_id(killed_run_id)
        assert killed.status == dg.DagsterRunStatus.FAILURE
        assert not instance.event_log_storage.get_concurrency_info("gpu0").claimed_slots
        survivor_run = instance.get_runs(limit=1)[0]
        reap_notes = [e.message for e in instance.all_logs(survivor_run.run_id)
                      if killed_run_id in (e.message or "")]
        assert reap_notes and "pool slot(s) freed" in reap_notes[0]
    rows = read_table(TABLE, data / "lab.duckdb")
    assert rows["run_id"].to_list() == [survivor_run.run_id], "the killed write left rows behind"
