"""The D-NeRF format: reading, writing, refusing broken folders, and the camera convention
proven by re-projecting known 3D points onto the rendered pixels."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from lab_pipelines.nerf.panda import gl_to_panda, panda_to_gl, write_panda_walk
from lab_pipelines.nerf.scenes import (
    SceneFormatError,
    camera_rays,
    load_scene,
    load_split,
    look_at,
    project_points,
    scene_fingerprint,
    write_scene_once,
)
from lab_pipelines.nerf.synthetic import BALLS, ball_centres, write_bouncing_balls


@pytest.fixture(scope="module")
def balls(tmp_path_factory):
    return write_bouncing_balls(tmp_path_factory.mktemp("scenes") / "balls", size=48, n_train=12, n_val=2, n_test=3)


@pytest.fixture(scope="module")
def panda(tmp_path_factory):
    return write_panda_walk(tmp_path_factory.mktemp("scenes") / "panda", size=48, n_train=8, n_val=1, n_test=1)


def test_loader_reads_the_official_layout(balls):
    scene = load_scene(balls)
    train = scene["train"]
    assert train.images.shape == (12, 48, 48, 3) and train.c2w.shape == (12, 4, 4)
    assert torch.allclose(train.times, torch.linspace(0, 1, 12))
    meta = json.loads((balls / "transforms_train.json").read_text())
    assert meta["frames"][0]["file_path"] == "./train/r_000"  # no extension, as in the official data
    assert abs(train.focal - 0.5 * 48 / np.tan(0.5 * meta["camera_angle_x"])) < 1e-4
    # Composited on white: fully transparent pixels are white, opaque ones are not.
    assert torch.allclose(train.images[train.alphas == 0], torch.ones(1))
    assert (train.images[train.alphas == 1].sum(-1) < 2.9).all()


def test_downscale_averages_and_rescales_the_focal(balls):
    full, half = load_split(balls, "train"), load_split(balls, "train", downscale=2)
    assert half.images.shape == (12, 24, 24, 3)
    assert abs(half.focal - full.focal / 2) < 1e-4
    pooled = torch.nn.functional.avg_pool2d(full.images.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)
    assert (half.images - pooled).abs().mean() < 0.01


@pytest.mark.parametrize("breakage, names", [
    ("no_json", "transforms_val.json"),
    ("bad_json", "transforms_train.json: line 3"),
    ("no_image", "r_001.png"),
    ("bad_matrix", "frame 0"),
    ("no_folder", "does not exist"),
])
def test_malformed_folder_fails_naming_the_file(balls, tmp_path, breakage, names):
    broken = tmp_path / "broken"
    shutil.copytree(balls, broken)
    if breakage == "no_json":
        (broken / "transforms_val.json").unlink()
    elif breakage == "bad_json":
        (broken / "transforms_train.json").write_text('{\n "camera_angle_x": 0.7,\n "frames": [,]\n}')
    elif breakage == "no_image":
        (broken / "train" / "r_001.png").unlink()
    elif breakage == "bad_matrix":
        meta = json.loads((broken / "transforms_train.json").read_text())
        meta["frames"][0]["transform_matrix"] = [[1, 0, 0], [0, 1, 0]]
        (broken / "transforms_train.json").write_text(json.dumps(meta))
    elif breakage == "no_folder":
        shutil.rmtree(broken)
    with pytest.raises(SceneFormatError, match=names):
        load_scene(broken)


def test_ball_centres_reproject_onto_their_own_colour(balls):
    """Each ball's centre, pushed through the frame's camera-to-world matrix, lands on a pixel
    of that ball's colour whenever no other ball is in front of it."""
    split = load_split(balls, "train")
    hits = checked = 0
    for k in range(len(split.times)):
        c2w = split.c2w[k].double().numpy()
        centres = ball_centres(float(split.times[k]))
        pixels = project_points(centres, c2w, split.height, split.width, split.focal)
        depth = np.linalg.norm(centres - c2w[:3, 3], axis=1)
        for i, (ball, (x, y)) in enumerate(zip(BALLS, pixels)):
            covered = any(
                np.linalg.norm(pixels[j] - pixels[i]) < 1.2 * split.focal * BALLS[j].radius / depth[j] and depth[j] < depth[i]
                for j in range(len(BALLS)) if j != i)
            if covered or not (0 <= x < split.width and 0 <= y < split.height):
                continue
            rgb = split.images[k, int(y), int(x)].numpy()
            hue = rgb / rgb.sum()
            expected = np.asarray(ball.colour) / sum(ball.colour)
            checked += 1
            hits += bool(np.abs(hue - expected).max() < 0.08)
    assert checked >= 20 and hits == checked


def test_rays_pass_through_the_points_they_project_from(balls):
    split = load_split(balls, "test")
    origins, dirs = camera_rays(split.c2w[0], split.height, split.width, split.focal)
    point = (origins[10, 30] + 3.0 * dirs[10, 30]).double().numpy()[None]
    x, y = project_points(point, split.c2w[0].double().numpy(), split.height, split.width, split.focal)[0]
    assert abs(x - 30.5) < 1e-3 and abs(y - 10.5) < 1e-3


def test_panda_writes_the_same_frames_on_a_fresh_machine_and_after(tmp_path, monkeypatch):
    """The first write on a machine reads the panda from its .egg and panda3d caches it as
    .bam; later writes read that back. Panda3D's own skinning then summed some joints in
    another order and moved an edge pixel of training frames 65 and 74. Every frame must come
    out the same from a cold and a warm cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # a fresh machine's cache
    kwargs = {"size": 128, "n_train": 100, "n_val": 1, "n_test": 1, "seed": 0}
    cold, warm = (write_panda_walk(tmp_path / name, **kwargs) for name in ("cold", "warm"))
    assert any((tmp_path / "cache").rglob("*.bam"))  # the second write did read the cache
    assert scene_fingerprint(cold) == scene_fingerprint(warm)


SKIN_CHECK = """
import json, numpy as np
from panda3d.core import GeomVertexReader, Thread, loadPrcFileData
loadPrcFileData("", "window-type none\\naudio-library-name null\\n")
from direct.actor.Actor import Actor
from direct.showbase.ShowBase import ShowBase
from lab_pipelines.nerf.panda import _CanonicalSkin
ShowBase(windowType="none")
actor = Actor("models/panda-model", {"walk": "models/panda-walk4"})
nodes = [path.node() for path in actor.findAllMatches("**/+GeomNode")]
skin = _CanonicalSkin(actor)
def points(data):
    reader, out = GeomVertexReader(data, "vertex"), []
    while not reader.isAtEnd():
        out.append(tuple(reader.getData3()))
    return np.array(out)
report = []
for frame in (0, 7, 13):
    actor.pose("walk", frame)
    actor.update(force=True)
    skin.update()
    for node, mesh in zip(nodes, skin.meshes):
        theirs = points(node.getGeom(0).getVertexData().animateVertices(True, Thread.getCurrentThread()))
        report.append([frame, float(np.abs(points(mesh[0]) - theirs).max()), float(np.abs(theirs).max()),
                       points(mesh[0]).tolist()[:50]])
print(json.dumps(report))
"""


def test_panda_skinned_here_matches_panda3d_skinning():
    """The scene's meshes are skinned by `_CanonicalSkin` (joints summed in name order) in
    place of Panda3D: at three poses of the walk, every vertex must sit where Panda3D's own
    skinning puts it, to float32 rounding, and the poses must differ."""
    proc = subprocess.run([sys.executable, "-c", SKIN_CHECK], capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(report) == 3
    for _frame, error, extent, _points in report:
        assert error <= 1e-6 * extent
    first, last = np.array(report[0][3]), np.array(report[-1][3])
    assert np.abs(first - last).max() > 1e-3 * report[0][2]  # the walk moved the mesh


def test_panda_matrices_convert_both_ways():
    c2w = look_at(np.array([1.0, -3.0, 2.0]), np.zeros(3))
    assert np.allclose(panda_to_gl(gl_to_panda(c2w)), c2w)


def test_panda_head_reprojects_onto_the_panda(panda):
    """Panda's scene graph says where the skull joint is; through the written OpenGL matrix it
    must land on opaque panda pixels in every frame. Using Panda's own (z-up, +y forward)
    matrix as if it were OpenGL's must not."""
    split = load_split(panda, "train")
    probes = np.asarray(json.loads((panda / "probes.json").read_text())["world_positions"]["train"])
    right = wrong = 0
    for k in range(len(split.times)):
        c2w = split.c2w[k].double().numpy()
        for matrix, correct in ((c2w, True), (gl_to_panda(c2w).T, False)):
            x, y = project_points(probes[k:k + 1], matrix, split.height, split.width, split.focal)[0]
            inside = 0 <= x < split.width and 0 <= y < split.height
            on_panda = inside and split.alphas[k, int(y), int(x)] > 0.5
            right += on_panda and correct
            wrong += on_panda and not correct
    assert right == len(split.times)
    assert wrong <= len(split.times) // 2


def test_a_made_scene_is_written_once_and_again_only_when_it_changed(tmp_path):
    folder = tmp_path / "balls"
    params = {"size": 16, "n_train": 3, "n_val": 1, "n_test": 1}
    assert write_scene_once(folder, write_bouncing_balls, **params)
    first = {p: p.stat().st_mtime_ns for p in folder.rglob("*.png")}
    sha = scene_fingerprint(folder)
    assert not write_scene_once(folder, write_bouncing_balls, **params)  # current: nothing rewritten
    assert not write_scene_once(folder, write_bouncing_balls, **params, seed=0)  # a default, named
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*.png")} == first
    assert scene_fingerprint(folder) == sha  # the stamp itself is not part of the scene's bytes
    # A damaged image, or other parameters, and the writer runs again.
    (folder / "train" / "r_001.png").write_bytes(b"not a png")
    assert write_scene_once(folder, write_bouncing_balls, **params)
    assert scene_fingerprint(folder) == sha
    assert write_scene_once(folder, write_bouncing_balls, **{**params, "n_train": 4})
    assert len(json.loads((folder / "transforms_train.json").read_text())["frames"]) == 4


def test_scene_fingerprint_follows_the_bytes_not_the_folder(balls, tmp_path):
    copy = shutil.copytree(balls, tmp_path / "copy")
    assert scene_fingerprint(copy) == scene_fingerprint(balls)
    image = copy / "train" / "r_000.png"
    pixels = np.array(Image.open(image))
    pixels[0, 0, 0] ^= 1  # one level of one channel of one pixel
    Image.fromarray(pixels).save(image)
    assert scene_fingerprint(copy) != scene_fingerprint(balls)
