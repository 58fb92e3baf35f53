"""One training loop for both models: a budget in steps, atomic checkpoints, resume.

The budget is `iterations` (Adam steps), so the same steps and seed give the same field on a
quiet or a busy machine: ray batches and stratified jitter come from generators seeded by the
config, and the learning-rate schedule is keyed on the step, never on the clock. Wall time is
measured and reported, and `budget_seconds` is an optional cap (0: none) that makes a run
machine dependent when it binds. A run cut short resumes from its last checkpoint (generator
states included); a checkpoint that finished is not resumed, the next run starts afresh.
"""

from __future__ import annotations

import io
import pickle
import time
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch.optim.swa_utils import AveragedModel

from lab_pipelines.devices import autocast_dtype, configure_torch_for, training_autocast_dtype
from lab_pipelines.nerf.fields import DeformableField, DNeRF, DNeRFConfig, FastConfig, FastDNeRF
from lab_pipelines.nerf.metrics import psnr
from lab_pipelines.nerf.render import render_rays
from lab_pipelines.nerf.sampling import PixelSampler, carve_occupancy, pixel_importance
from lab_pipelines.nerf.scenes import (
    SceneSplit,
    camera_orbit,
    camera_rays,
    load_split,
    scene_fingerprint,
)
from lab_pipelines.paths import atomic_write_bytes
from lab_pipelines.progress import LogFn, Progress

METHODS = ("fast", "dnerf")
# Bumped whenever a checkpoint written by older code could no longer be loaded or would render
# differently (fields, sampling or the stored keys changed): 2 = step budgets and seeded generators.
CHECKPOINT_FORMAT = 2


class CheckpointError(ValueError):
    """A file that is not a D-NeRF checkpoint of this code version (message: one line)."""


@dataclass
class TrainConfig:
    method: str = "fast"
    iterations: int = 2000  # the budget: Adam steps
    budget_seconds: float = 0.0  # optional cap on training seconds (0: none)
    downscale: int = 2
    scene_radius: float = 1.5  # the bounding sphere every ray is clipped to
    profile: str = "embedded"  # 'gpu' takes the paper's sizes
    batch_rays: int = 0  # 0: the method's default
    focus: float = 0.5  # share of each batch drawn from the importance distribution
    seed: int = 0  # model initialisation, ray batches and jitter
    log_every: int = 50
    checkpoint_every_seconds: float = 30.0  # 0: at every log line
    # Intra-op threads on CPU. One is the default: on a shared 2-core machine two threads
    # measured 13x slower per step (0.20 s vs 2.75 s) as they wait on each other's barriers.
    cpu_threads: int = 1
    carve_dilate: int = 0  # pixels the silhouettes grow by before carving (0: `carve_dilation`)
    carve_window: int = 1  # neighbouring frames (each side, in time) whose hulls are intersected
    # Decay of an exponential moving average of the parameters, which the finished checkpoint
    # keeps (-1: `default_ema_decay`; 0: none, the last step's parameters).
    ema_decay: float = -1.0


def model_config(method: str, profile: str, width: int = 64) -> DNeRFConfig | FastConfig:
    """The paper's sizes on the gpu profile; on embedded (2 CPU cores) narrower MLPs and fewer
    samples, which is what fits minutes of CPU. `width`: the training images' width in pixels."""
    if method == "dnerf":
        if profile == "gpu":
            return DNeRFConfig()
        # The paper's coarse-to-fine sampling between each ray's bounds in a carved 32^3 hull
        # (the objects fill a small part of the 1.5-radius sphere), where 12 coarse + 12 fine
        # samples matched 16 + 16 and 24 + 24 per step on the validation views at 0.06 s a
        # step against 0.16 s for 24 + 24 across the sphere (docs/nerf.md).
        # Encodings sized to the images: the paper's 10 octaves resolve 800-pixel renders; at 64
        # pixels the top ones are noise, and the warp learnt nothing until the canonical field
        # used 6 octaves and the warp 4 (docs/nerf.md has the ladder).
        return DNeRFConfig(pos_freqs=6, deform_pos_freqs=4, time_freqs=6, density_activation="softplus",
                           width=128, depth=6, skip=3, deform_width=128, deform_depth=4,
                           n_coarse=12, n_fine=12, occupancy_res=32)
    if method == "fast":
        if profile == "gpu":
            return FastConfig(channels=32, spatial_res=(64, 128), time_res=50, deform_spatial_res=64,
                              n_samples=256, occupancy_res=64)
        # Regulariser weights re-chosen with the faster canonical planes (`_optimizer`) on the
        # validation views of both made scenes (docs/nerf.md): more total variation, less time
        # smoothing, which had blurred the balls' fast motion (33.7 dB against 32.3 at 3e-2;
        # the panda 31.8 against 32.0; 3e-3 was 0.1 dB better on the mean, worse on the panda).
        # Above 64 pixels finer detail is real, not noise: at 128 plane TV 3e-3 beat 1e-2 on
        # both scenes' validation views (balls 29.92 against 29.78 dB, panda 30.09 against 29.97).
        return FastConfig(plane_tv=1e-2 if width <= 64 else 3e-3, time_smoothness=1e-2)
    raise ValueError(f"Unknown method {method!r}: choose one of {METHODS}.")


def carve_dilation(width: int) -> int:
    """Pixels each training silhouette grows by before it carves the occupancy grid.

    At 64 pixels 6, chosen on the validation views of both scenes and methods (docs/nerf.md):
    3 carved away parts that move between neighbouring frames, which no sample could then
    reach (`dnerf` balls 28.27 -> 29.62 dB, panda 30.19 -> 30.57; `fast` +0.08 / +0.22), and
    9 lost on the panda again. Above 64 pixels the 3 that the 128x128 rows were chosen with."""
    return 6 if width <= 64 else 3


def default_ema_decay(method: str) -> float:
    """`fast` keeps an average of its parameters over roughly the last 500 steps: on the
    panda's validation views it removed most of the spread between seeds (32.47 / 32.18 dB for
    seeds 0 / 1 without, 32.62 / 32.62 with) and left the balls where they were (33.81 -> 33.83).
    `dnerf` keeps its last step: with the average, the balls lost 0.15 dB and the panda gained
    0.14 (docs/nerf.md). The gpu profile takes the same, unmeasured."""
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}: choose one of {METHODS}.")
    return 0.998 if method == "fast" else 0.0


def _ema_update(decay: float) -> Callable:
    """An EMA step for `AveragedModel` whose decay ramps up over the first updates,
    (1 + n) / (10 + n), so a short run is not an average dominated by its initial weights."""

    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged: torch.Tensor) -> None:
        n = int(n_averaged)
        for mean, value in zip(averaged, current):
            mean.lerp_(value, 1.0 - min(decay, (1 + n) / (10 + n)))

    return update


def default_iterations(method: str, profile: str) -> int:
    """Steps per method when a run does not name them. Embedded: chosen on the validation views
    (fast 3,000 steps: +0.3 dB mean over 2,000; dnerf 3,000 between hull bounds: 28.3 / 30.2 dB
    on the balls / panda, 27.7 at 16 + 16 samples, 25.9 at 1,500 steps, and 29.6 / 30.6 since
    the hulls grow 6 px; docs/nerf.md): about 10 minutes of a quiet 2-core demo for both scenes
    x both methods, scores and renders included; gpu: not measured here, a starting point (the
    paper trains dnerf 800k steps)."""
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}: choose one of {METHODS}.")
    if profile == "gpu":
        return {"fast": 30_000, "dnerf": 200_000}[method]
    return {"fast": 3000, "dnerf": 3000}[method]


def build_model(method: str, cfg: DNeRFConfig | FastConfig, scene_radius: float) -> DeformableField:
    return DNeRF(cfg, scene_radius) if method == "dnerf" else FastDNeRF(cfg, scene_radius)


def _default_batch(method: str, profile: str) -> int:
    if profile == "gpu":
        return 8192 if method == "fast" else 1024
    # dnerf: 256 rays (was 512), twice the Adam steps in a CPU budget of minutes.
    return 1024 if method == "fast" else 256


def _optimizer(model: DeformableField, method: str, profile: str = "gpu") -> tuple[torch.optim.Optimizer, list[float]]:
    if isinstance(model, FastDNeRF):
        # Embedded: chosen on the validation views of both made scenes at 2,000 steps
        # (docs/nerf.md): the canonical planes learn at 8e-2 (2e-2: 2.2 dB lower on the balls;
        # 1.2e-1 and up diverge), the deformation planes stay at 2e-2 (8e-2 there speckled the
        # panda's fur), the decoders 1e-2. The gpu profile keeps its earlier rates, unmeasured.
        canonical, deformation, mlp = (2e-2, 2e-2, 5e-3) if profile == "gpu" else (8e-2, 2e-2, 1e-2)
        groups = [{"params": model.canonical_grid_parameters(), "lr": canonical},
                  {"params": model.deformation_grid_parameters(), "lr": deformation},
                  {"params": model.mlp_parameters(), "lr": mlp}]
    else:
        # The paper's 5e-4 on the gpu profile; the embedded MLPs get only a few hundred steps
        # in minutes of CPU, so they start at 2e-3 (both decay 10x over the steps).
        lr = 5e-4 if profile == "gpu" else 2e-3
        groups = [{"params": list(model.parameters()), "lr": lr}]
    optim = torch.optim.Adam(groups, eps=1e-15 if method == "fast" else 1e-8)
    return optim, [g["lr"] for g in groups]


@dataclass
class RayBank:
    """Every training ray, flat, kept on the training device (a 64x64 scene is ~10 MB, 800x800
    ~1.5 GB), so a batch is one gather with no host-to-device copy per step."""

    origins: torch.Tensor
    dirs: torch.Tensor
    times: torch.Tensor
    colours: torch.Tensor

    @classmethod
    def from_split(cls, split: SceneSplit, device: str) -> RayBank:
        rays = [camera_rays(c2w, split.height, split.width, split.focal) for c2w in split.c2w]
        n_pix = split.height * split.width
        return cls(
            origins=torch.stack([o for o, _ in rays]).reshape(-1, 3).to(device),
            dirs=torch.stack([d for _, d in rays]).reshape(-1, 3).to(device),
            times=split.times.repeat_interleave(n_pix).to(device),
            colours=split.images.reshape(-1, 3).to(device),
        )

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, ...]:
        index = index.to(self.origins.device)
        return tuple(t[index] for t in (self.origins, self.dirs, self.times, self.colours))


@dataclass
class TrainResult:
    checkpoint: Path
    method: str
    steps: int
    start_step: int  # > 0 when this call resumed an interrupted run
    train_seconds: float
    rays_per_second: float
    resolution: tuple[int, int]
    history: list[dict] = field(default_factory=list)
    config: dict = field(default_factory=dict)  # the TrainConfig, as stored in the checkpoint
    scene_dir: Path | None = None  # what it was trained on
    scene_sha: str | None = None  # its bytes (`scene_fingerprint`) when training started


def checkpoint_path(out_dir: Path, scene_dir: Path, method: str, downscale: int) -> Path:
    return Path(out_dir) / f"{Path(scene_dir).name}-{method}-x{downscale}.pt"


def _save(path: Path, state: dict) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def use_cpu_threads(device: str, threads: int) -> None:
    """Intra-op threads for work on the CPU (0: torch's default). Rendering takes the count
    its checkpoint trained with: on the shared 2-core machine one thread rendered an orbit 3x
    faster than two."""
    if device == "cpu" and threads:
        torch.set_num_threads(threads)


def read_checkpoint(path: str | Path, profile: str | None = None) -> dict:
    """The checkpoint's state, or CheckpointError saying in one line why it is not usable here:
    missing, not a checkpoint, another code version, or (when `profile` is given) trained
    under another profile, whose model sizes this code would not build."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, OSError) as error:
        raise CheckpointError(f"{path}: not a D-NeRF checkpoint ({type(error).__name__})") from None
    if not isinstance(state, dict) or "model" not in state or "method" not in state:
        raise CheckpointError(f"{path}: not a D-NeRF checkpoint (no model or method inside)")
    version = state.get("format_version")
    if version != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: written by another code version (checkpoint format {version}, "
                              f"this code reads {CHECKPOINT_FORMAT}); retrain it")
    if profile is not None and state["profile"] != profile:
        raise CheckpointError(f"{path}: trained under the {state['profile']!r} profile, this is "
                              f"{profile!r}; set LAB_PROFILE={state['profile']} or retrain")
    return state


def load_checkpoint(path: str | Path, canonical_device: str = "cpu", deformation_device: str | None = None,
                    profile: str | None = None) -> tuple[DeformableField, dict]:
    """The trained field, placed on its devices, and the checkpoint's bookkeeping; on the CPU
    torch takes the intra-op thread count the field trained with."""
    state = read_checkpoint(path, profile)
    use_cpu_threads(canonical_device, state["train_config"]["cpu_threads"])
    cfg_cls = DNeRFConfig if state["method"] == "dnerf" else FastConfig
    cfg = cfg_cls(**state["model_config"])
    model = build_model(state["method"], cfg, state["train_config"]["scene_radius"])
    model.load_state_dict(state["model"])
    model.place(canonical_device, deformation_device or canonical_device)
    return model.eval(), state


def result_from_checkpoint(path: str | Path) -> TrainResult:
    """The bookkeeping of a finished (or interrupted) run, read back from its checkpoint."""
    state = read_checkpoint(path)
    return TrainResult(Path(path), state["method"], state["step"], state["step"], state["elapsed"],
                       state["rays_per_second"], tuple(state["resolution"]), state["history"],
                       state["train_config"], Path(state["scene_dir"]), state.get("scene_sha"))


def train(scene_dir: str | Path, out_dir: str | Path, cfg: TrainConfig, canonical_device: str = "cpu",
          deformation_device: str | None = None, on_log: Callable[[dict], None] | None = None,
          log: LogFn | None = None) -> TrainResult:
    """Train `cfg.method` on the scene's train split for `cfg.iterations` steps (or until the
    optional seconds cap).

    `on_log` gets every history record; progress (step, batch PSNR, ETA) goes to `log` as
    paced lines when given, else to a tqdm bar."""
    if cfg.iterations < 1:
        raise ValueError(f"iterations must be at least 1, got {cfg.iterations}")
    deformation_device = deformation_device or canonical_device
    for device in {canonical_device, deformation_device}:
        configure_torch_for(device)
    # Also what makes a CPU run bitwise repeatable: reductions keep one order.
    use_cpu_threads(canonical_device, cfg.cpu_threads)
    torch.manual_seed(cfg.seed)
    # Own generators for what is drawn every step, so nothing else in the process that draws
    # from torch's global one (a library, a test) changes which rays a step sees.
    pixel_rng = torch.Generator().manual_seed(cfg.seed)
    jitter_rng = torch.Generator(device=canonical_device).manual_seed(cfg.seed + 1)
    split = load_split(scene_dir, "train", cfg.downscale)
    scene_sha = scene_fingerprint(scene_dir)
    bank = RayBank.from_split(split, canonical_device)
    sampler = PixelSampler(pixel_importance(split.images, split.alphas), cfg.focus, pixel_rng)
    mcfg = model_config(cfg.method, cfg.profile, split.width)
    if mcfg.occupancy_res:
        mcfg = replace(mcfg, occupancy_frames=len(split.times))
    model = build_model(cfg.method, mcfg, cfg.scene_radius)
    if model.has_occupancy:
        model.occupancy.copy_(carve_occupancy(split.c2w, split.alphas, split.times, split.focal, cfg.scene_radius,
                                              mcfg.occupancy_res, cfg.carve_dilate or carve_dilation(split.width),
                                              cfg.carve_window))
        model.occupancy_times.copy_(split.times)
    model.place(canonical_device, deformation_device)
    optim, base_lrs = _optimizer(model, cfg.method, cfg.profile)
    batch = cfg.batch_rays or _default_batch(cfg.method, cfg.profile)
    # bf16 pays for the MLPs (dnerf) on CPUs with native bf16 too; fast's step is grid_sample
    # bound and measured slower and 0.3 dB worse in bf16 there, so it stays fp32 on CPU.
    amp = (training_autocast_dtype if cfg.method == "dnerf" else autocast_dtype)(canonical_device)

    path = checkpoint_path(Path(out_dir), Path(scene_dir), cfg.method, cfg.downscale)
    step, elapsed, history, resumed = 0, 0.0, [], None
    if path.is_file():
        try:
            state = read_checkpoint(path, cfg.profile)
        except CheckpointError:
            state = None  # another version's file under this name: train afresh over it
        # An optimiser of another layout (older code's parameter groups) cannot resume either.
        if state and not state["finished"] and state["model_config"] == asdict(mcfg) \
                and state["train_config"] == asdict(cfg) \
                and len(state["optimizer"]["param_groups"]) == len(optim.param_groups):
            model.load_state_dict(state["model"])
            model.place(canonical_device, deformation_device)
            optim.load_state_dict(state["optimizer"])
            pixel_rng.set_state(state["pixel_rng"])
            jitter_rng.set_state(state["jitter_rng"].to(jitter_rng.get_state().device))
            step, elapsed, history, resumed = state["step"], state["elapsed"], state["history"], state
    start_step, start_elapsed = step, elapsed
    # Where the training cameras sit, so a render needs no scene folder to orbit the object.
    orbit = dict(zip(("radius", "elevation_deg"), camera_orbit(split.c2w)))

    def save(finished: bool) -> None:
        _save(path, {"format_version": CHECKPOINT_FORMAT, "profile": cfg.profile,
            "rays_per_second": rays_per_second,
            "method": cfg.method, "model_config": asdict(mcfg), "train_config": asdict(cfg),
            "scene_dir": str(scene_dir), "scene_sha": scene_sha,
            "resolution": (split.height, split.width), "focal": split.focal,
            "orbit": orbit,
            "model": model.state_dict(), "optimizer": optim.state_dict(),
            "pixel_rng": pixel_rng.get_state(), "jitter_rng": jitter_rng.get_state().cpu(),
            "ema": None if ema is None or finished else ema.state_dict(),  # finished: it is "model"
            "step": step, "elapsed": elapsed, "history": history, "finished": finished,
        })

    ema_decay = default_ema_decay(cfg.method) if cfg.ema_decay < 0 else cfg.ema_decay
    ema = AveragedModel(model, multi_avg_fn=_ema_update(ema_decay)) if ema_decay else None
    if ema is not None and resumed is not None:
        ema.load_state_dict(resumed["ema"])
    model.train()
    window_rays, window_start, last_save = 0, time.perf_counter(), time.perf_counter()
    rays_per_second = 0.0
    with Progress(cfg.iterations, f"training {cfg.method}", log, unit="step") as progress_bar:
        progress_bar.update(step)
        while step < cfg.iterations and not (cfg.budget_seconds and elapsed >= cfg.budget_seconds):
            tick = time.perf_counter()
            # Exponential decay to a tenth over the steps.
            for group, lr in zip(optim.param_groups, base_lrs):
                group["lr"] = lr * 0.1 ** (step / cfg.iterations)
            origins, dirs, times, target = bank.batch(sampler.sample(batch))
            with torch.autocast(canonical_device.split(":")[0], dtype=amp, enabled=amp is not None):
                out = render_rays(model, origins, dirs, times, True, jitter_rng)
            loss = torch.mean((out.rgb - target) ** 2)
            if out.coarse_rgb is not None:
                loss = loss + torch.mean((out.coarse_rgb - target) ** 2)
            if isinstance(model, FastDNeRF) and (mcfg.plane_tv or mcfg.time_smoothness):
                loss = loss + model.regularisation()
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            if ema is not None:
                ema.update_parameters(model)
            step += 1
            window_rays += batch
            elapsed += time.perf_counter() - tick
            if step % cfg.log_every == 0:
                now = time.perf_counter()
                rays_per_second = window_rays / max(now - window_start, 1e-9)
                record = {"step": step, "elapsed": round(elapsed, 2), "loss": float(loss.detach()),
                          "psnr": float(psnr(out.rgb.detach(), target)), "rays_per_s": round(rays_per_second, 1),
                          "samples_per_ray": out.n_evaluated / batch}
                history.append(record)
                window_rays, window_start = 0, now
                if now - last_save >= cfg.checkpoint_every_seconds:
                    save(finished=False)
                    last_save = time.perf_counter()
                progress_bar.desc = f"{cfg.method} step {step}, batch PSNR {record['psnr']:.1f} dB"
                if on_log:
                    on_log(record)
            progress_bar.update(1)
        progress_bar.desc = f"{cfg.method} step {step}"
    if elapsed > start_elapsed:
        # Over this call's steps: the speed of this machine, as loaded as it was.
        rays_per_second = (step - start_step) * batch / (elapsed - start_elapsed)
    if ema is not None:
        model.load_state_dict(ema.module.state_dict())  # what evaluation and renders see
    save(finished=True)
    return TrainResult(path, cfg.method, step, start_step, elapsed, rays_per_second,
                       (split.height, split.width), history, asdict(cfg), Path(scene_dir),
                       scene_sha)
