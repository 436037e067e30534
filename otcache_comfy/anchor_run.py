"""Stage 2 on a real model: the anchor search and the measured budget path (OTCache Anchor Search).

Each candidate schedule is sampled on the calibration seeds, decoded with the VAE and
compared with the full-compute image of the same seed and conditioning by LPIPS (or a
stated fallback when the LPIPS weights cannot be loaded). The Optuna study lives in an
SQLite file in ComfyUI's user directory by default, named from everything the result
depends on, so running the node again resumes it; any Optuna storage URL (PostgreSQL)
lets several ComfyUI machines work on one study.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import comfy.model_management
import comfy.samplers
import comfy.utils
import folder_paths
import torch
from safetensors.torch import load_file, save

from ..otcache_core.anchor import ATTR_SCHEDULE, search, study_name_for
from ..otcache_core.atomic import write_atomic
from ..otcache_core.budget_path import BudgetPath, build_path, graph_solutions_from_params, path_to_params
from ..otcache_core.perceptual import ImageMetric, load_metric, subsample_frames
from ..otcache_core.schedule import Schedule
from ..otcache_core.warp import resample, schedule_from_warp, warp
from .cache_runtime import resolve_reuse
from .calibration import SamplingSetup
from .fingerprints import conditioning_fingerprint, model_fingerprint, setup_fingerprint
from .plots import labelled_row, text_card, trials_plot
from .saved_results import computed_for, find_saved, saved_record, used_saved_text
from .ui_text import send_node_text

log = logging.getLogger("otcache")

MAX_FRAMES = 8  # frames per decoded video compared (evenly spaced)


def default_budget(steps: int) -> int:
    """About N/7 (the paper's extreme budget), at least 2."""
    return max(2, round(steps / 7))


def studies_dir() -> Path:
    return Path(folder_paths.get_user_directory()) / "otcache" / "anchor"


def default_storage() -> str:
    path = studies_dir() / "studies.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def decode_frames(vae, samples: torch.Tensor, max_frames: int = MAX_FRAMES) -> list[torch.Tensor]:
    """Per batch item, the decoded image(s) ``[F, H, W, 3]``; videos subsampled to ``max_frames``."""
    images = vae.decode(samples)
    if images.ndim == 5:  # video: [B, F, H, W, 3]
        return [subsample_frames(item, max_frames) for item in images]
    return [item[None] for item in images]


@dataclasses.dataclass
class Objective:
    """Mean image distance to full compute over the calibration seeds (lower is better)."""

    setup: SamplingSetup
    vae: Any
    seeds: list[int]
    reuse: str
    metric: ImageMetric
    references: dict[int, list[torch.Tensor]]  # seed -> decoded full-compute frames per batch item
    sampling_runs: int = 0
    evaluations: int = 0

    def images(self, seed: int, schedule: Schedule | None) -> list[torch.Tensor]:
        run = self.setup.sample(seed, schedule, self.reuse)
        self.sampling_runs += 1
        self.evaluations += run.evaluations
        return decode_frames(self.vae, run.final)

    def samples(self, schedule: Schedule) -> list[float]:
        """The distance per seed and batch item (the budget path tests knots against their noise)."""
        distances = []
        for seed in self.seeds:
            comfy.model_management.throw_exception_if_processing_interrupted()
            for got, want in zip(self.images(seed, schedule), self.references[seed]):
                distances.append(float(self.metric(got, want).mean()))
        return distances

    def __call__(self, schedule: Schedule) -> float:
        distances = self.samples(schedule)
        return sum(distances) / len(distances)


def full_compute_references(setup: SamplingSetup, vae, seeds: list[int], cache_path: Path,
                            objective_factory) -> dict[int, list[torch.Tensor]]:
    """Decoded full-compute images per seed, computed once per study and kept next to it."""
    references: dict[int, list[torch.Tensor]] = {}
    if cache_path.is_file():
        saved = load_file(str(cache_path))
        for seed in seeds:
            keys = sorted((k for k in saved if k.startswith(f"{seed}/")), key=lambda k: int(k.split("/")[1]))
            if keys:
                references[seed] = [saved[k] for k in keys]
    missing = [s for s in seeds if s not in references]
    if missing:
        for seed in missing:
            references[seed] = objective_factory.images(seed, None)
        write_atomic(cache_path, save({f"{s}/{i}": t.contiguous() for s, frames in references.items()
                                       for i, t in enumerate(frames)}))
    return references


class PathScores:
    """Objective values measured while building the budget path, kept next to the study (resumable)."""

    def __init__(self, path: Path):
        self.path = path
        self.values: dict[str, float | list[float]] = {}  # a mean (older files) or per-sample values
        if path.is_file():
            try:
                self.values = {str(k): [float(x) for x in v] if isinstance(v, list) else float(v)
                               for k, v in json.loads(path.read_text()).items()}
            except (ValueError, AttributeError, TypeError):
                log.warning("OTCache: ignoring unreadable budget-path scores %s", path)

    def add(self, key: str, value: float | list[float]) -> None:
        self.values[key] = value
        write_atomic(self.path, json.dumps(self.values, sort_keys=True))


def measure_budget_path(objective: "Objective", reference: Schedule, anchor: Schedule, graph: dict, study,
                        scores_path: Path, neighbour_evals: int, metric: str, node_id: str | None) -> BudgetPath:
    """Knots at every budget from the anchor's to the reference's, scored by the anchor search's objective."""
    cache = PathScores(scores_path)
    known = {t.user_attrs[ATTR_SCHEDULE]: float(t.value) for t in study.trials
             if t.value is not None and ATTR_SCHEDULE in t.user_attrs}
    known.update(cache.values)
    total = reference.budget - anchor.budget + 1
    bar = comfy.utils.ProgressBar(total, node_id=node_id)

    def scored(schedule: Schedule) -> list[float]:
        value = objective.samples(schedule)
        cache.add(str(schedule), value)
        return value

    def on_knot(knot, done, count):
        bar.update_absolute(done, count)
        send_node_text(node_id, f"budget path: knot {done}/{count}, K={knot.budget}: {knot.objective:.4g} "
                                f"({knot.origin})")

    return build_path(scored, reference, anchor, graph, neighbour_evals=neighbour_evals, known=known, metric=metric,
                      on_knot=on_knot)


NODE_TYPE = "OTCacheAnchorSearch"


def anchor_or_saved(saved_choice: str, extra_pnginfo, node_id, model, vae, positive, negative, latent_image: dict,
                    seed: int, seeds: int, sampler_name: str, scheduler: str, steps: int, cfg: float,
                    reference: Schedule, budget: int = 0, trials: int = 30, metric: str = "lpips", reuse: str = "auto",
                    budget_path: str = "measure", neighbour_evals: int = 0, **search_options):
    """(anchor, comparison, trials plot, text, saved record): the workflow's saved result when it was computed
    for these inputs (no sampling, :mod:`.saved_results`), else :func:`run_anchor_search`."""
    if not isinstance(reference, Schedule):
        raise ValueError("reference must be an OTCache schedule (from a preset, the Reference node or text)")
    resolved = budget or default_budget(steps)
    for_ = computed_for(model_fingerprint(model), sampler_name, scheduler, steps, cfg, resolved,
                        reference=str(resample(reference, steps) if reference.steps != steps else reference),
                        trials=int(trials), metric=metric, seed=int(seed), seeds=int(seeds),
                        reuse=resolve_reuse(model, reuse), budget_path=budget_path, neighbour_evals=int(neighbour_evals))
    prompt = conditioning_fingerprint(positive, negative)
    found = find_saved(saved_choice, extra_pnginfo, node_id, NODE_TYPE, for_)
    if found is not None:
        anchor, record = found
        text = f"anchor {anchor} (K={anchor.budget}/N={anchor.steps}, {anchor.speedup:.2f}x)\n" + used_saved_text(
            record, record.get("prompt") == prompt)
        values = [float(v) for v in record.get("trial_values", [])]
        plot = trials_plot(values, f"anchor search (saved): {len(values)} trials, K={anchor.budget} of N={steps}",
                           str(anchor.metrics.get("metric", metric)))
        return anchor, text_card(f"saved result: {anchor}\nno sampling ran, so no pictures"), plot, text, record
    run = search_anchor(model, vae, positive, negative, latent_image, seed, seeds, sampler_name, scheduler, steps, cfg,
                        reference, budget=budget, trials=trials, reuse=reuse, metric=metric, node_id=node_id,
                        budget_path=budget_path, neighbour_evals=neighbour_evals, **search_options)
    record = saved_record(NODE_TYPE, run.anchor, for_, prompt, trial_values=run.trial_values)
    return run.anchor, run.comparison, run.plot, run.text, record


@dataclasses.dataclass
class AnchorRun:
    anchor: Schedule
    comparison: torch.Tensor  # IMAGE: full compute, the reference's warp, the anchor (first seed)
    plot: torch.Tensor  # IMAGE: objective per trial
    text: str
    trial_values: list  # every completed trial's objective, in order


def run_anchor_search(*args, **kwargs) -> tuple[Schedule, torch.Tensor, torch.Tensor, str]:
    """The node's work, callable from Python: (anchor, comparison IMAGE, trials IMAGE, summary text)."""
    run = search_anchor(*args, **kwargs)
    return run.anchor, run.comparison, run.plot, run.text


def search_anchor(model, vae, positive, negative, latent_image: dict, seed: int, seeds: int, sampler_name: str,
                  scheduler: str, steps: int, cfg: float, reference: Schedule, budget: int = 0, trials: int = 30,
                  storage: str = "", reuse: str = "auto", metric: str = "lpips", knots: int = 5,
                  node_id: str | None = None, lpips_factory=None, budget_path: str = "measure",
                  neighbour_evals: int = 0) -> AnchorRun:
    """Search the anchor (Optuna), measure the budget path, draw the pictures."""
    if not isinstance(reference, Schedule):
        raise ValueError("reference must be an OTCache schedule (from a preset, the Reference node or text)")
    if seeds < 1:
        raise ValueError(f"seeds must be at least 1, got {seeds}")
    budget = budget or default_budget(steps)
    mode = resolve_reuse(model, reuse)
    setup = SamplingSetup(model, positive, negative, latent_image, sampler_name, scheduler, steps, cfg)
    reference_n = reference if reference.steps == steps else resample(reference, steps)
    if budget >= reference_n.budget:
        raise ValueError(
            f"the anchor budget ({budget}) must be below the reference's ({reference_n.budget} of {steps} steps): "
            "the anchor is the cheap end of the slider. Lower the budget, or use a reference with more computed steps.")
    seed_list = [seed + k for k in range(seeds)]
    image_metric = load_metric(metric, lpips_factory=lpips_factory)
    name = study_name_for(setup=setup_fingerprint(setup, seed_list, reuse=mode), budget=budget, knots=knots,
                          metric=image_metric.name, reference=str(reference_n))
    url = storage.strip() or default_storage()
    objective = Objective(setup, vae, seed_list, mode, image_metric, {})
    objective.references = full_compute_references(setup, vae, seed_list, studies_dir() / f"{name}.full.safetensors",
                                                   objective)

    bar = comfy.utils.ProgressBar(trials, node_id=node_id)
    values: list[float] = []

    def on_trial(number, schedule, value, best_schedule, best_value):
        values.append(value)
        bar.update_absolute(min(len(values), trials), trials)
        send_node_text(node_id, f"trial {len(values)}/{trials}: {value:.4g} ({schedule})\n"
                                f"best so far {best_value:.4g}: {best_schedule}")

    # The graph search's solutions travel in an OTCache Reference's params (at its own N).
    graph = graph_solutions_from_params(reference.params) if reference.steps == steps else {}
    extra = [("graph", graph[budget])] if budget in graph else []
    anchor, study = search(objective, steps, budget, reference=reference_n, trials=trials, seed=seed, storage=url,
                           study_name=name, knots=knots, on_trial=on_trial,
                           should_stop=comfy.model_management.processing_interrupted, extra_seeds=extra)
    comfy.model_management.throw_exception_if_processing_interrupted()
    path = None
    if budget_path == "measure":
        anchor, path = _with_budget_path(anchor, objective, reference_n, graph, study, name, neighbour_evals,
                                         image_metric.name, node_id)
    anchor = anchor.with_metadata(
        model=reference.model, sampler=sampler_name, scheduler=scheduler,
        metrics={**anchor.metrics, "metric": image_metric.name, "metric_note": image_metric.note,
                 "sampling_runs": objective.sampling_runs, "evaluations": objective.evaluations},
        params={**anchor.params, "storage": "default sqlite" if not storage.strip() else "custom",
                "reuse": mode, "seeds": seed_list})

    row, plot, text = _report(anchor, objective, reference_n, study, path, image_metric, seed_list, name)
    return AnchorRun(anchor, row, plot, text, [float(t.value) for t in study.trials if t.value is not None])


def _with_budget_path(anchor: Schedule, objective: Objective, reference: Schedule, graph: dict, study, name: str,
                      neighbour_evals: int, metric: str, node_id: str | None) -> tuple[Schedule, BudgetPath]:
    """Measure the budget path below ``reference``; the anchor carries it (and improves when its knot did)."""
    evaluations_before = objective.evaluations
    path = measure_budget_path(objective, reference, anchor.with_metadata(params={}, metrics={}), graph, study,
                               studies_dir() / f"{name}.path.json", neighbour_evals, metric, node_id)
    lowest = path.knots[0]
    if lowest.objective < anchor.metrics["objective"]:  # hill climbing improved the anchor itself
        anchor = lowest.schedule.with_metadata(source="anchor", params=anchor.params, metrics={
            **anchor.metrics, "objective": lowest.objective, "refined_by": lowest.origin})
    anchor = anchor.with_metadata(params={**anchor.params, "path": path_to_params(path)}, metrics={
        **anchor.metrics, "path_evaluations": objective.evaluations - evaluations_before, "path_scored": path.scored})
    return anchor, path


def _report(anchor: Schedule, objective: Objective, reference: Schedule, study, path: BudgetPath | None,
            image_metric: ImageMetric, seed_list: list[int], name: str) -> tuple:
    """The node's pictures (full / reference warp / anchor on the first seed; the trials) and its text."""
    budget, steps = anchor.budget, anchor.steps
    reference_at_budget = schedule_from_warp(warp(reference), budget, steps)
    first = seed_list[0]
    row = labelled_row(
        [objective.references[first][0][0], objective.images(first, reference_at_budget)[0][0],
         objective.images(first, anchor)[0][0]],
        [f"full compute\n{steps}/{steps} steps", f"reference warp\n{budget}/{steps} steps",
         f"anchor\n{budget}/{steps} steps"])
    all_values = [t.value for t in study.trials if t.value is not None]
    plot = trials_plot(all_values, f"anchor search: {len(all_values)} trials, K={budget} of N={steps}",
                       image_metric.name)
    lines = [f"anchor {anchor} (K={budget}/N={steps}, {anchor.speedup:.2f}x)",
             f"{image_metric.name} {anchor.metrics['objective']:.4g} vs full compute, mean of {len(seed_list)} seed(s)",
             f"trials {anchor.metrics['trials']} (objective called {anchor.metrics['objective_calls']}x this run), "
             f"{objective.sampling_runs} sampling runs, study {name}"]
    if path is not None:
        lines.append(f"budget path: {len(path.knots)} knots K={path.knots[0].budget}..{path.knots[-1].budget}, "
                     f"{path.scored} new schedules scored ({anchor.metrics['path_evaluations']} evaluations)")
        lines += [f"  {k.budget:>3} ({path.steps / k.budget:.2f}x) {k.objective:.4g} {k.origin}" for k in path.knots]
    if image_metric.note:
        lines.append(f"NOTE: {image_metric.note}")
    return row, plot, "\n".join(lines)
