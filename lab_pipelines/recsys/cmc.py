"""CMC: contrastive matrix completion over the full user-item rating graph.

After MCCL ("Contrastive Matrix Completion with Denoising and Augmented Graph Views for Robust
Recommendation", arXiv 2506.10658), at full-graph scale so ML-100K trains in minutes on a CPU:

  encoder   one relational graph convolution in the GC-MC style (Berg et al. 2017): every
            rating level has its own message table, shared ordinally (level r adds to level
            r-1), messages are summed with 1/sqrt(deg_u deg_i) normalisation, no self
            connection, then a dense layer. Node dropout drops every message a node sends.
  denoised  the encoder with a learned gate on every edge (user, item, rating level) that can
  view      turn down ratings that do not fit; this view feeds the rating head.
  augmented the same encoder without the gate, with its own node and edge dropout and a small
  view      random perturbation of the embeddings (SimGCL-style noise).
  InfoNCE   aligns each user's (and item's) embedding across the two views against the other
            users (items) in the batch, at temperature tau.
  head      a bilinear softmax over rating levels with basis sharing (GC-MC's decoder); the
            prediction is the expected rating.

The loss is cross-entropy over levels + cl_weight * InfoNCE + l2 * mean squared embedding norm.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from functools import cached_property

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lab_pipelines.recsys.sparse import Pattern, sddmm, spmm


@dataclass
class CMCConfig:
    dim: int = 64  # message and embedding size
    n_bases: int = 2  # decoder basis matrices shared by all rating levels
    node_dropout: float = 0.6  # GC-MC-style heavy dropout; without it the model overfits badly
    hidden_dropout: float = 0.3  # dropout before the dense layer
    edge_dropout: float = 0.2  # augmented view: edges removed at random
    noise_eps: float = 0.1  # augmented view: size of the embedding perturbation
    denoise: bool = True  # learn per-edge gates in the denoised view
    gate_dim: int = 16
    tau: float = 0.1  # InfoNCE temperature (MCCL uses 0.07; 0.1 was better on ML-100K)
    cl_weight: float = 0.05
    cl_batch: int = 2048  # users/items per InfoNCE term
    l2: float = 1e-4
    lr: float = 0.01
    # > 0: validate and keep an exponential moving average of the weights (this much of the
    # old average kept per epoch). One full-graph step per epoch with heavy dropout makes the
    # live weights noisy; their average sits nearer the minimum. ML-100K validation RMSE,
    # seed 0: 0.8819 without, 0.8809 at 0.98, 0.8814 at 0.99, 0.8827 at 0.995.
    ema_decay: float = 0.98
    max_epochs: int = 1500  # one epoch = one full-graph step over all training ratings
    patience: int = 100  # epochs without a better validation RMSE before stopping
    eval_every: int = 5
    max_minutes: float = 0.0  # > 0: stop at the first validation past this much training time
    # Torch threads per process on CPU (0: cores / processes). One by default: with the cores
    # shared, every parallel region waits for a descheduled thread (ML-1M epoch on 2 busy
    # cores: 0.62 s with 1 thread, 4.6 s with 2).
    cpu_threads: int = 1
    # Item side features (genres, release year; only ML-100K ships them, see
    # `data.packaged_item_side`) add a learned message per rating level to every message an
    # item sends, so a user's embedding also says which kinds of film they rated how. A
    # dataset without them gets exactly the model without them. Off: ML-100K seed-0
    # validation RMSE 0.8813 with, 0.8809 without (0.8891 added to the item embedding
    # instead, GC-MC's way).
    item_side: bool = False
    side_dim: int = 16  # hidden width of the side features' message branch
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Graph:
    """The training ratings as a bipartite graph with rating-typed edges."""

    users: torch.Tensor  # (E,) int64
    items: torch.Tensor  # (E,) int64
    levels: torch.Tensor  # (E,) int64 index into `values`
    values: torch.Tensor  # (R,) float32 rating of each level
    n_users: int
    n_items: int
    item_side: torch.Tensor | None = None  # (n_items, F) float32 side features, if any

    @classmethod
    def from_ratings(cls, users: np.ndarray, items: np.ndarray, ratings: np.ndarray,
                     n_users: int, n_items: int, item_side: np.ndarray | None = None
                     ) -> Graph:
        values = np.unique(ratings)
        return cls(torch.from_numpy(users.astype(np.int64)),
                   torch.from_numpy(items.astype(np.int64)),
                   torch.as_tensor(np.searchsorted(values, ratings), dtype=torch.long),
                   torch.as_tensor(values, dtype=torch.float32), n_users, n_items,
                   None if item_side is None else torch.as_tensor(item_side,
                                                                  dtype=torch.float32))

    @property
    def n_item_side(self) -> int:
        """Width of the item side features (0: none)."""
        return 0 if self.item_side is None else self.item_side.shape[1]

    @cached_property
    def norm(self) -> torch.Tensor:
        deg_u = torch.bincount(self.users, minlength=self.n_users).float()
        deg_i = torch.bincount(self.items, minlength=self.n_items).float()
        return (deg_u[self.users] * deg_i[self.items]).rsqrt()

    @cached_property
    def pairs(self) -> Pattern:
        """Edges as a users x items matrix."""
        return Pattern(self.users, self.items, self.n_users, self.n_items)

    @cached_property
    def item_to_user(self) -> Pattern:
        """Edges as a users x (level, item) matrix: row u sums its items' level messages."""
        return Pattern(self.users, self.levels * self.n_items + self.items, self.n_users,
                       len(self.values) * self.n_items)

    @cached_property
    def user_to_item(self) -> Pattern:
        return Pattern(self.items, self.levels * self.n_users + self.users, self.n_items,
                       len(self.values) * self.n_users)

    def level_of(self, ratings: torch.Tensor) -> torch.Tensor:
        return (ratings[:, None] - self.values[None, :]).abs().argmin(1)

    def to(self, device: str | torch.device) -> Graph:
        pin = str(device).startswith("cuda")

        def move(t: torch.Tensor) -> torch.Tensor:
            # Pinned host memory makes the copy to the card asynchronous.
            return (t.pin_memory() if pin and t.device.type == "cpu" else t).to(
                device, non_blocking=True)

        return Graph(move(self.users), move(self.items), move(self.levels), move(self.values),
                     self.n_users, self.n_items,
                     None if self.item_side is None else move(self.item_side))


def _node_keep(n: int, p: float, device: torch.device) -> torch.Tensor:
    """Per-node keep mask scaled by 1/(1-p), so a dropped node sends no message at all."""
    if p <= 0:
        return torch.ones(n, device=device)
    return (torch.rand(n, device=device) >= p).float() / (1.0 - p)


class RatingGraphConv(nn.Module):
    """Sum of per-level messages from neighbours, with ordinal weight sharing across levels."""

    def __init__(self, n_users: int, n_items: int, n_levels: int, dim: int):
        super().__init__()
        self.user_msgs = nn.Parameter(torch.randn(n_levels, n_users, dim) * 0.1)
        self.item_msgs = nn.Parameter(torch.randn(n_levels, n_items, dim) * 0.1)

    def item_tables(self, side: torch.Tensor | None = None) -> torch.Tensor:
        """The message every item sends per rating level, (R, I, d), plus its side features'
        messages `side` (R, I, d) when given."""
        # Level r's message = sum of tables 1..r, so adjacent levels stay alike.
        tables = self.item_msgs.cumsum(0)
        return tables if side is None else tables + side

    def forward(self, g: Graph, weight: torch.Tensor, keep_user: torch.Tensor,
                keep_item: torch.Tensor, item_side: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """User and item embeddings from per-edge weights and per-node sending masks."""
        # A node's dropout scales its own table rows, so the sparse pattern never changes.
        items = self.item_tables(item_side) * keep_item[None, :, None]
        users = self.user_msgs.cumsum(0) * keep_user[None, :, None]
        dim = items.shape[-1]
        return (F.relu(spmm(g.item_to_user, weight, items.reshape(-1, dim))),
                F.relu(spmm(g.user_to_item, weight, users.reshape(-1, dim))))


class EdgeGate(nn.Module):
    """Learned weight in (0, 1) for each rating edge: the denoised view's noise filter."""

    def __init__(self, n_users: int, n_items: int, n_levels: int, dim: int):
        super().__init__()
        self.user = nn.Parameter(torch.randn(n_users, dim) * 0.01)
        self.item = nn.Parameter(torch.randn(n_items, dim) * 0.01)
        self.level = nn.Parameter(torch.full((n_levels,), 2.0))  # start near 0.88: all kept

    def forward(self, g: Graph) -> torch.Tensor:
        logits = sddmm(g.pairs, self.user, self.item) + self.level[g.levels]
        return torch.sigmoid(logits)


class BilinearDecoder(nn.Module):
    """p(level | u, i) = softmax_r(z_u^T Q_r z_i), Q_r a learned mix of a few shared bases."""

    def __init__(self, dim: int, n_levels: int, n_bases: int):
        super().__init__()
        self.bases = nn.Parameter(torch.randn(n_bases, dim, dim) / dim)
        self.mix = nn.Parameter(torch.randn(n_levels, n_bases) * 0.1)
        self.level_bias = nn.Parameter(torch.zeros(n_levels))  # the overall rating histogram

    def forward(self, z_user: torch.Tensor, z_item: torch.Tensor) -> torch.Tensor:
        """Level logits for paired rows (E, d), (E, d) -> (E, R)."""
        scores = torch.bmm(self._project(z_user), z_item[:, :, None]).squeeze(2)
        return scores @ self.mix.T + self.level_bias

    def on_pattern(self, z_user: torch.Tensor, z_item: torch.Tensor, pairs: Pattern
                   ) -> torch.Tensor:
        """Level logits for the (user, item) edges of `pairs`, never building an (E, d)
        tensor: (E, R)."""
        projected = self._project(z_user)
        scores = torch.stack([sddmm(pairs, projected[:, b], z_item)
                              for b in range(projected.shape[1])], 1)
        return scores @ self.mix.T + self.level_bias

    def all_pairs(self, z_user: torch.Tensor, z_item: torch.Tensor) -> torch.Tensor:
        """Level logits for every user x item: (U, d), (I, d) -> (U, I, R)."""
        return (self._project(z_user) @ z_item.T).transpose(1, 2) @ self.mix.T + self.level_bias

    def _project(self, z_user: torch.Tensor) -> torch.Tensor:
        """z_u^T P_b for every basis b, in one matmul: (N, d) -> (N, B, d)."""
        n_bases, dim, _ = self.bases.shape
        flat = self.bases.permute(1, 0, 2).reshape(dim, n_bases * dim)
        return (z_user @ flat).view(-1, n_bases, dim)


class CMC(nn.Module):
    def __init__(self, cfg: CMCConfig, n_users: int, n_items: int, n_levels: int,
                 n_item_side: int = 0):
        """`n_item_side`: width of the graph's item side features (0: none)."""
        super().__init__()
        self.cfg = cfg
        self.conv = RatingGraphConv(n_users, n_items, n_levels, cfg.dim)
        self.gate = EdgeGate(n_users, n_items, n_levels, cfg.gate_dim) if cfg.denoise else None
        self.user_dense = nn.Linear(cfg.dim, cfg.dim)
        self.item_dense = nn.Linear(cfg.dim, cfg.dim)
        self.decoder = BilinearDecoder(cfg.dim, n_levels, cfg.n_bases)
        # Built last, so a model without it draws the same initial weights as before it existed.
        self.item_side = (nn.Sequential(nn.Linear(n_item_side, cfg.side_dim), nn.ReLU(),
                                        nn.Linear(cfg.side_dim, n_levels * cfg.dim, bias=False))
                          if cfg.item_side and n_item_side else None)

    def item_side_messages(self, g: Graph) -> torch.Tensor | None:
        """Each item's side-feature message per rating level, (R, I, d); None without them."""
        if self.item_side is None:
            return None
        return self.item_side(g.item_side).view(g.n_items, -1, self.cfg.dim).transpose(0, 1)

    def encode(self, g: Graph, view: str = "denoised") -> tuple[torch.Tensor, torch.Tensor]:
        """User and item embeddings seen through one view; dropout only in training mode."""
        cfg, device = self.cfg, g.users.device
        weight = g.norm
        if view == "denoised" and self.gate is not None:
            weight = weight * self.gate(g)
        keep_user = torch.ones(g.n_users, device=device)
        keep_item = torch.ones(g.n_items, device=device)
        if self.training:
            if view == "augmented":
                weight = weight * _node_keep(len(weight), cfg.edge_dropout, device)
            # A dropped node sends nothing, but still receives from its kept neighbours.
            keep_user = _node_keep(g.n_users, cfg.node_dropout, device)
            keep_item = _node_keep(g.n_items, cfg.node_dropout, device)
        h_user, h_item = self.conv(g, weight, keep_user, keep_item, self.item_side_messages(g))
        p = cfg.hidden_dropout if self.training else 0.0
        z_user = self.user_dense(F.dropout(h_user, p, self.training))
        z_item = self.item_dense(F.dropout(h_item, p, self.training))
        if view == "augmented" and self.training and cfg.noise_eps > 0:
            z_user, z_item = _perturb(z_user, cfg.noise_eps), _perturb(z_item, cfg.noise_eps)
        return z_user, z_item

    def forward(self, g: Graph, pairs: Pattern, ratings: torch.Tensor) -> torch.Tensor:
        """The training loss on the rated (user, item) edges of `pairs`."""
        z_user, z_item = self.encode(g, "denoised")
        logits = self.decoder.on_pattern(z_user, z_item, pairs)
        cfg = self.cfg
        loss = F.cross_entropy(logits, g.level_of(ratings))
        # The mean squared norm over supervised pairs, as node sums weighted by degree.
        deg_u = torch.bincount(pairs.rows, minlength=g.n_users).to(z_user.dtype)
        deg_i = torch.bincount(pairs.cols, minlength=g.n_items).to(z_item.dtype)
        loss = loss + cfg.l2 * ((deg_u @ z_user.pow(2).sum(1)) + (deg_i @ z_item.pow(2).sum(1))
                                ) / len(ratings)
        if cfg.cl_weight > 0:
            a_user, a_item = self.encode(g, "augmented")
            loss = loss + cfg.cl_weight * (
                info_nce(z_user, a_user, cfg.tau, _sample(g.users, g.n_users, cfg.cl_batch))
                + info_nce(z_item, a_item, cfg.tau, _sample(g.items, g.n_items, cfg.cl_batch)))
        return loss


def _perturb(z: torch.Tensor, eps: float) -> torch.Tensor:
    """SimGCL noise: a random direction of length eps, in the embedding's own orthant."""
    noise = F.normalize(torch.rand_like(z), dim=1) * eps
    return z + torch.sign(z) * noise


def _sample(endpoints: torch.Tensor, n: int, k: int) -> torch.Tensor:
    """Up to k distinct nodes that have ratings (a node without any has no view to align)."""
    active = (torch.bincount(endpoints, minlength=n) > 0).nonzero().squeeze(1)
    return active[torch.randperm(len(active), device=active.device)[:k]]


def info_nce(view_a: torch.Tensor, view_b: torch.Tensor, tau: float,
             nodes: torch.Tensor) -> torch.Tensor:
    """InfoNCE: each node's two views are the positive pair, other nodes are negatives."""
    a = F.normalize(view_a[nodes], dim=1)
    b = F.normalize(view_b[nodes], dim=1)
    logits = a @ b.T / tau
    return F.cross_entropy(logits, torch.arange(len(nodes), device=logits.device))


# How CMCPredictor ranks items for top-k lists (rating predictions are always the expected
# rating): the expected rating, or the head's probability that the rating is >= 4, the
# threshold the ranking metrics call relevant.
RANKINGS = ("expected", "p_relevant")


class CMCPredictor:
    """A trained CMC in evaluation mode, with the graph embeddings computed once."""

    def __init__(self, model: CMC, graph: Graph, ranking: str = "expected"):
        if ranking not in RANKINGS:
            raise ValueError(f"ranking must be one of {RANKINGS}, not {ranking!r}")
        self.model, self.graph, self.ranking = model.eval(), graph, ranking
        with torch.no_grad():
            self.z_user, self.z_item = model.encode(graph, "denoised")

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            u = torch.tensor(users, dtype=torch.long, device=self.z_user.device)
            i = torch.tensor(items, dtype=torch.long, device=self.z_user.device)
            logits = self.model.decoder(self.z_user[u], self.z_item[i])
            return (logits.softmax(-1) @ self.graph.values).cpu().numpy()

    def folded(self, users: np.ndarray, items: np.ndarray, ratings: np.ndarray,
               known: bool = False, user_norm: float = 0.5, scale: float = 1.0,
               centre: bool = False, steps: int = 0, lr: float = 0.05, anchor: float = 1.0
               ) -> CMCPredictor:
        """This predictor with the embeddings of `users` recomputed by the graph encoder from
        the given (user, item, rating) edges alone, no weight changed: a new user is folded in
        the way training embeds every user, since with no self-connection a user's embedding
        is made only of its items' messages. `known`: the edges are already in the training
        graph (item degrees count them, each user keeps its learned gate row), which
        reproduces the trained embedding; otherwise each user is a newcomer whose edges add
        one to each item's degree and whose gate row is the trained users' mean. User indices
        past the graph's add rows (a user the split never indexed).

        Knobs for users with few edges (chosen on held-out validation users). A few edges
        make a small message sum, so a new user's embedding lands near that of a user with
        no edges at all, `user_dense(0)`, which training never asked to be a good prediction
        (ML-100K: 0.4-0.6 away from it for 1-10 edges, 1.7 for a trained user). `centre`
        moves that no-evidence point to the mean trained user's embedding, so little
        evidence means "an average user". `scale` multiplies the message sum; a message's
        weight is deg_u^-user_norm deg_i^-1/2 (training's power is 1/2); and `steps` Adam
        steps on the new embeddings alone fit the given ratings through the rating head,
        pulled toward the encoder's embedding by `anchor` x their squared distance."""
        model, g, device = self.model, self.graph, self.z_user.device
        u = torch.tensor(np.asarray(users), dtype=torch.long, device=device)
        i = torch.tensor(np.asarray(items), dtype=torch.long, device=device)
        levels = g.level_of(torch.tensor(np.asarray(ratings), dtype=torch.float32,
                                         device=device))
        rows, local = torch.unique(u, return_inverse=True)
        with torch.no_grad():
            deg_u = torch.bincount(local, minlength=len(rows)).float()
            deg_i = torch.bincount(g.items, minlength=g.n_items).float()[i] + (0.0 if known
                                                                                else 1.0)
            weight = deg_u[local].pow(-user_norm) * deg_i.rsqrt()
            trained = torch.bincount(g.users, minlength=g.n_users) > 0
            if model.gate is not None:
                gate_user = (model.gate.user[u] if known else
                             model.gate.user[trained].mean(0).expand(len(u), -1))
                weight = weight * torch.sigmoid((gate_user * model.gate.item[i]).sum(1)
                                                + model.gate.level[levels])
            tables = model.conv.item_tables(model.item_side_messages(g))
            messages = tables[levels, i] * weight[:, None]
            h = torch.zeros(len(rows), messages.shape[1], device=device).index_add_(
                0, local, messages)
            z = model.user_dense(F.relu(h) * scale)
            if centre:
                empty = model.user_dense(torch.zeros_like(h[:1]))
                z = z - empty + self.z_user[trained].mean(0)
        if steps:
            z = self._fit_users(z, local, i, levels, steps, lr, anchor)
        with torch.no_grad():
            n = max(len(self.z_user), int(rows.max()) + 1)
            z_user = torch.cat([self.z_user, self.z_user.new_zeros(n - len(self.z_user),
                                                                    z.shape[1])])
            z_user[rows] = z
        out = copy.copy(self)
        out.z_user = z_user
        return out

    def _fit_users(self, start: torch.Tensor, local: torch.Tensor, items: torch.Tensor,
                   levels: torch.Tensor, steps: int, lr: float, anchor: float) -> torch.Tensor:
        """User embeddings fitted to their edges' rating levels, every weight fixed."""
        z = start.clone().requires_grad_(True)
        opt = torch.optim.Adam([z], lr=lr)
        z_item = self.z_item[items]
        for _ in range(steps):
            logits = self.model.decoder(z[local], z_item)
            # Per user: the negative log-likelihood of its k ratings (a sum, so the data
            # outweighs the pull toward the encoder as k grows) plus the pull.
            loss = (F.cross_entropy(logits, levels, reduction="sum")
                    + anchor * (z - start).pow(2).sum()) / len(z)
            # The gradient of z alone: the model's own weights get none.
            (z.grad,) = torch.autograd.grad(loss, [z])
            opt.step()
        return z.detach()

    def score_users(self, users: np.ndarray) -> torch.Tensor:
        with torch.no_grad():
            u = torch.tensor(users, dtype=torch.long, device=self.z_user.device)
            probs = self.model.decoder.all_pairs(self.z_user[u], self.z_item).softmax(-1)
            if self.ranking == "p_relevant":
                return probs[..., self.graph.values >= 4.0].sum(-1)
            return probs @ self.graph.values
