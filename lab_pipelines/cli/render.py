"""`lab render`: a trained D-NeRF checkpoint as an orbit video (the camera circles the scene
while t runs from 0 to 1) and its disparity beside it, through the same functions as the
`dnerf_render` asset."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from lab_pipelines.cli.errors import LabInputError, materialize_hint
from lab_pipelines.devices import resolve_device
from lab_pipelines.nerf.renders import orbit_videos
from lab_pipelines.nerf.train import CheckpointError, load_checkpoint

HELP = "render a trained D-NeRF checkpoint as an orbit video (MP4, GIF without ffmpeg) and its disparity"


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, type=Path,
                        help="a .pt file under $LAB_DATA_DIR/nerf/checkpoints/ (dnerf_checkpoint writes them)")
    parser.add_argument("--out", type=Path, default=Path("orbit.mp4"),
                        help="video to write (.mp4, or .gif); the disparity goes beside it as <stem>_depth")
    parser.add_argument("--resolution", type=int, default=0, help="width in pixels (0: the training resolution)")
    parser.add_argument("--frames", type=int, default=24, help="frames in the orbit")
    parser.add_argument("--device", default="auto", help="cpu, cuda:0, ... (auto: a card if there is one)")


def run(args: argparse.Namespace) -> int:
    if args.frames < 1 or args.resolution < 0:
        raise LabInputError(f"--frames must be at least 1 and --resolution at least 0 "
                            f"(got {args.frames}, {args.resolution})")
    if args.out.suffix.lower() not in (".mp4", ".gif"):
        raise LabInputError(f"--out {args.out}: the video must end in .mp4 or .gif")
    profile = os.environ.get("LAB_PROFILE") or "embedded"
    train = materialize_hint("dnerf_checkpoint")
    if not args.checkpoint.is_file():
        raise LabInputError(f"{args.checkpoint}: no such checkpoint; train one with {train}")
    device = resolve_device(args.device)
    try:
        model, state = load_checkpoint(args.checkpoint, device, device, profile)
    except CheckpointError as error:
        raise LabInputError(f"{error} (train one with {train})") from None
    video, depth, rgb, _ = orbit_videos(model, state, args.out, args.frames, args.resolution, device)
    height, width = rgb.shape[1:3]
    print(f"{video}: {len(rgb)} frames at {width}x{height} ({state['method']}, step {state['step']})")
    print(f"{depth}: disparity along the same path")
    return 0
