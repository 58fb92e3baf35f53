"""`panda_walk`: the textured, skinned panda and its walk cycle from the panda3d wheel,
rendered headless into the D-NeRF format.

Panda3D keeps one ShowBase per process and fixes the window size when it opens, so the
rendering runs in a child process (`python -m lab_pipelines.nerf.panda ...`); the parent only
chooses cameras and times. Panda's world is z-up like Blender's (the official scenes), so world
coordinates carry over; only the camera axes differ: a Panda camera looks down +y with z up,
an OpenGL camera down -z with y up.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np

from lab_pipelines.nerf.scenes import hemisphere_cameras, write_split

SCENE_RADIUS = 1.1  # the panda is scaled to fit a sphere of this radius about the origin
PROBE_JOINT = "Bone_skull"  # a joint inside the head, off-centre and moving: the re-projection probe


def gl_to_panda(c2w: np.ndarray) -> np.ndarray:
    """OpenGL camera-to-world (column vectors) -> Panda's row-vector matrix of the camera node."""
    right, up, back, eye = c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3]
    mat = np.eye(4)
    mat[0, :3], mat[1, :3], mat[2, :3], mat[3, :3] = right, -back, up, eye  # Panda rows: x, forward y, up z
    return mat


def panda_to_gl(mat: np.ndarray) -> np.ndarray:
    """Inverse of `gl_to_panda`: Panda camera node matrix -> OpenGL camera-to-world."""
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = mat[0, :3], mat[2, :3], -mat[1, :3], mat[3, :3]
    return c2w


class _SkinnedMesh(NamedTuple):
    static: object  # the GeomVertexData drawn in the actor's place, rewritten every pose
    weights: np.ndarray  # (blends, joints): each blend's weight per joint, joints in name order
    vertex: np.ndarray  # (V, 4) rest positions
    normal: np.ndarray  # (V, 3) rest normals
    texcoord: np.ndarray  # (V, 2)
    blend_index: np.ndarray  # (V,) each vertex's row of `weights`
    to_actor: np.ndarray  # (4, 4) the mesh node's matrix in the actor's frame (row vectors)


def _matrix(mat) -> np.ndarray:
    return np.array([[mat.getCell(r, c) for c in range(4)] for r in range(4)], np.float64)


class _CanonicalSkin:
    """The actor's skinned meshes, skinned here instead of by Panda3D.

    Panda3D blends each vertex's joint matrices in the order of the joints' memory addresses,
    and that order varies from one process to the next: with the load (1 in 10 runs on a busy
    machine) and with whether the model came from its .egg or from panda3d's .bam cache. The
    sums then differ in the last bit, and a vertex a bit away moves an edge pixel (docs/nerf.md).
    Here every blend sums its joints in name order, in float64, into static copies of the
    meshes that are rendered in the actor's place, so every process draws the same triangles."""

    def __init__(self, actor) -> None:
        from panda3d.core import Geom, GeomNode, GeomVertexData, GeomVertexFormat, GeomVertexReader

        joints: dict[str, object] = {}
        sources = []
        for path in actor.findAllMatches("**/+GeomNode"):
            node, to_actor = path.node(), path.getMat(actor)
            static_node = GeomNode(f"{node.getName()}-canonical-skin")
            for i in range(node.getNumGeoms()):
                geom, data = node.getGeom(i), node.getGeom(i).getVertexData()
                table = data.getTransformBlendTable()
                blends = []
                for b in range(table.getNumBlends()):
                    blend = table.getBlend(b)
                    entries = {}
                    for j in range(blend.getNumTransforms()):
                        transform = blend.getTransform(j)
                        joints[transform.getJoint().getName()] = transform
                        entries[transform.getJoint().getName()] = blend.getWeight(j)
                    blends.append(entries)
                columns = {name: [] for name in ("vertex", "normal", "texcoord", "transform_blend")}
                for name, values in columns.items():
                    reader = GeomVertexReader(data, name)
                    while not reader.isAtEnd():
                        values.append(reader.getData1i() if name == "transform_blend" else tuple(reader.getData4()))
                static = GeomVertexData(f"{data.getName()}-canonical", GeomVertexFormat.getV3n3t2(), Geom.UHStatic)
                static.setNumRows(data.getNumRows())
                copy = Geom(static)
                for p in range(geom.getNumPrimitives()):
                    copy.addPrimitive(geom.getPrimitive(p))
                static_node.addGeom(copy, node.getGeomState(i))
                sources.append((static, blends, columns, _matrix(to_actor)))
            actor.attachNewNode(static_node).setMat(to_actor)
            path.hide()
        names = sorted(joints)
        column = {name: k for k, name in enumerate(names)}
        self.joints = [joints[name] for name in names]
        self.meshes = []
        for static, blends, columns, to_actor in sources:
            weights = np.zeros((len(blends), len(names)))
            for b, entries in enumerate(blends):
                for name, weight in entries.items():
                    weights[b, column[name]] = weight
            self.meshes.append(_SkinnedMesh(static, weights, np.array(columns["vertex"], np.float64),
                                            np.array(columns["normal"], np.float64)[:, :3],
                                            np.array(columns["texcoord"], np.float32)[:, :2],
                                            np.array(columns["transform_blend"], np.int64), to_actor))

    def update(self) -> np.ndarray:
        """Skin every mesh to the actor's current pose (call after posing it); returns every
        vertex (V, 3) in the actor's own frame."""
        from panda3d.core import LMatrix4f

        mats = []
        for joint in self.joints:
            mat = LMatrix4f()
            joint.getMatrix(mat)
            mats.append(_matrix(mat))
        mats = np.array(mats)
        placed = []
        for mesh in self.meshes:
            per_vertex = np.einsum("bt,tij->bij", mesh.weights, mats)[mesh.blend_index]  # Panda: row vector x matrix
            points = np.einsum("vi,vij->vj", mesh.vertex, per_vertex)
            normals = np.einsum("vi,vij->vj", mesh.normal, per_vertex[:, :3, :3])
            rows = np.concatenate([points[:, :3] / points[:, 3:], normals], 1).astype(np.float32)
            rows = np.concatenate([rows, mesh.texcoord], 1)
            mesh.static.modifyArray(0).modifyHandle().copyDataFrom(rows.tobytes())
            placed.append(rows[:, :3].astype(np.float64) @ mesh.to_actor[:3, :3] + mesh.to_actor[3, :3])
        return np.concatenate(placed)


def _render_in_this_process(size: int, camera_angle_x: float, c2w: np.ndarray, times: np.ndarray,
                            supersample: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RGBA uint8 (N, size, size, 4), the camera matrices Panda actually used (as OpenGL
    camera-to-world) and the probe joint's world position per frame."""
    from panda3d.core import AmbientLight, DirectionalLight, LMatrix4f, loadPrcFileData

    hi = size * supersample
    loadPrcFileData("", f"window-type offscreen\nload-display p3tinydisplay\nwin-size {hi} {hi}\n"
                        "framebuffer-alpha 1\naudio-library-name null\nsync-video 0\n")
    from direct.actor.Actor import Actor
    from direct.showbase.ShowBase import ShowBase

    base = ShowBase(windowType="offscreen")
    base.setBackgroundColor(1, 1, 1, 0)
    base.disableMouse()
    base.camLens.setFov(np.degrees(camera_angle_x), np.degrees(camera_angle_x))
    base.camLens.setNearFar(0.05, 100.0)
    actor = Actor("models/panda-model", {"walk": "models/panda-walk4"})
    actor.reparentTo(base.render)
    skin = _CanonicalSkin(actor)
    n_frames = actor.getNumFrames("walk")
    # Fit the whole cycle, not one pose, inside the scene sphere.
    points = []
    for frame in np.linspace(0, n_frames - 1, 8):
        actor.pose("walk", float(frame))
        actor.update(force=True)
        points.append(skin.update())
    points = np.concatenate(points)
    lo, hi_pt = points.min(0), points.max(0)
    centre, half = 0.5 * (lo + hi_pt), 0.5 * (hi_pt - lo)
    scale = SCENE_RADIUS / np.linalg.norm(half)
    actor.setScale(scale)
    actor.setPos(*(-centre * scale))
    probe = actor.exposeJoint(None, "modelRoot", PROBE_JOINT)
    sun = base.render.attachNewNode(DirectionalLight("sun"))
    sun.node().setColor((0.75, 0.75, 0.7, 1))
    sun.setHpr(30, -50, 0)
    ambient = base.render.attachNewNode(AmbientLight("ambient"))
    ambient.node().setColor((0.45, 0.45, 0.5, 1))
    base.render.setLight(sun)
    base.render.setLight(ambient)

    images, used, probes = [], [], []
    for pose, t in zip(c2w, times):
        actor.pose("walk", float(t) * (n_frames - 1))
        actor.update(force=True)
        skin.update()
        base.camera.setMat(LMatrix4f(*gl_to_panda(pose).ravel().tolist()))
        base.graphicsEngine.renderFrame()
        tex = base.win.getScreenshot()
        rgba = np.frombuffer(bytes(tex.getRamImageAs("RGBA")), np.uint8).reshape(hi, hi, 4)
        rgba = rgba[::-1].astype(np.float64) / 255.0  # Panda's images start at the bottom row
        # Box-filter premultiplied colour over each pixel's sub-samples (tinydisplay has no MSAA).
        premult = np.concatenate([rgba[..., :3] * rgba[..., 3:], rgba[..., 3:]], -1)
        premult = premult.reshape(size, supersample, size, supersample, 4).mean(axis=(1, 3))
        alpha = premult[..., 3:]
        out = np.concatenate([premult[..., :3] / np.maximum(alpha, 1e-6), alpha], -1)
        images.append((out.clip(0, 1) * 255 + 0.5).astype(np.uint8))
        used.append(panda_to_gl(np.array(base.camera.getMat(base.render))))
        probes.append(np.array(probe.getPos(base.render)))
    return np.stack(images), np.stack(used), np.stack(probes)


def write_panda_walk(folder: str | Path, size: int = 128, n_train: int = 100, n_val: int = 10, n_test: int = 20,
                     camera_angle_x: float = 0.6911, radius: float = 4.0, seed: int = 0,
                     supersample: int = 2, timeout_s: float = 900.0) -> Path:
    """Render the walk cycle (t in [0, 1] is one cycle) into `folder` in the D-NeRF format.

    Besides the format's files, `probes.json` records the head joint's world position per
    frame, so tests can re-project a known point through each frame's matrix.
    """
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    probes = {}
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        times = np.linspace(0.0, 1.0, n) if split == "train" else np.sort(rng.uniform(0.0, 1.0, n))
        c2w = hemisphere_cameras(n, radius, rng)
        request = {"size": size, "camera_angle_x": camera_angle_x, "c2w": c2w.tolist(),
                   "times": times.tolist(), "supersample": supersample, "out": str(folder / f".render-{split}.npz")}
        folder.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run([sys.executable, "-m", "lab_pipelines.nerf.panda"], input=json.dumps(request),
                              text=True, capture_output=True, timeout=timeout_s, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"panda3d render of {split} failed:\n{proc.stderr[-2000:]}")
        with np.load(request["out"]) as rendered:
            rgba, used, probe = rendered["rgba"], rendered["c2w"], rendered["probes"]
        Path(request["out"]).unlink()
        write_split(folder, split, camera_angle_x, rgba, used, times)
        probes[split] = probe.round(6).tolist()
    (folder / "probes.json").write_text(json.dumps({"joint": PROBE_JOINT, "world_positions": probes}))
    return folder


def _main() -> None:
    parser = argparse.ArgumentParser(description="Render panda frames (reads a JSON request on stdin).")
    parser.parse_args()
    req = json.loads(sys.stdin.read())
    rgba, used, probes = _render_in_this_process(req["size"], req["camera_angle_x"], np.asarray(req["c2w"]),
                                                 np.asarray(req["times"]), req["supersample"])
    np.savez(req["out"], rgba=rgba, c2w=used, probes=probes)


if __name__ == "__main__":
    _main()
