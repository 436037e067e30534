"""Calibration sampling: record full-compute trajectories, replay tails with a schedule.

Reusable building blocks for the OTCache Reference (stage 1) and the anchor search
(stage 2). Everything samples through ComfyUI's own path (``comfy.sample.sample_custom``
with a ``CFGGuider``, the KSampler's sigmas and noise), so what is measured is what a
KSampler would run.

- :func:`sample_with_schedule` runs one sampling, optionally with an OTCache schedule
  (:func:`..cache_runtime.apply_otcache`, same reuse mode as the Cached Model), and
  optionally starting at step ``i`` from a recorded latent ``x_i``.
- :meth:`SamplingSetup.record` runs full compute and records, for each step ``i``, the
  latent fed to step ``i`` (``x_i``, sampler space) and the model's denoised prediction.
- :func:`calibrate` fills an :class:`..otcache_core.edge_costs.CostMatrix` (``global`` or
  ``local``). Each measured edge goes to an fsynced journal (:mod:`..otcache_core.journal`)
  before the next starts, each seed's full-compute trajectory to a file of its own, and
  the matrix file is rewritten every few seconds; so a resume after ``kill -9`` redoes
  at most the edge in flight, and a damaged matrix file is rebuilt from the journal.

How a tail is replayed: the sampler is wrapped so that it starts from ``x_i`` instead of
the noise-scaled latent ComfyUI would hand it, over the sigmas ``sigmas[i:]``. The noise
and latent handed to ComfyUI are the full run's, so inpainting masks behave the same.
For deterministic single-step samplers (euler, heun, dpm_2, ddim, ...) the replay without
caching reproduces the recorded final latent exactly (:data:`EXACT_REPLAY_SAMPLERS`, and
checked once per calibration). Multistep samplers (dpmpp_2m, uni_pc, ...) lose their
history at the cut and ancestral/SDE samplers draw their noise afresh (same seed), so for
them each edge is compared with a replay of the same tail without caching, which costs
``N - i`` more evaluations per start step and seed.

Step resolution while counting evaluations follows the runtime: an evaluation's sigma is
matched against the run's sigmas (``isclose``); midpoints follow the last matched step.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import comfy.model_management
import comfy.sample
import comfy.samplers
import folder_paths
import torch

from ..otcache_core.atomic import write_atomic
from ..otcache_core.edge_costs import CostMatrix, EdgeCostError, arrival_key, edge_evaluations, error, local_edge_costs
from ..otcache_core.journal import EdgeJournal
from ..otcache_core.schedule import Schedule, as_integer
from ..otcache_core.shared_edges import SharedEdges
from . import split_tails
from .cache_runtime import WRAPPER_KEY, apply_otcache, match_step, resolve_reuse
from .fingerprints import setup_fingerprint

log = logging.getLogger("otcache")

# Deterministic single-step samplers: a replay from x_i over sigmas[i:] repeats the full run.
EXACT_REPLAY_SAMPLERS = frozenset({"euler", "heun", "dpm_2", "ddim", "euler_cfg_pp"})
REPLAY_TOLERANCE = 1e-4  # relative L2; larger means the replay is not exact on this machine
SAVE_EVERY_EDGES = 1  # the matrix file is rewritten after an edge *and* this many seconds ...
SAVE_EVERY_SECONDS = 5.0  # ... whichever comes later; the journal keeps every edge in between
SHARED_POLL_SECONDS = 1.0  # a shared calibration waiting on other workers' units looks again this often


class CalibrationError(RuntimeError):
    """A calibration that cannot run (bad sampler or settings, unusable model)."""


# ----------------------------------------------------------------- one sampling run


class _StopSampling(Exception):
    """Raised by the denoiser on reaching its stop step: the latent arriving there is all a run needs."""


class _Denoiser:
    """Wraps the sampler's denoiser: counts computed evaluations, records x_i and denoised_i."""

    def __init__(self, inner, sigmas: torch.Tensor, mask: Sequence[bool] | None, record: bool,
                 stop: int | None = None):
        self.inner = inner
        self.sigmas = sigmas.detach().to("cpu", torch.float64)
        self.mask = mask
        self.record = record
        self.stop = stop
        self.last = 0
        self.evaluations = 0
        self.xs: dict[int, torch.Tensor] = {}
        self.denoised: dict[int, torch.Tensor] = {}

    def __getattr__(self, name):  # samplers read model.inner_model...; only called for missing names
        return getattr(self.__dict__["inner"], name)

    def __call__(self, x, sigma, **kwargs):
        step, exact = match_step(self.sigmas, float(sigma.reshape(-1)[0]), self.last)
        self.last = step
        if step == self.stop and exact:
            self.xs[step] = x.detach().to(comfy.model_management.intermediate_device(), torch.float32, copy=True)
            raise _StopSampling
        if self.mask is None or self.mask[step]:
            self.evaluations += 1
        out = self.inner(x, sigma, **kwargs)
        # The last evaluation at exactly sigma_i sees the state x_i: heun's corrector evaluates the
        # *predicted* x at sigma_{i+1} first, and step i+1 then evaluates the real x_{i+1} there.
        if self.record and exact:
            device = comfy.model_management.intermediate_device()
            self.xs[step] = x.detach().to(device, torch.float32, copy=True)
            self.denoised[step] = out.detach().to(device, torch.float32, copy=True)
        return out


def _wrapped_sampler(sampler_name: str, denoisers: list, sigmas: torch.Tensor, mask, record: bool,
                     start_x: torch.Tensor | None, stop: int | None = None):
    base = comfy.samplers.sampler_object(sampler_name)
    if not isinstance(base, comfy.samplers.KSAMPLER):
        raise CalibrationError(f"sampler {sampler_name!r} is not a k-diffusion sampler; calibration cannot wrap it")

    def sampler_function(model_k, noise, run_sigmas, **kwargs):
        denoiser = _Denoiser(model_k, sigmas, mask, record, stop)
        denoisers.append(denoiser)
        x = noise
        if start_x is not None:
            if tuple(start_x.shape) != tuple(noise.shape):
                raise CalibrationError(f"start latent has shape {tuple(start_x.shape)}, the sampler expects {tuple(noise.shape)}")
            x = start_x.to(noise.device, noise.dtype, copy=True)
        return base.sampler_function(denoiser, x, run_sigmas, **kwargs)

    return comfy.samplers.KSAMPLER(sampler_function, base.extra_options, base.inpaint_options)


@dataclasses.dataclass
class RunResult:
    """One sampling run: the final latent (as KSampler returns it) and what it cost."""

    final: torch.Tensor
    evaluations: int  # denoiser evaluations that ran the transformer
    seconds: float
    xs: list[torch.Tensor] | None = None  # recorded x_i (sampler space), full-compute runs only
    denoised: list[torch.Tensor] | None = None


@dataclasses.dataclass
class Trajectory:
    """A full-compute run: x_i and denoised_i for every step, the sigmas and the final latent."""

    seed: int
    sigmas: torch.Tensor  # (N + 1,) float64, cpu
    xs: list[torch.Tensor]
    denoised: list[torch.Tensor]
    final: torch.Tensor
    evaluations: int
    seconds: float

    @property
    def steps(self) -> int:
        return len(self.xs)

    def directions(self) -> torch.Tensor:
        """(N, ...) model outputs as ODE directions ``(x_t - denoised_t) / sigma_t`` (flow: the velocity)."""
        out = []
        for t, (x, d) in enumerate(zip(self.xs, self.denoised)):
            sigma = float(self.sigmas[t])
            out.append((x.double() - d.double()) / sigma if sigma > 0 else torch.zeros_like(x, dtype=torch.float64))
        return torch.stack(out)


@dataclasses.dataclass
class SamplingSetup:
    """Everything of a KSampler run except the seed: what calibration and search sample with."""

    model: Any  # ModelPatcher
    positive: list
    negative: list
    latent: dict
    sampler_name: str
    scheduler: str
    steps: int
    cfg: float

    def __post_init__(self) -> None:
        if self.sampler_name not in comfy.samplers.KSampler.SAMPLERS:
            raise CalibrationError(f"unknown sampler {self.sampler_name!r}")
        if self.scheduler not in comfy.samplers.KSampler.SCHEDULERS:
            raise CalibrationError(f"unknown scheduler {self.scheduler!r}")
        if not isinstance(self.steps, int) or self.steps < 1:
            raise CalibrationError(f"steps must be a positive integer, got {self.steps!r}")
        if not isinstance(self.latent, dict) or "samples" not in self.latent:
            raise CalibrationError("latent must be a LATENT dict with 'samples'")
        self._sigmas: torch.Tensor | None = None
        self._latent_image: torch.Tensor | None = None

    @property
    def sigmas(self) -> torch.Tensor:
        """The KSampler's N + 1 sigmas (cpu, float64), discard-penultimate samplers included."""
        if self._sigmas is None:
            ks = comfy.samplers.KSampler(self.model, steps=self.steps, device="cpu", sampler=self.sampler_name,
                                         scheduler=self.scheduler, denoise=1.0, model_options=self.model.model_options)
            self._sigmas = ks.sigmas.detach().to("cpu", torch.float64)
        return self._sigmas

    @property
    def latent_image(self) -> torch.Tensor:
        if self._latent_image is None:
            self._latent_image = comfy.sample.fix_empty_latent_channels(
                self.model, self.latent["samples"], self.latent.get("downscale_ratio_spacial"),
                self.latent.get("downscale_ratio_temporal"))
        return self._latent_image

    def noise(self, seed: int) -> torch.Tensor:
        return comfy.sample.prepare_noise(self.latent_image, seed, self.latent.get("batch_index"))

    def sample(self, seed: int, schedule: Schedule | None = None, reuse: str = "auto", start_step: int = 0,
               start_x: torch.Tensor | None = None, record: bool = False, *, stop_step: int | None = None,
               batch_seeds: Sequence[int] | None = None) -> RunResult:
        return _run(self, seed, schedule, reuse, start_step, start_x, record, stop_step, batch_seeds)

    def record(self, seed: int) -> Trajectory:
        return record_trajectory_setup(self, seed)


def _run(setup: SamplingSetup, seed: int, schedule: Schedule | None, reuse: str, start_step: int,
         start_x: torch.Tensor | None, record: bool, stop_step: int | None = None,
         batch_seeds: Sequence[int] | None = None) -> RunResult:
    """The one place every calibration sampling goes through (tests count calls here).

    ``stop_step``: stop on reaching that step, before evaluating it; ``final`` is then the
    latent arriving there (sampler space). ``batch_seeds``: one batched run of several
    starts (``start_x`` concatenated along the batch), seed by seed; evaluations count
    each member, as unbatched runs would.
    """
    n = setup.steps
    if not 0 <= start_step < n:
        raise CalibrationError(f"start_step must be in 0..{n - 1}, got {start_step}")
    if start_step > 0 and start_x is None:
        raise CalibrationError("a run that starts after step 0 needs start_x, the recorded latent of that step")
    if stop_step is not None and not start_step < stop_step <= n - 1:
        raise CalibrationError(f"stop_step must be in {start_step + 1}..{n - 1}, got {stop_step}")
    sigmas = setup.sigmas[start_step:] if stop_step is None else setup.sigmas[start_step:stop_step + 2]
    run_steps = int(sigmas.shape[0]) - 1
    model = setup.model
    mask = None
    if schedule is not None:
        if schedule.steps != run_steps:
            raise CalibrationError(f"the schedule has {schedule.steps} steps; this run has {run_steps}")
        if not schedule.is_full:
            model = apply_otcache(setup.model, schedule, reuse=reuse, on_step_mismatch="error", quiet=True)
            mask = schedule.mask
    seeds = list(batch_seeds) if batch_seeds is not None else [seed]
    noise = torch.cat([setup.noise(s) for s in seeds]) if len(seeds) > 1 else setup.noise(seed)
    latent_image, noise_mask = setup.latent_image, setup.latent.get("noise_mask")
    if len(seeds) > 1:
        latent_image = latent_image.repeat(len(seeds), *[1] * (latent_image.ndim - 1))
        if noise_mask is not None:
            noise_mask = noise_mask.repeat(len(seeds), *[1] * (noise_mask.ndim - 1))
    denoisers: list[_Denoiser] = []
    stop = None if stop_step is None else stop_step - start_step
    sampler = _wrapped_sampler(setup.sampler_name, denoisers, sigmas, mask, record, start_x, stop)
    start = time.perf_counter()
    try:
        final = comfy.sample.sample_custom(model, noise, setup.cfg, sampler, sigmas.to(torch.float32),
                                           setup.positive, setup.negative, latent_image, noise_mask=noise_mask,
                                           callback=None, disable_pbar=True, seed=seeds[0])
    except _StopSampling:
        final = denoisers[-1].xs[stop]
    seconds = time.perf_counter() - start
    evaluations = sum(d.evaluations for d in denoisers) * len(seeds)
    result = RunResult(final, evaluations, seconds)
    if record:
        den = denoisers[-1]
        wanted = range(run_steps) if stop is None else range(stop + 1)
        missing = [i for i in wanted if i not in den.xs]
        if missing:
            raise CalibrationError(
                f"sampler {setup.sampler_name!r} never evaluated the model at the sigma of step(s) {missing}; "
                "it cannot be calibrated (pick a sampler without churn, e.g. euler)")
        result.xs = [den.xs[i] for i in wanted]
        result.denoised = [den.denoised[i] for i in wanted if i in den.denoised]
    return result


def record_trajectory_setup(setup: SamplingSetup, seed: int) -> Trajectory:
    run = _run(setup, seed, None, "auto", 0, None, True)
    return Trajectory(seed, setup.sigmas, run.xs, run.denoised, run.final, run.evaluations, run.seconds)


def sample_with_schedule(model, positive, negative, latent: dict, seed: int, sampler_name: str, scheduler: str,
                         steps: int, cfg: float, schedule: Schedule | None = None, reuse: str = "auto",
                         start_step: int = 0, start_x: torch.Tensor | None = None) -> torch.Tensor:
    """Final latent (``samples``) of a KSampler run, optionally with an OTCache schedule.

    With ``start_step = i`` and ``start_x = x_i`` (from :meth:`SamplingSetup.record`) it runs
    only the tail ``sigmas[i:]``, and ``schedule`` must then have ``steps - i`` steps.
    """
    setup = SamplingSetup(model, positive, negative, latent, sampler_name, scheduler, steps, cfg)
    return setup.sample(seed, schedule, reuse, start_step, start_x).final


def tail_schedule(steps: int, i: int, j: int) -> Schedule:
    """The schedule of edge ``i -> j``'s tail run over ``steps - i`` steps.

    Computes tail step 0 (= step i) and tail steps ``j-i .. steps-1-i``; skips ``1 .. j-i-1``.
    """
    n = steps - i
    return Schedule(n, (0, *range(j - i, n)), source="custom")


# ----------------------------------------------------------------- trajectories on disk


def journal_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".journal.jsonl")


def trajectory_path(path: str | Path, index: int) -> Path:
    path = Path(path)
    return path.parent / "trajectories" / f"{path.stem}-{index}.safetensors"


def save_trajectory(path: Path, trajectory: Trajectory) -> None:
    """One seed's full-compute run (x_i, denoised_i, final, sigmas), atomically, as safetensors."""
    from safetensors.torch import save as st_save

    tensors = {"xs": torch.stack(trajectory.xs).cpu().contiguous(),
               "denoised": torch.stack(trajectory.denoised).cpu().contiguous(),
               "final": trajectory.final.detach().to("cpu", torch.float32).contiguous(),
               "sigmas": trajectory.sigmas.contiguous()}
    meta = {"format": "otcache.trajectory", "version": "1", "seed": str(trajectory.seed),
            "evaluations": str(trajectory.evaluations), "seconds": f"{trajectory.seconds:.6f}"}
    write_atomic(path, st_save(tensors, metadata=meta))


def load_trajectory(path: Path, seed: int, steps: int) -> Trajectory | None:
    """The trajectory saved at ``path`` for ``seed``, or None when absent or unreadable (it is then recomputed)."""
    if not path.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            t = {name: f.get_tensor(name) for name in ("xs", "denoised", "final", "sigmas")}
        if meta.get("format") != "otcache.trajectory" or int(meta["seed"]) != int(seed) or t["xs"].shape[0] != steps:
            return None
        return Trajectory(int(seed), t["sigmas"], list(t["xs"].unbind(0)), list(t["denoised"].unbind(0)), t["final"],
                          int(meta["evaluations"]), float(meta["seconds"]))
    except Exception as exc:  # damaged: recompute it (costs N evaluations), never fail the calibration
        log.warning("OTCache: ignoring unreadable trajectory %s (%s); recomputing it", path, exc)
        return None


# ----------------------------------------------------------------- the calibration loop


@dataclasses.dataclass
class CalibrationStats:
    """What one call of :func:`calibrate` did (a resumed run counts only its own work)."""

    runs: int = 0
    evaluations: int = 0
    seconds: float = 0.0
    edges: int = 0  # (seed, edge) costs measured
    recorded: int = 0  # full-compute trajectories recorded
    exact_replay: bool | None = None
    saves: int = 0
    reused_trajectories: int = 0  # full-compute trajectories read back from disk instead of recomputed
    shared_edges: int = 0  # edges this worker computed for a shared calibration


def _seed_value(seed: int, index: int) -> int:
    return (int(seed) + index) % (2 ** 64)


def _final_key(index: int) -> str:
    return f"final_{index}"


def _check_interrupt() -> None:
    comfy.model_management.throw_exception_if_processing_interrupted()


def _planned_evaluations(matrix: CostMatrix, exact: bool, split: bool = False) -> int:
    n = matrix.steps
    total = 0
    for s in range(matrix.seeds):
        pending = matrix.pending(s)
        if pending or _final_key(s) not in matrix.extras:
            total += n
        if split:  # arrival runs (and their uncached references), then the tails
            if matrix.edge_cost == "fast" and arrival_key(s) not in matrix.extras:
                total += sum(1 + (0 if exact else min(matrix.max_skip, n - 1 - i)) for i in range(n - 2))
            else:
                total += len({i for _, i, _ in pending})
            total += sum((n - j) * (1 if exact else 2) for _, _, j in pending)
        elif matrix.edge_cost == "global":
            total += sum(edge_evaluations(n, i, j) for _, i, j in pending)
            if not exact:
                total += sum(n - i for i in sorted({i for _, i, _ in pending}))
    return total


def replay_is_exact(setup: SamplingSetup, trajectory: Trajectory) -> tuple[bool, RunResult | None]:
    """Replay the last 3 steps without caching from the recorded latent; compare the final latents.

    Returns (exact, the check's run). Costs 3 evaluations per step of a one-eval sampler.
    """
    i = max(0, setup.steps - 3)
    if i == 0:
        return True, None
    run = setup.sample(trajectory.seed, None, start_step=i, start_x=trajectory.xs[i])
    return error(run.final, trajectory.final) <= REPLAY_TOLERANCE, run


def calibrate(setup: SamplingSetup, seed: int, matrix: CostMatrix, reuse: str = "auto", *,
              path: str | Path | None = None, progress: Callable[[int, int], None] | None = None,
              status: Callable[[str], None] | None = None, save_every: int = SAVE_EVERY_EDGES,
              save_seconds: float = SAVE_EVERY_SECONDS, tail_batch: int = 1,
              shared: SharedEdges | None = None) -> CalibrationStats:
    """Measure every pending edge of ``matrix`` (seeds ``seed, seed+1, ...``); resumable.

    ``matrix.edge_cost`` picks the method (module docstring of ``otcache_core.edge_costs``).
    With ``path`` every measured edge is journalled (fsynced) at once, each seed's
    trajectory is saved when recorded, and the matrix is saved atomically after each
    recorded seed, when ``save_every`` edges *and* ``save_seconds`` seconds have passed,
    at the end, and when an exception (an interrupt) stops the loop. ``progress(done, total)``
    counts evaluations; ComfyUI's interrupt flag is checked before every run.

    ``fast`` costs, and ``global`` with ``tail_batch > 1`` on a sampler that replays exactly,
    split each edge at its end step (:mod:`.split_tails`) and run up to ``tail_batch``
    tails in one batched model call.

    ``shared``: the calibration is shared with other workers (:mod:`..otcache_core.shared_edges`);
    this one computes only the units it claims, and returns when every unit is done by someone.
    """
    if matrix.steps != setup.steps:
        raise CalibrationError(f"the cost matrix has {matrix.steps} steps, the sampler {setup.steps}")
    tail_batch = as_integer(tail_batch, "tail_batch", low=1, error=CalibrationError)
    run = _Calibration(setup, seed, matrix, resolve_reuse(setup.model, reuse), path, progress, status,
                       save_every, save_seconds, tail_batch, shared)
    try:
        while True:
            run.merge_shared()
            if run.split:
                run.split_edges()
            else:
                for s in range(matrix.seeds):
                    run.seed(s)
            run.merge_shared()
            if shared is None or _finished(matrix):
                break
            _check_interrupt()
            time.sleep(SHARED_POLL_SECONDS)  # units other live workers hold: wait, or take them over when they die
    finally:
        run.finish()
    return run.stats


def _finished(matrix: CostMatrix) -> bool:
    return all(matrix.seed_complete(s) for s in range(matrix.seeds))


def edge_unit(s: int, i: int, j: int) -> str:
    """A shared calibration's unit name of seed index ``s``'s edge ``i -> j``."""
    return f"edge:{s}:{i}:{j}"


def arrival_unit(s: int) -> str:
    return f"arrival:{s}"


class _Calibration:
    """The state of one :func:`calibrate` call: counts, progress, the journal and when to save."""

    def __init__(self, setup, seed, matrix, mode, path, progress, status, save_every, save_seconds, tail_batch=1,
                 shared=None):
        self.setup, self.first_seed, self.matrix, self.mode = setup, seed, matrix, mode
        self.shared = shared
        self.path = Path(path) if path is not None else None
        self.progress, self.status = progress, status
        self.save_every, self.save_seconds = save_every, save_seconds
        self.stats = CalibrationStats()
        self.exact = setup.sampler_name in EXACT_REPLAY_SAMPLERS
        self.tail_batch = tail_batch if self.exact else 1  # batched tails need a sampler whose state is the latent
        self.split = matrix.edge_cost == "fast" or (matrix.edge_cost == "global" and self.tail_batch > 1)
        self.trajectories: dict[int, Trajectory] = {}
        self.arrived: dict[tuple[int, int, int], torch.Tensor] = {}  # (s, i, j) -> latent arriving at j
        self.references: dict[tuple[int, int], torch.Tensor] = {}  # (s, j) -> uncached tail from x_j
        self.total = max(_planned_evaluations(matrix, self.exact, self.split), 1)
        self.done = self.unsaved = 0
        self.started = self.last_save = time.perf_counter()
        self.base = {name: matrix.info.get(name, 0) for name in ("evaluations", "seconds", "runs")}
        self.journal = EdgeJournal(journal_path(self.path)) if self.path is not None else None
        if self.journal is not None:
            self.journal.start(matrix)
        if progress is not None:
            progress(0, self.total)

    def account(self, run) -> None:
        self.stats.runs += 1
        self.stats.evaluations += run.evaluations
        self.done += run.evaluations
        if self.progress is not None:
            self.progress(min(self.done, self.total), self.total)

    def claim(self, unit: str) -> bool:
        return self.shared is None or self.shared.claim(unit)

    def merge_shared(self) -> None:
        """Take every unit other workers finished into the matrix (and the journal)."""
        if self.shared is None:
            return
        for unit, payload in self.shared.results().items():
            kind, *index = unit.split(":")
            if kind == "edge" and not self.matrix.done[tuple(map(int, index))]:
                self.record(*map(int, index), payload["cost"], share=False)
            elif kind == "arrival" and arrival_key(int(index[0])) not in self.matrix.extras:
                values = [[math.nan if v is None else v for v in row] for row in payload["arrival"]]
                self.matrix.extras[arrival_key(int(index[0]))] = torch.tensor(values, dtype=torch.float64)

    def share_arrival(self, s: int) -> None:
        if self.shared is not None:
            values = self.matrix.extras[arrival_key(s)].tolist()
            self.shared.put(arrival_unit(s), {"arrival": [[None if math.isnan(v) else v for v in row]
                                                          for row in values]})

    def record(self, s: int, i: int, j: int, cost: float, share: bool = True) -> None:
        self.matrix.record(s, i, j, cost)
        if share and self.shared is not None:
            self.shared.put(edge_unit(s, i, j), {"cost": float(cost)})
            self.stats.shared_edges += 1
        if self.journal is not None:
            self.journal.append(s, i, j, cost)
        if share:
            self.stats.edges += 1
        self.unsaved += 1

    def save(self, force: bool = False) -> None:
        due = self.unsaved >= self.save_every and time.perf_counter() - self.last_save >= self.save_seconds
        if self.path is None or not (force or due):
            return
        self._update_info(time.perf_counter() - self.started)
        self.matrix.save(self.path)
        self.stats.saves += 1
        self.last_save, self.unsaved = time.perf_counter(), 0

    def _update_info(self, seconds: float) -> None:
        self.matrix.info["evaluations"] = int(self.base["evaluations"]) + self.stats.evaluations
        self.matrix.info["seconds"] = float(self.base["seconds"]) + seconds
        self.matrix.info["runs"] = int(self.base["runs"]) + self.stats.runs

    def trajectory(self, s: int, seed_s: int) -> Trajectory:
        """Seed ``s``'s full-compute run: read back when saved, else recorded (and saved)."""
        if s in self.trajectories:
            return self.trajectories[s]
        n = self.setup.steps
        trajectory = load_trajectory(trajectory_path(self.path, s), seed_s, n) if self.path is not None else None
        if trajectory is not None:
            self.stats.reused_trajectories += 1
            self.trajectories[s] = trajectory
            return trajectory
        trajectory = record_trajectory_setup(self.setup, seed_s)
        self.stats.recorded += 1
        if self.path is not None:
            save_trajectory(trajectory_path(self.path, s), trajectory)
        self.trajectories[s] = trajectory
        self.account(trajectory)  # stored first, then reported: a progress hook may raise to cancel
        return trajectory

    def check_replay(self, trajectory: Trajectory) -> None:
        """Once per call: does replaying from a recorded latent repeat the full run on this machine?"""
        _check_interrupt()
        self.stats.exact_replay, check_run = replay_is_exact(self.setup, trajectory)
        if check_run is not None:
            self.account(check_run)
        if not self.stats.exact_replay:
            log.warning("OTCache calibration: replaying %s from a recorded latent does not reproduce the full run on "
                        "this machine; comparing each edge with an uncached tail replay instead", self.setup.sampler_name)
            self.exact = False
            self.total = max(self.total, self.done + _planned_evaluations(self.matrix, self.exact))

    # --- the split flow (split_tails): arrival runs per seed, then tails batched by end step
    def seed_value(self, s: int) -> int:
        return _seed_value(self.first_seed, s)

    check_interrupt = staticmethod(_check_interrupt)

    def tail_reference(self, s: int, j: int) -> torch.Tensor:
        """What a tail from step ``j`` is compared with: the full run's final latent, or an uncached replay."""
        if self.exact:
            return self.trajectories[s].final
        if (s, j) not in self.references:
            replay = self.setup.sample(self.seed_value(s), None, start_step=j, start_x=self.trajectories[s].xs[j])
            self.account(replay)
            self.references[(s, j)] = replay.final
        return self.references[(s, j)]

    def report_edges(self) -> None:
        if self.status is not None:
            self.status(f"OTCache calibration: {self.matrix.edges_done}/{self.matrix.edges_total} edge runs, "
                        f"{self.stats.evaluations} evaluations, {time.perf_counter() - self.started:.1f} s")

    def split_edges(self) -> None:
        matrix = self.matrix
        pending = matrix.pending()
        for s in range(matrix.seeds):
            if not matrix.pending(s) and _final_key(s) in matrix.extras and (
                    matrix.edge_cost != "fast" or arrival_key(s) in matrix.extras):
                continue
            _check_interrupt()
            self.trajectories[s] = trajectory = self.trajectory(s, self.seed_value(s))
            matrix.extras[_final_key(s)] = trajectory.final.detach().to("cpu", torch.float32)
            if self.exact and self.stats.exact_replay is None:
                self.check_replay(trajectory)
            self.save(force=True)
            if matrix.edge_cost == "fast" and arrival_key(s) not in matrix.extras and self.claim(arrival_unit(s)):
                split_tails.arrival_pass(self, s, {(i, j) for s_, i, j in pending if s_ == s})
                self.share_arrival(s)
            elif matrix.edge_cost != "fast":
                split_tails.arrival_pass(self, s, {(i, j) for s_, i, j in pending if s_ == s})
        for group in split_tails.tails_by_end(pending):
            group = [m for m in group if self.claim(edge_unit(m.seed_index, m.i, m.j))]
            for s in {m.seed_index for m in group} - set(self.trajectories):
                self.trajectories[s] = self.trajectory(s, self.seed_value(s))
            if group:
                split_tails.run_tails(self, group, self.tail_batch)

    def seed(self, s: int) -> None:
        matrix, setup = self.matrix, self.setup
        pending = matrix.pending(s)
        if not pending and _final_key(s) in matrix.extras:
            return
        _check_interrupt()
        seed_s = _seed_value(self.first_seed, s)
        trajectory = self.trajectory(s, seed_s)
        matrix.extras[_final_key(s)] = trajectory.final.detach().to("cpu", torch.float32)
        if matrix.edge_cost == "local":
            costs = local_edge_costs(trajectory.directions(), trajectory.sigmas, matrix.max_skip)
            for _, i, j in pending:
                self.record(s, i, j, costs[i, j])
            self.save(force=True)
            return
        if pending and self.exact and self.stats.exact_replay is None:
            self.check_replay(trajectory)
        self.save(force=True)
        reference_i, reference = None, trajectory.final
        for _, i, j in pending:
            if not self.claim(edge_unit(s, i, j)):
                continue
            if not self.exact and reference_i != i:
                _check_interrupt()
                replay = setup.sample(seed_s, None, start_step=i, start_x=trajectory.xs[i])
                reference, reference_i = replay.final, i
                self.account(replay)
            _check_interrupt()
            tail = setup.sample(seed_s, tail_schedule(setup.steps, i, j), self.mode, start_step=i,
                                start_x=trajectory.xs[i])
            self.record(s, i, j, error(tail.final, reference))
            self.account(tail)
            if self.status is not None:
                self.status(f"OTCache calibration: {matrix.edges_done}/{matrix.edges_total} edge runs, "
                            f"{self.stats.evaluations} evaluations, {time.perf_counter() - self.started:.1f} s")
            self.save()

    def finish(self) -> None:
        self.stats.seconds = time.perf_counter() - self.started
        self._update_info(self.stats.seconds)
        if self.path is not None:
            self.save(force=True)


def measure_schedule(setup: SamplingSetup, seed: int, schedule: Schedule, references: Sequence[torch.Tensor],
                     reuse: str = "auto") -> tuple[list[float], int]:
    """Final-latent error of ``schedule`` against full compute, per calibration seed; and evaluations spent."""
    errors, evaluations = [], 0
    for s, reference in enumerate(references):
        _check_interrupt()
        run = setup.sample(_seed_value(seed, s), schedule, reuse)
        evaluations += run.evaluations
        errors.append(error(run.final, reference))
    return errors, evaluations


# ----------------------------------------------------------------- cache key and location


def calibration_key(setup: SamplingSetup, seed: int, seeds: int, edge_cost: str, max_skip: int, reuse: str) -> str:
    """File key of a calibration: the setup, seeds ``seed .. seed+seeds-1``, reuse, edge cost, window.

    The budget and the objective are not in it: one matrix serves them all.
    """
    fields = {
        "format": "otcache.calibration.key", "version": 1, "edge_cost": edge_cost, "max_skip": int(max_skip),
        "setup": setup_fingerprint(setup, [_seed_value(seed, s) for s in range(int(seeds))], reuse),
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:32]


def calibration_dir() -> Path:
    """``<ComfyUI user directory>/otcache/calibration``."""
    return Path(folder_paths.get_user_directory()) / "otcache" / "calibration"


def calibration_path(key: str) -> Path:
    return calibration_dir() / f"{key}.safetensors"


def load_or_new(path: Path, steps: int, max_skip: int, seeds: int, edge_cost: str,
                info: dict | None = None) -> tuple[CostMatrix, str]:
    """The saved matrix at ``path`` with every journalled edge, or a new one; and a note for the node.

    A damaged matrix file is kept beside (``.damaged``), never overwritten, and the
    journal rebuilds what was measured; the note says what was recovered ("" when
    there was nothing to say).
    """
    matrix, note = None, ""
    if path.is_file():
        try:
            matrix = CostMatrix.load(path)
        except EdgeCostError as exc:
            kept = path.with_suffix(f".damaged-{time.strftime('%Y%m%d-%H%M%S')}.safetensors")
            path.replace(kept)
            note = f"the calibration file was damaged ({str(exc)[:160]}); kept as {kept.name}"
        else:
            if not matrix.matches(steps, max_skip, seeds, edge_cost):
                log.warning("OTCache: calibration file %s was made for other settings; starting over", path)
                matrix = None
    if matrix is None:
        matrix = CostMatrix.new(steps, max_skip, seeds, edge_cost, info)
    replay = EdgeJournal(journal_path(path)).replay(matrix)
    if note or replay.applied or replay.skipped:
        note = "; ".join(filter(None, [note, f"recovered {replay.applied} edge(s) from the journal"
                                        + (f", skipped {replay.skipped} unreadable line(s)" if replay.skipped else "")]))
        log.warning("OTCache: %s (%s)", note, path)
    return matrix, note


def check_uncached(model) -> None:
    """A model that already has an OTCache schedule would calibrate against a cached 'full' run."""
    if WRAPPER_KEY in model.model_options.get("transformer_options", {}):
        raise CalibrationError(
            "this model already has an OTCache schedule applied (OTCache Cached Model). Connect the model "
            "from before the Cached Model node: calibration needs full compute.")
