"""Training really learns, is repeatable at a step budget, resumes where it was cut off, and
runs as Dagster assets."""

import json
from dataclasses import replace

import dagster as dg
import imageio.v3 as iio
import pytest
import torch

from assets_defs import nerf as nerf_assets
from assets_defs.resources import resources_for
from lab_pipelines.nerf import benchmark
from lab_pipelines.nerf.benchmark import TrainJob, train_all, trivial_baselines
from lab_pipelines.nerf.evaluate import evaluate
from lab_pipelines.nerf.scenes import scene_fingerprint
from lab_pipelines.nerf.synthetic import write_bouncing_balls
from lab_pipelines.nerf.train import TrainConfig, result_from_checkpoint, train
from lab_pipelines.tables import read_table


@pytest.fixture(scope="module")
def tiny_scene(tmp_path_factory):
    return write_bouncing_balls(tmp_path_factory.mktemp("scenes") / "tiny_balls", size=32, n_train=24,
                                n_val=2, n_test=4)


def test_fast_training_lowers_loss_and_beats_the_trivial_baselines(tiny_scene, tmp_path):
    cfg = TrainConfig(method="fast", iterations=200, batch_rays=512, log_every=20)
    result = train(tiny_scene, tmp_path, cfg)
    first, last = result.history[0], result.history[-1]
    assert result.steps == 200
    assert last["loss"] < 0.5 * first["loss"]
    # The checkpoint names the bytes it learnt from, so its rows stay labelled if the scene changes.
    assert result_from_checkpoint(result.checkpoint).scene_sha == scene_fingerprint(tiny_scene)
    scores = evaluate(result.checkpoint, tmp_path / "renders")
    baselines = trivial_baselines(tiny_scene, 2)
    assert scores.psnr > baselines["white_psnr"] + 3.0
    assert scores.psnr > baselines["mean_image_psnr"]
    assert scores.montage_png.stat().st_size > 0 and len(scores.views_png) == 4


def test_a_step_budget_gives_the_same_psnr_twice_whatever_else_draws_random_numbers(tiny_scene, tmp_path):
    cfg = TrainConfig(method="fast", iterations=40, batch_rays=256, log_every=20)
    first = evaluate(train(tiny_scene, tmp_path / "a", cfg).checkpoint, tmp_path / "ra").psnr
    torch.rand(1000)  # other work in the process draws from the global generator in between
    second = evaluate(train(tiny_scene, tmp_path / "b", cfg).checkpoint, tmp_path / "rb").psnr
    assert abs(first - second) <= 1e-6, (first, second)
    # The seed is what decides: another seed trains another field.
    other = evaluate(train(tiny_scene, tmp_path / "c", replace(cfg, seed=1)).checkpoint, tmp_path / "rc").psnr
    assert other != first


def test_trainings_side_by_side_end_with_the_fields_they_reach_one_at_a_time(tiny_scene, tmp_path, monkeypatch):
    jobs = [TrainJob(tiny_scene, TrainConfig(method=method, iterations=20, batch_rays=128, log_every=10))
            for method in ("fast", "dnerf")]
    alone = train_all(jobs[:1], tmp_path / "alone", "cpu", "cpu") + train_all(jobs[1:], tmp_path / "alone", "cpu", "cpu")
    monkeypatch.setattr(benchmark, "usable_cores", lambda: 2)  # two processes even on a 1-core runner
    assert benchmark.parallel_trainings("cpu", 2, 1) == 2 and benchmark.parallel_trainings("cuda:0", 2, 1) == 1
    lines = []
    together = train_all(jobs, tmp_path / "together", "cpu", "cpu", log=lines.append)
    assert [r.method for r in together] == ["fast", "dnerf"] and len(lines) == 2
    for one, other in zip(alone, together):
        a, b = (torch.load(r.checkpoint, weights_only=True)["model"] for r in (one, other))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_embedded_dnerf_learns_a_moving_scene_past_the_mean_image(tmp_path):
    # Before the encodings were sized to the images, the warp learnt noise and 200 steps of
    # the paper's MLPs ended at the mean-image baseline (16.1 vs 16.1 dB on this scene).
    scene = write_bouncing_balls(tmp_path / "balls", size=32, n_train=40, n_val=1, n_test=6)
    cfg = TrainConfig(method="dnerf", iterations=200, log_every=50)
    result = train(scene, tmp_path / "ckpt", cfg)
    scores = evaluate(result.checkpoint, tmp_path / "renders")
    baselines = trivial_baselines(scene, cfg.downscale)
    assert result.steps == 200
    assert scores.psnr > baselines["mean_image_psnr"] + 2.5, (scores.psnr, baselines)
    assert scores.ssim > baselines["mean_image_ssim"] + 0.3, (scores.ssim, baselines)


class PowerCut(Exception):
    pass


def test_resume_continues_from_the_saved_step(tiny_scene, tmp_path):
    cfg = TrainConfig(method="fast", iterations=40, batch_rays=256, log_every=10, checkpoint_every_seconds=0)

    def cut_at_20(record):
        if record["step"] == 20:
            raise PowerCut

    with pytest.raises(PowerCut):
        train(tiny_scene, tmp_path, cfg, on_log=cut_at_20)
    saved = torch.load(next(tmp_path.glob("*.pt")), weights_only=True)
    assert saved["step"] == 20 and not saved["finished"]
    resumed = train(tiny_scene, tmp_path, cfg)
    assert resumed.start_step == 20 and resumed.steps == 40
    assert [r["step"] for r in resumed.history] == [10, 20, 30, 40]
    # The generators resume too: the interrupted run ends where an uninterrupted one does.
    straight = train(tiny_scene, tmp_path / "straight", cfg)
    assert evaluate(resumed.checkpoint, tmp_path / "r1").psnr == evaluate(straight.checkpoint, tmp_path / "r2").psnr
    # A finished run is not resumed: the next one starts from scratch.
    again = train(tiny_scene, tmp_path, cfg)
    assert again.start_step == 0


def test_assets_materialize_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_DATA_DIR", str(tmp_path))
    small_scene = {"size": 32, "n_train": 16, "n_val": 1, "n_test": 2}
    result = dg.materialize(
        [nerf_assets.bouncing_balls_scene, nerf_assets.panda_walk_scene, nerf_assets.dnerf_checkpoint,
         nerf_assets.nerf_benchmark, nerf_assets.dnerf_render, nerf_assets.nerf_beats_mean_image],
        resources=resources_for("embedded"),
        run_config={"ops": {
            "bouncing_balls_scene": {"config": small_scene},
            "panda_walk_scene": {"config": {**small_scene, "n_train": 4}},
            # Both methods on both scenes stop at 12 steps: this checks the wiring, the quality
            # tests are above.
            "dnerf_checkpoint": {"config": {"resolution": 16, "iterations": 12}},
            "dnerf_render": {"config": {"frames": 5, "test_views": 2}},
        }},
    )
    assert result.success
    rows = read_table("nerf_benchmark", tmp_path / "lab.duckdb")
    assert sorted(zip(rows["scene"], rows["method"])) == [
        ("bouncing_balls", "dnerf"), ("bouncing_balls", "fast"), ("panda_walk", "dnerf"), ("panda_walk", "fast")]
    assert set(rows["resolution"]) == {"16x16"} and (rows["iterations"] == 12).all()
    assert (rows["split"] == "test").all() and (rows["rays_per_second"] > 0).all() and rows["machine"].null_count() == 0
    meta = result.asset_materializations_for_node("nerf_benchmark")[0].metadata
    assert "| fast |" in meta["table"].value and "image/png" in meta["panda_walk_dnerf_test_views"].value
    manifest = json.loads((tmp_path / "nerf" / "checkpoints.json").read_text())["checkpoints"]
    assert len(manifest) == 4
    # The render asset: a playable video per checkpoint with the frames asked for.
    render_meta = result.asset_materializations_for_node("dnerf_render")[0].metadata
    for scene in ("bouncing_balls", "panda_walk"):
        for method in ("fast", "dnerf"):
            folder = tmp_path / "renders" / scene / method
            video = next(folder.glob("orbit.*"))
            assert iio.imread(video).shape == (5, 16, 16, 3)
            assert iio.imread(folder / "test_grid.png").shape[0] > 2 * 16
            assert "data:image/png;base64," in render_meta[f"{scene}_{method}_orbit"].value
    assert len(result.get_asset_check_evaluations()) == 1
