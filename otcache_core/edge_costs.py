r"""Edge costs for the stage-1 graph search, and the calibration file that holds them.

The graph search (:mod:`.graph`) needs a cost :math:`C_{ij}` for every edge
:math:`i \to j` ("compute steps :math:`i` and :math:`j`, reuse step :math:`i`'s cache
on :math:`i+1, \dots, j-1`"). Edges are limited to a window: :math:`j - i \le W`
(``max_skip``); longer edges are forbidden (``inf``). Edges with :math:`j - i = 1`
skip nothing and cost 0. Two ways to get the others:

``global`` (LeMiCa's definition, exact)
    For each edge, sample with only that segment cached, starting from the recorded
    full-compute latent :math:`x_i` at step :math:`i`, and measure the error of the
    final latent against full compute (:func:`error`), averaged over calibration
    seeds. The sampling lives in ``otcache_comfy/calibration.py``; this module stores the
    results (:class:`CostMatrix`).

``fast`` (``global`` estimated for about a tenth of the sampling)
    Each edge's error on arrival at step :math:`j`, times the growth of an error from
    :math:`j` to the end, measured exactly with whole tails at a few steps
    (:mod:`.fast_costs`). ``values``/``done`` hold those exact edges, ``extras`` each
    seed's arrival errors (``arrival_<s>``).

``local`` (a fast preview)
    One full-compute run per seed records each step's model output :math:`o_t`
    (the ODE direction :math:`(x_t - \hat x_0) / \sigma_t`, i.e. the velocity of a flow
    model). Reusing :math:`o_i` on step :math:`t` moves the Euler update by
    :math:`|\sigma_{t+1}-\sigma_t| \, \|o_i - o_t\|`; relative to the step's own size
    that is the term below (:func:`local_edge_costs`):

    .. math::
        C_{ij} = \sum_{t=i+1}^{j-1} |\sigma_{t+1} - \sigma_t| \,
                 \frac{\|o_i - o_t\|_2}{\|o_t\|_2}

    It assumes that errors add up and ignores that an early error grows on the way
    to the final image, so it is a preview, not a replacement for ``global``.

The error metric
    :func:`error` is the relative L2 error :math:`\|a - b\|_2 / \|b\|_2` of the whole
    final latent (all batch entries, channels, frames and pixels together), computed
    in float64. It is scale free, so one number means the same for FLUX, Qwen-Image
    and video latents. Where the reference is exactly zero the absolute norm is used.

The calibration file
    :class:`CostMatrix` keeps per-seed costs ``values[s, i, j]`` and a ``done`` mask of
    the same shape, plus JSON ``info`` (what was calibrated, evaluations, seconds,
    measured schedules) and optional extra tensors (e.g. each seed's full-compute final
    latent). :meth:`CostMatrix.save` writes a safetensors file atomically (temporary
    file in the same folder, fsync, ``os.replace``), so an interrupted write never
    leaves a broken file and an interrupted calibration resumes from the last save.
    The same matrix serves every budget and objective.

Nothing here imports ComfyUI.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save

from .atomic import write_atomic
from .schedule import as_integer

FORMAT = "otcache.edge_costs"
FORMAT_VERSION = 1
EDGE_COSTS = ("fast", "global", "local")
ERROR_METRIC = "relative_l2"  # ||final - reference||_2 / ||reference||_2 of the final latent


class EdgeCostError(ValueError):
    """Bad input to an edge-cost computation, or an unreadable calibration file."""


# ----------------------------------------------------------------- error metric


def _as_float64(t: Any) -> np.ndarray | torch.Tensor:
    if isinstance(t, torch.Tensor):
        return t.detach().to("cpu", torch.float64)
    return np.asarray(t, dtype=np.float64)


def _norm(t: Any) -> float:
    if isinstance(t, torch.Tensor):
        return float(torch.linalg.vector_norm(t))
    return float(np.linalg.norm(np.ravel(t)))


def error(final: Any, reference: Any) -> float:
    """Relative L2 error ``||final - reference|| / ||reference||`` (float64, whole tensor).

    ``final`` and ``reference`` are torch tensors or array-likes of one shape. If the
    reference is exactly zero the absolute error ``||final - reference||`` is returned.
    """
    a, b = _as_float64(final), _as_float64(reference)
    if tuple(a.shape) != tuple(b.shape):
        raise EdgeCostError(f"error(): shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")
    diff = _norm(a - b)
    ref = _norm(b)
    return diff / ref if ref > 0 else diff


# ----------------------------------------------------------------- windows and edges


def _check_steps_window(steps: int, max_skip: int) -> tuple[int, int]:
    steps = as_integer(steps, "steps", low=2, error=EdgeCostError)
    return steps, as_integer(max_skip, "max_skip", low=1, error=EdgeCostError, hint=" (the longest edge j - i)")


def window_edges(steps: int, max_skip: int) -> list[tuple[int, int]]:
    """The edges that skip something and need a cost: ``2 <= j - i <= max_skip``, ``j < steps``.

    Ordered by ``i``, then ``j`` (the order a global calibration runs them in).
    """
    n, w = _check_steps_window(steps, max_skip)
    return [(i, j) for i in range(n) for j in range(i + 2, min(i + w, n - 1) + 1)]


def edge_evaluations(steps: int, i: int, j: int) -> int:
    """Model evaluations (per seed, one per step) of a global edge run: step i, then j..N-1."""
    return steps - j + 1


def window_costs(steps: int, max_skip: int, fill: float = 0.0) -> np.ndarray:
    """An (N, N) matrix with 0 on ``j = i + 1``, ``fill`` on ``2 <= j - i <= max_skip``, inf elsewhere.

    With ``fill = 0`` it is a cheap stand-in for a real cost matrix, e.g. to check that a
    budget is feasible for a window before any sampling.
    """
    n, w = _check_steps_window(steps, max_skip)
    costs = np.full((n, n), np.inf)
    for i in range(n - 1):
        costs[i, i + 1] = 0.0
    for i, j in window_edges(n, w):
        costs[i, j] = fill
    return costs


def min_budget(steps: int, max_skip: int) -> int:
    """Smallest budget a window allows: ``ceil((N - 1) / W) + 1``."""
    n, w = _check_steps_window(steps, max_skip)
    return -(-(n - 1) // w) + 1


# ----------------------------------------------------------------- local costs


def local_edge_costs(outputs: Any, sigmas: Any, max_skip: int) -> np.ndarray:
    r"""Local (preview) edge costs from one full-compute run's per-step outputs.

    Parameters
    ----------
    outputs : array-like or tensor, shape (N, ...)
        The model output recorded at each step (any shape per step; flattened).
    sigmas : array-like, shape (N + 1,)
        The sampler's sigmas, the last one being the end of the last step.
    max_skip : int
        The window W: edges with ``j - i > W`` are forbidden (inf).

    Returns
    -------
    costs : ndarray (N, N)
        ``costs[i, j] = sum_{t=i+1}^{j-1} |sigma[t+1] - sigma[t]| * ||o_i - o_t|| / ||o_t||``
        for ``1 <= j - i <= W`` (so 0 for ``j = i + 1``), inf elsewhere. Where ``o_t`` is
        exactly zero the absolute norm is used, as in :func:`error`.
    """
    if isinstance(outputs, torch.Tensor):
        flat = outputs.detach().to("cpu", torch.float64).reshape(outputs.shape[0], -1).numpy()
    else:
        arr = np.asarray(outputs, dtype=np.float64)
        if arr.ndim < 1:
            raise EdgeCostError("outputs must have a leading step axis, shape (N, ...)")
        flat = arr.reshape(arr.shape[0], -1)
    n = flat.shape[0]
    sig = np.asarray(sigmas.detach().cpu() if isinstance(sigmas, torch.Tensor) else sigmas, dtype=np.float64).ravel()
    if sig.shape[0] != n + 1:
        raise EdgeCostError(
            f"sigmas must hold N + 1 = {n + 1} values (one more than the {n} recorded steps), got {sig.shape[0]}"
        )
    if not np.isfinite(flat).all() or not np.isfinite(sig).all():
        raise EdgeCostError("outputs and sigmas must be finite")
    _, w = _check_steps_window(max(n, 2), max_skip)
    weights = np.abs(np.diff(sig))  # weights[t] = |sigma[t+1] - sigma[t]|
    norms = np.linalg.norm(flat, axis=1)
    costs = window_costs(n, w, fill=np.inf) if n >= 2 else np.full((n, n), np.inf)
    for i in range(n - 1):
        total = 0.0
        for j in range(i + 2, min(i + w, n - 1) + 1):
            t = j - 1  # the newly skipped step when the edge grows from i -> j-1 to i -> j
            diff = float(np.linalg.norm(flat[i] - flat[t]))
            rel = diff / norms[t] if norms[t] > 0 else diff
            total += weights[t] * rel
            costs[i, j] = total
    return costs


# ----------------------------------------------------------------- the calibration file


def arrival_key(seed: int) -> str:
    """The extras name of a ``fast`` calibration's arrival errors of seed index ``seed``."""
    return f"arrival_{seed}"


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")


@dataclass
class CostMatrix:
    """Per-seed edge costs with a done mask: the resumable product of a calibration.

    ``values[s, i, j]`` is seed ``s``'s cost of edge ``i -> j`` (NaN until done);
    ``done[s, i, j]`` says it was measured. Only the window edges (:func:`window_edges`)
    are ever measured; ``j = i + 1`` costs 0 and needs no entry. ``info`` is free JSON
    (what was calibrated, evaluations, seconds, measured schedules, ...); ``extras`` are
    tensors saved alongside (e.g. each seed's full-compute final latent).
    """

    steps: int
    max_skip: int
    seeds: int
    edge_cost: str
    values: np.ndarray
    done: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.steps, self.max_skip = _check_steps_window(self.steps, self.max_skip)
        self.seeds = as_integer(self.seeds, "seeds", low=1, error=EdgeCostError)
        if self.edge_cost not in EDGE_COSTS:
            raise EdgeCostError(f"edge_cost must be one of {', '.join(EDGE_COSTS)}, got {self.edge_cost!r}")
        shape = (self.seeds, self.steps, self.steps)
        self.values = np.asarray(self.values, dtype=np.float64)
        self.done = np.asarray(self.done, dtype=bool)
        if self.values.shape != shape or self.done.shape != shape:
            raise EdgeCostError(
                f"values and done must have shape {shape} (seeds, N, N), got {self.values.shape} and {self.done.shape}"
            )

    # --- construction
    @classmethod
    def new(cls, steps: int, max_skip: int, seeds: int, edge_cost: str = "global",
            info: Mapping[str, Any] | None = None) -> "CostMatrix":
        """An empty matrix: nothing measured yet."""
        n = int(steps)
        shape = (int(seeds), n, n)
        info = dict(info or {})
        if edge_cost == "fast":
            from .fast_costs import DEFAULT_DESIGN

            info.setdefault("fast_design", DEFAULT_DESIGN)
        return cls(steps, max_skip, seeds, edge_cost, np.full(shape, np.nan), np.zeros(shape, dtype=bool), info)

    # --- what is left
    @property
    def fast_design(self) -> str:
        """A fast calibration's design (:mod:`.fast_costs`); files saved before designs existed are ``growth``."""
        return str(self.info.get("fast_design", "growth"))

    @property
    def edges(self) -> list[tuple[int, int]]:
        """The edges measured exactly: every window edge, or (``fast``) the design's growth edges."""
        if self.edge_cost == "fast":
            from .fast_costs import growth_edges

            return growth_edges(self.steps, self.max_skip, design=self.fast_design)
        return window_edges(self.steps, self.max_skip)

    def pending(self, seed: int | None = None) -> list[tuple[int, int, int]]:
        """``(seed_index, i, j)`` of every window edge not yet measured, in run order."""
        seeds = range(self.seeds) if seed is None else [seed]
        return [(s, i, j) for s in seeds for i, j in self.edges if not self.done[s, i, j]]

    def seed_complete(self, seed: int) -> bool:
        if self.edge_cost == "fast" and arrival_key(seed) not in self.extras:
            return False
        return all(self.done[seed, i, j] for i, j in self.edges)

    @property
    def complete(self) -> bool:
        return all(self.seed_complete(s) for s in range(self.seeds))

    @property
    def edges_done(self) -> int:
        """Measured (seed, edge) pairs."""
        return sum(int(self.done[s, i, j]) for s in range(self.seeds) for i, j in self.edges)

    @property
    def edges_total(self) -> int:
        return self.seeds * len(self.edges)

    # --- filling in
    def record(self, seed: int, i: int, j: int, value: float) -> None:
        """Store seed ``seed``'s cost of edge ``i -> j`` and mark it done."""
        if not (0 <= seed < self.seeds):
            raise EdgeCostError(f"seed index {seed} out of range 0..{self.seeds - 1}")
        if (i, j) not in set(self.edges):
            raise EdgeCostError(f"edge {i} -> {j} is not in the window (2 <= j - i <= {self.max_skip}, j < {self.steps})")
        value = float(value)
        if not math.isfinite(value):
            raise EdgeCostError(f"edge {i} -> {j} got a non-finite cost {value}")
        self.values[seed, i, j] = value
        self.done[seed, i, j] = True

    def record_seed(self, seed: int, costs: np.ndarray) -> None:
        """Store one seed's full (N, N) cost matrix (e.g. from :func:`local_edge_costs`)."""
        costs = np.asarray(costs, dtype=np.float64)
        if costs.shape != (self.steps, self.steps):
            raise EdgeCostError(f"costs must have shape ({self.steps}, {self.steps}), got {costs.shape}")
        for i, j in self.edges:
            self.record(seed, i, j, costs[i, j])

    # --- reading out
    def costs(self, allow_incomplete: bool = False) -> np.ndarray:
        """The (N, N) matrix for :func:`.graph.best_path`: the mean over seeds.

        0 on ``j = i + 1``, the seed mean on window edges, inf elsewhere. An edge not
        measured for every seed raises, or with ``allow_incomplete`` is inf (forbidden).
        """
        if self.edge_cost == "fast":
            return self._fast_costs(allow_incomplete)
        out = window_costs(self.steps, self.max_skip, fill=np.inf)
        for i, j in self.edges:
            if self.done[:, i, j].all():
                out[i, j] = float(np.mean(self.values[:, i, j]))
            elif not allow_incomplete:
                raise EdgeCostError(
                    f"the calibration is incomplete ({self.edges_done}/{self.edges_total} edge runs done); "
                    "finish it first, or pass allow_incomplete=True to forbid the missing edges"
                )
        return out

    def _fast_costs(self, allow_incomplete: bool) -> np.ndarray:
        from .fast_costs import fast_costs

        ready = [s for s in range(self.seeds) if self.seed_complete(s)]
        if len(ready) < self.seeds and (not allow_incomplete or not ready):
            raise EdgeCostError(
                f"the fast calibration is incomplete ({len(ready)}/{self.seeds} seeds done); finish it first")
        per_seed = [fast_costs(self.extras[arrival_key(s)].numpy(), self.values[s], self.done[s], self.max_skip,
                               self.fast_design) for s in ready]
        return np.mean(per_seed, axis=0)

    # --- file I/O
    def to_bytes(self) -> bytes:
        tensors = {
            "values": torch.from_numpy(np.ascontiguousarray(self.values)),
            "done": torch.from_numpy(np.ascontiguousarray(self.done)),
        }
        for name, t in self.extras.items():
            if name in tensors:
                raise EdgeCostError(f"extra tensor name {name!r} is reserved")
            tensors[name] = t.detach().to("cpu").contiguous()
        metadata = {
            "format": FORMAT,
            "version": str(FORMAT_VERSION),
            "steps": str(self.steps),
            "max_skip": str(self.max_skip),
            "seeds": str(self.seeds),
            "edge_cost": self.edge_cost,
            "metric": ERROR_METRIC,
            "info": json.dumps(self.info, default=_json_default, sort_keys=True),
        }
        return _st_save(tensors, metadata=metadata)

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically: a temporary file in the same folder, fsync, then ``os.replace``."""
        return write_atomic(path, self.to_bytes())

    @classmethod
    def from_bytes(cls, data: bytes, where: str = "calibration data") -> "CostMatrix":
        try:
            tensors = _st_load(data)
            header_len = int.from_bytes(data[:8], "little")
            header = json.loads(data[8:8 + header_len])  # the safetensors header, for its metadata
            meta = header.get("__metadata__") or {}
        except Exception as exc:  # safetensors raises several types for a broken file
            raise EdgeCostError(f"{where} is not a readable safetensors file: {exc}") from None
        if meta.get("format") != FORMAT:
            raise EdgeCostError(f"{where} is not an OTCache edge-cost file (format {meta.get('format')!r})")
        if meta.get("version") != str(FORMAT_VERSION):
            raise EdgeCostError(f"{where} has version {meta.get('version')!r}; this OTCache reads {FORMAT_VERSION}")
        try:
            values = tensors.pop("values").numpy()
            done = tensors.pop("done").numpy()
            matrix = cls(int(meta["steps"]), int(meta["max_skip"]), int(meta["seeds"]), meta["edge_cost"],
                         values, done, json.loads(meta.get("info", "{}")), tensors)
        except (KeyError, ValueError, TypeError) as exc:
            raise EdgeCostError(f"{where} is malformed: {exc}") from None
        return matrix

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CostMatrix":
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise EdgeCostError(f"cannot read calibration file {path}: {exc}") from None
        return cls.from_bytes(data, where=f"calibration file {path}")

    def matches(self, steps: int, max_skip: int, seeds: int, edge_cost: str) -> bool:
        """Whether this matrix was made for these settings (a stale file must not be reused)."""
        return (self.steps, self.max_skip, self.seeds, self.edge_cost) == (int(steps), int(max_skip), int(seeds), edge_cost)

