"""Train CMC: one loop, single device by default, DistributedDataParallel under torchrun.

    python -m lab_pipelines.recsys.train --split-dir data/recsys/ml-100k/random80_seed0 \
        --checkpoint data/checkpoints/cmc.pt
    torchrun --nproc_per_node 2 -m lab_pipelines.recsys.train --split-dir ... --checkpoint ...

Every rank encodes the whole training graph (it is small) and supervises its own shard of the
training ratings; DDP averages the gradients, so ranks stay identical. gloo on CPU, nccl on
CUDA. Early stopping watches validation RMSE, which every rank computes identically.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import io
import json
import math
import os
import resource
import subprocess
import sys
import time
from collections import deque
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from lab_pipelines.devices import autocast_dtype, configure_torch_for, resolve_device, torch_threads
from lab_pipelines.paths import atomic_write_bytes
from lab_pipelines.progress import LogFn, Progress
from lab_pipelines.recsys.cmc import CMC, CMCConfig, CMCPredictor, Graph
from lab_pipelines.recsys.data import RatingSplit, packaged_item_side
from lab_pipelines.recsys.metrics import rmse
from lab_pipelines.recsys.sparse import Pattern


@dataclass
class TrainResult:
    """What one training run did; seconds per epoch include the validation pass every
    `eval_every` epochs."""

    best_val_rmse: float
    best_epoch: int
    epochs_run: int
    train_seconds: float
    world_size: int
    peak_rss_mb: float = 0.0  # this process's high-water resident memory (rank 0's under DDP)
    history: list[dict] = field(default_factory=list)  # epoch, train_loss, val_rmse
    rank_digests: list[str] = field(default_factory=list)  # parameter hash of every rank
    first_step_digests: list[str] = field(default_factory=list)

    @property
    def seconds_per_epoch(self) -> float:
        return self.train_seconds / max(self.epochs_run, 1)


def _silent(_: str) -> None:
    pass


def parameter_digest(model: torch.nn.Module) -> str:
    """A hash of every parameter's bytes, to prove ranks hold identical weights."""
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _gather(value: str, world: int) -> list[str]:
    if world == 1:
        return [value]
    out: list = [None] * world
    dist.all_gather_object(out, value)
    return out


def _setup_distributed(requested: str) -> tuple[str, int, int]:
    """(device, rank, world size); starts the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return resolve_device(requested), 0, 1
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = resolve_device(requested).startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return (f"cuda:{local}" if use_cuda else "cpu"), dist.get_rank(), world


def train_cmc(split: RatingSplit, cfg: CMCConfig, device: str = "auto",
              checkpoint: Path | None = None, log: LogFn | None = None
              ) -> tuple[CMCPredictor, TrainResult]:
    """Train with early stopping on validation RMSE (DDP when launched by torchrun). Progress
    against `max_epochs` and periodic validation lines go to `log` (a tqdm bar without one)."""
    device, rank, world = _setup_distributed(device)
    configure_torch_for(device)
    with torch_threads(cpu_threads(cfg, world) if device == "cpu" else torch.get_num_threads()):
        return _train(split, cfg, device, rank, world, checkpoint, log)


def _train(split: RatingSplit, cfg: CMCConfig, device: str, rank: int, world: int,
           checkpoint: Path | None, log: LogFn | None) -> tuple[CMCPredictor, TrainResult]:
    torch.manual_seed(cfg.seed)  # same initial weights on every rank
    # Side features where the dataset ships them; without them the model is the plain one.
    side = packaged_item_side(split.dataset, split.n_items) if cfg.item_side else None
    graph = Graph.from_ratings(*split.arrays("train"), split.n_users, split.n_items,
                               side).to(device)
    model = CMC(cfg, split.n_users, split.n_items, len(graph.values), graph.n_item_side
                ).to(device)
    raw_model = model
    if world > 1:
        model = DDP(model, device_ids=[int(device[5:])] if device.startswith("cuda") else None,
                    broadcast_buffers=False)
    torch.manual_seed(cfg.seed + 1000 * rank)  # different dropout masks per rank

    # This rank's shard of the supervised ratings; the graph itself is whole on every rank.
    pairs = graph.pairs if world == 1 else Pattern(
        graph.users[rank::world], graph.items[rank::world], split.n_users, split.n_items)
    ratings = graph.values[graph.levels[rank::world]]
    val_u, val_i, val_r = split.arrays("val")
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    amp = autocast_dtype(device)
    autocast = (lambda: torch.autocast("cuda", dtype=amp)) if amp else nullcontext

    # The weights validated and kept: the live ones, or their moving average.
    ema = copy.deepcopy(raw_model) if cfg.ema_decay > 0 else None
    kept = raw_model if ema is None else ema
    result = TrainResult(math.inf, 0, 0, 0.0, world)
    best_state = copy.deepcopy(kept.state_dict())
    start = time.perf_counter()
    # Ranks other than 0 train silently; early stopping makes the ETA an upper bound.
    quiet = rank > 0
    progress = Progress(cfg.max_epochs, "CMC epochs (max)", _silent if quiet else log,
                        unit="epochs")
    for epoch in range(1, cfg.max_epochs + 1):
        progress.update()
        model.train()
        with autocast():
            loss = model(graph, pairs, ratings)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if ema is not None:
            _average_into(ema, raw_model, min(cfg.ema_decay, (1 + epoch) / (10 + epoch)))
        result.epochs_run = epoch
        if epoch == 1:
            result.first_step_digests = _gather(parameter_digest(raw_model), world)
        if epoch % cfg.eval_every and epoch != cfg.max_epochs:
            continue
        train_loss = loss.detach().float()
        if world > 1:
            dist.all_reduce(train_loss)
            train_loss /= world
        val = rmse(CMCPredictor(kept, graph).predict(val_u, val_i), val_r)
        result.history.append({"epoch": epoch, "train_loss": float(train_loss), "val_rmse": val})
        if val < result.best_val_rmse:
            result.best_val_rmse, result.best_epoch = val, epoch
            best_state = copy.deepcopy(kept.state_dict())
        if epoch % (cfg.eval_every * 5) == 0 and not quiet:
            (log or print)(f"epoch {epoch}: loss {float(train_loss):.4f} val RMSE {val:.4f} "
                           f"(best {result.best_val_rmse:.4f} @ {result.best_epoch})")
        if epoch - result.best_epoch >= cfg.patience or _out_of_time(start, cfg, world):
            break
    progress.close()
    result.train_seconds = time.perf_counter() - start
    result.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    result.rank_digests = _gather(parameter_digest(raw_model), world)
    raw_model.load_state_dict(best_state)
    if checkpoint is not None and rank == 0:
        save_checkpoint(checkpoint, raw_model, graph, split, result)
    return CMCPredictor(raw_model, graph), result


def _average_into(average: torch.nn.Module, live: torch.nn.Module, decay: float) -> None:
    """One moving-average step. The caller ramps `decay` up from ~0.2 over the first epochs,
    so the random initial weights do not linger in the average of a short run."""
    with torch.no_grad():
        for kept, now in zip(average.parameters(), live.parameters()):
            kept.lerp_(now, 1.0 - decay)


def cpu_threads(cfg: CMCConfig, processes: int) -> int:
    """Threads per process: the configured count, or each process's share of the cores
    rather than all processes fighting over all of them."""
    return cfg.cpu_threads or max(1, (os.cpu_count() or 1) // processes)


def _out_of_time(start: float, cfg: CMCConfig, world: int) -> bool:
    """Past the time budget on any rank; every rank gets the same answer, so all stop."""
    if cfg.max_minutes <= 0:
        return False
    late = torch.tensor([float(time.perf_counter() - start > 60 * cfg.max_minutes)])
    if world > 1:
        dist.all_reduce(late, op=dist.ReduceOp.MAX)
    return bool(late.item())


def save_checkpoint(path: Path, model: CMC, graph: Graph, split: RatingSplit,
                    result: TrainResult) -> None:
    """Weights, config and the training graph (needed to embed nodes), written atomically."""
    cpu = graph.to("cpu")
    payload = {"config": model.cfg.to_dict(), "state_dict": model.state_dict(),
               "graph": {"users": cpu.users, "items": cpu.items, "levels": cpu.levels,
                         "values": cpu.values, "n_users": cpu.n_users, "n_items": cpu.n_items,
                         "item_side": cpu.item_side},
               "dataset": split.dataset, "split": split.split,
               "best_val_rmse": result.best_val_rmse, "best_epoch": result.best_epoch}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(Path(path), buffer.getvalue())


def load_checkpoint(path: Path, device: str = "cpu") -> CMCPredictor:
    payload = torch.load(path, map_location=device, weights_only=True)
    graph = Graph(**payload["graph"]).to(device)
    model = CMC(CMCConfig(**payload["config"]), graph.n_users, graph.n_items,
                len(graph.values), graph.n_item_side).to(device)
    model.load_state_dict(payload["state_dict"])
    return CMCPredictor(model, graph)


def train_cmc_distributed(split_dir: Path, cfg: CMCConfig, nproc: int, device: str = "auto",
                          checkpoint: Path | None = None, result_json: Path | None = None,
                          log: LogFn = print) -> TrainResult:
    """Run `main` under torchrun with `nproc` processes and return rank 0's result. Every
    line the ranks print (rank 0's progress among them) is passed on to `log` as it comes."""
    result_json = result_json or Path(split_dir) / ".cmc_result.json"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}", "-m", "lab_pipelines.recsys.train",
               "--split-dir", str(split_dir), "--device", device,
               "--config-json", json.dumps(cfg.to_dict()), "--result-json", str(result_json)]
    if checkpoint is not None:
        command += ["--checkpoint", str(checkpoint)]
    env = dict(os.environ)
    if not device.startswith("cuda"):
        env["OMP_NUM_THREADS"] = str(cpu_threads(cfg, nproc))
    log(f"launching: {' '.join(command[:6])} ...")
    tail: deque[str] = deque(maxlen=100)
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True) as ranks:
        for line in ranks.stdout:
            tail.append(line.rstrip())
            log(tail[-1])
    if ranks.returncode != 0:
        raise RuntimeError(f"torchrun failed ({ranks.returncode}):\n" + "\n".join(tail))
    return TrainResult(**json.loads(Path(result_json).read_text()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--split-dir", type=Path, required=True)
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--config-json", default="{}", help="CMCConfig fields as JSON")
    parser.add_argument("--result-json", type=Path, help="rank 0 writes the TrainResult here")
    args = parser.parse_args()
    split = RatingSplit.load(args.split_dir)
    cfg = CMCConfig(**json.loads(args.config_json))
    # Flushed lines, not a tqdm bar: the launching process forwards them to its log.
    _, result = train_cmc(split, cfg, args.device, args.checkpoint,
                          log=lambda line: print(line, flush=True))
    if args.result_json and int(os.environ.get("RANK", "0")) == 0:
        atomic_write_bytes(args.result_json, json.dumps(result.__dict__, indent=1).encode())
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
