"""`lab render`: a checkpoint becomes a playable orbit video with the frames asked for; a
wrong, foreign or missing checkpoint is one clear line on stderr and exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import pytest
import torch

from lab_pipelines.cli import main
from lab_pipelines.nerf.synthetic import write_bouncing_balls
from lab_pipelines.nerf.train import TrainConfig, train


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("render")
    scene = write_bouncing_balls(root / "balls", size=32, n_train=8, n_val=1, n_test=2)
    return train(scene, root / "ckpt", TrainConfig(method="fast", iterations=30, batch_rays=256)).checkpoint


def test_render_writes_a_playable_video_with_the_frames_asked_for(checkpoint, tmp_path, capsys):
    out = tmp_path / "orbit.mp4"
    assert main(["render", "--checkpoint", str(checkpoint), "--out", str(out), "--frames", "7",
                 "--resolution", "24"]) == 0
    frames = iio.imread(out)  # decoded back through ffmpeg: the file plays
    assert frames.shape == (7, 24, 24, 3)
    # The camera moves and t runs: consecutive frames differ, and the first is not the last.
    assert (frames[1:].astype(int) - frames[:-1]).any(axis=(1, 2, 3)).all()
    depth = iio.imread(tmp_path / "orbit_depth.mp4")
    assert depth.shape == (7, 24, 24, 3)
    printed = capsys.readouterr().out
    assert "7 frames at 24x24" in printed and "orbit_depth.mp4" in printed


def test_gif_is_written_when_asked_for(checkpoint, tmp_path):
    out = tmp_path / "orbit.gif"
    assert main(["render", "--checkpoint", str(checkpoint), "--out", str(out), "--frames", "3"]) == 0
    assert iio.imread(out).shape[0] == 3


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("lab render: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_a_file_that_is_not_a_checkpoint_is_one_clear_line(tmp_path, capsys):
    bogus = tmp_path / "notes.pt"
    bogus.write_text("not a checkpoint")
    assert main(["render", "--checkpoint", str(bogus), "--out", str(tmp_path / "o.mp4")]) == 2
    assert "not a D-NeRF checkpoint" in _one_line_error(capsys)
    assert not (tmp_path / "o.mp4").exists()


def test_another_code_version_or_profile_is_refused(checkpoint, tmp_path, capsys, monkeypatch):
    state = torch.load(checkpoint, weights_only=True)
    old = tmp_path / "old.pt"
    torch.save({**state, "format_version": 1}, old)
    assert main(["render", "--checkpoint", str(old), "--out", str(tmp_path / "o.mp4")]) == 2
    assert "another code version" in _one_line_error(capsys)
    monkeypatch.setenv("LAB_PROFILE", "gpu")
    assert main(["render", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o.mp4")]) == 2
    assert "'embedded' profile" in _one_line_error(capsys)


def test_a_missing_checkpoint_says_which_command_trains_it(tmp_path):
    # The console script itself, as a user runs it.
    lab = Path(sys.executable).with_name("lab")
    done = subprocess.run([str(lab), "render", "--checkpoint", str(tmp_path / "none.pt")],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2
    err = done.stderr.strip()
    assert "\n" not in err and "no such checkpoint" in err
    assert "dagster asset materialize" in err and "dnerf_checkpoint" in err
