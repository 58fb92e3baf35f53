"""The D-NeRF renders as a section of the benchmark report: per scene and method, the test
views beside ground truth and error, and a strip of orbit frames with their disparity,
captioned with that checkpoint's latest scores."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import polars as pl

from lab_pipelines.report import Section
from lab_pipelines.tables import image_markdown, read_table

METHOD_ORDER = ("fast", "dnerf")
IMAGES = (("test_grid.png", "test views: ground truth | prediction | error"),
          ("orbit_strip.png", "orbit, t from 0 to 1"), ("depth_strip.png", "disparity along the orbit"))


def _folders(data_root: Path) -> list[Path]:
    """renders/<scene>/<method>/ folders that hold at least an orbit strip, scenes sorted,
    methods in METHOD_ORDER."""
    found = [p.parent for p in (data_root / "renders").glob("*/*/orbit_strip.png")]
    rank = {m: i for i, m in enumerate(METHOD_ORDER)}
    return sorted(found, key=lambda p: (p.parent.name, rank.get(p.name, len(rank)), p.name))


def _scores(db_path: Path) -> dict[tuple[str, str], dict]:
    """(scene, method) -> the latest nerf_benchmark row of the checkpoint that was rendered
    (not of the full tier's 128x128 or a script's side-by-side rows)."""
    rows = read_table("nerf_benchmark", db_path)
    if "role" in rows.columns:
        rows = rows.filter(pl.col("role") == "checkpoint")
    if rows.is_empty():
        return {}
    latest = rows.sort("created_at").group_by("scene", "method").last()
    return {(r["scene"], r["method"]): r for r in latest.iter_rows(named=True)}


def _caption(scene: str, method: str, row: dict | None) -> str:
    if row is None:
        return f"{scene} / {method}"
    return (f"{scene} / {method}: {row['psnr']:.2f} dB PSNR, SSIM {row['ssim']:.3f}, "
            f"{row['iterations']} steps at {row['resolution']} ({row.get('split') or 'test'} split)")


def report_section(db_path: Path, data_root: Path) -> Section | None:
    """The renders under `data_root`/renders, or None when nothing was rendered yet."""
    folders = _folders(Path(data_root))
    if not folders:
        return None
    scores = _scores(Path(db_path))
    md, page = [], []
    for folder in folders:
        scene, method = folder.parent.name, folder.name
        caption = _caption(scene, method, scores.get((scene, method)))
        md.append(f"### {caption}")
        figures = []
        for name, alt in IMAGES:
            path = folder / name
            if not path.is_file():
                continue
            payload = path.read_bytes()
            md.append(image_markdown(payload, f"{scene} {method}: {alt}"))
            figures.append(f"<figure><img alt='{html.escape(f'{scene} {method}: {alt}')}' "
                           f"src='data:image/png;base64,{base64.b64encode(payload).decode()}'>"
                           f"<figcaption>{html.escape(alt)}</figcaption></figure>")
        videos = sorted(p.name for p in folder.glob("orbit*.mp4")) or sorted(p.name for p in folder.glob("orbit*.gif"))
        if videos:
            md.append("videos: " + ", ".join(f"`renders/{scene}/{method}/{v}`" for v in videos))
        page.append(f"<div class=render><h3>{html.escape(caption)}</h3><div class=side>{''.join(figures)}</div>"
                    + (f"<p class=src>videos: {html.escape(', '.join(videos))} in "
                       f"<code>renders/{html.escape(scene)}/{html.escape(method)}/</code></p>" if videos else "")
                    + "</div>")
    return Section(anchor="nerf_renders", title="D-NeRF renders", markdown="\n\n".join(md), html="".join(page))

