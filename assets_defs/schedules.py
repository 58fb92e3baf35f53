"""Jobs, the nightly benchmark schedule, and a sensor that ingests new PDFs."""

import hashlib

import dagster as dg

from assets_defs import runs
from lab_pipelines.paths import data_dir

paper_library_job = dg.define_asset_job(
    "paper_library_job",
    selection=dg.AssetSelection.assets("paper_pdfs", "pdf_chunks", "chunk_embeddings"),
    description="Parse, chunk and embed the PDFs in the library folder.",
    # Three short steps: one process avoids ~4 s of subprocess start-up per step.
    executor_def=runs.in_process,
)
all_benchmarks_job = dg.define_asset_job(
    "all_benchmarks_job",
    selection=dg.AssetSelection.all(),
    description="Everything: data, models, and the four benchmark tables.",
)

nightly_benchmarks = dg.ScheduleDefinition(
    name="nightly_benchmarks", job=all_benchmarks_job, cron_schedule="0 2 * * *",
    execution_timezone="UTC", default_status=dg.DefaultScheduleStatus.RUNNING,
)


def papers_fingerprint() -> str:
    """Changes whenever a PDF in the default library folder is added, removed or rewritten."""
    folder = data_dir() / "papers"
    entries = sorted(
        f"{p.relative_to(folder)}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
        for p in folder.rglob("*.pdf")
    ) if folder.is_dir() else []
    return hashlib.sha256("\n".join(entries).encode()).hexdigest()


@dg.sensor(job=paper_library_job, minimum_interval_seconds=60,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Ingests the library when a PDF in data/papers is added, changed or removed.")
def new_papers_sensor(context: dg.SensorEvaluationContext):
    fingerprint = papers_fingerprint()
    if fingerprint == context.cursor:
        return dg.SkipReason("The paper library has not changed.")
    context.update_cursor(fingerprint)
    return dg.RunRequest(run_key=fingerprint)


JOBS = [paper_library_job, all_benchmarks_job]
SCHEDULES = [nightly_benchmarks]
SENSORS = [new_papers_sensor]
