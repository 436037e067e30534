"""The budget path: knots no worse than the OT and graph schedules, piecewise OT between them, the slider uses it."""
from __future__ import annotations

import folder_paths
import numpy as np
import pytest
from sampling import conditioning_pair

from comfyui_otcache.demo.tiny_models import LatentRGBDecoder, build_tiny_model, tiny_latent
from comfyui_otcache.nodes.schedule_nodes import OTCacheBudgetSlider
from comfyui_otcache.otcache_comfy.anchor_run import Objective, run_anchor_search
from comfyui_otcache.otcache_comfy.calibration import SamplingSetup
from comfyui_otcache.otcache_comfy.reference_build import ReferenceOptions, build_reference, reference_setup
from comfyui_otcache.otcache_core.budget_path import (
    build_path,
    graph_solutions_from_params,
    neighbours,
    path_for,
    path_from_params,
    path_schedule,
)
from comfyui_otcache.otcache_core.graph import all_graph_solutions, best_path
from comfyui_otcache.otcache_core.interpolate import interpolate
from comfyui_otcache.otcache_core.perceptual import load_metric
from comfyui_otcache.otcache_core.schedule import Schedule

N = 20


def synthetic_costs(n: int = N) -> np.ndarray:
    """Edge i -> j costs (j - i - 1)^2 weighted towards the start: the graph front-loads."""
    costs = np.full((n, n), np.inf)
    for i in range(n - 1):
        for j in range(i + 1, min(n, i + 8)):
            costs[i, j] = (j - i - 1) ** 2 * (2.0 - i / n)
    return costs


def synthetic_objective(schedule: Schedule) -> float:
    """A smooth end-to-end stand-in: gaps hurt more early, and long gaps grow faster than additive."""
    gaps = np.diff(schedule.compute) - 1
    starts = np.asarray(schedule.compute[:-1]) / schedule.steps
    return float(np.sum(gaps ** 2.5 * (1.5 - starts)))


def test_neighbours_move_one_inner_step_by_one():
    schedule = Schedule.parse("10:0,2,3,6,9")
    moved = {str(s) for s in neighbours(schedule)}
    assert moved == {"10:0,1,3,6,9", "10:0,2,4,6,9", "10:0,2,3,5,9", "10:0,2,3,7,9"}
    assert all(s.budget == schedule.budget for s in neighbours(schedule))


def test_every_knot_beats_the_ot_graph_and_uniform_schedules_on_the_objective():
    costs = synthetic_costs()
    graph = all_graph_solutions(costs, "sum")
    reference = graph[10]
    anchor = Schedule.uniform(N, 4)
    calls = []

    def objective(schedule):
        calls.append(str(schedule))
        return synthetic_objective(schedule)

    path = build_path(objective, reference, anchor, graph, neighbour_evals=6, metric="synthetic")
    assert [k.budget for k in path.knots] == list(range(4, 11))
    assert len(calls) == len(set(calls)) == path.scored  # each schedule scored once
    for knot in path.knots:
        assert knot.objective == pytest.approx(synthetic_objective(knot.schedule))
        assert knot.objective <= synthetic_objective(graph[knot.budget]) + 1e-12
        assert knot.objective <= synthetic_objective(Schedule.uniform(N, knot.budget)) + 1e-12
        if 4 < knot.budget < 10:
            assert knot.objective <= synthetic_objective(interpolate(reference, anchor, knot.budget)) + 1e-12

    # Exact at knots, the right budget between and above them.
    for knot in path.knots:
        assert path_schedule(path, knot.budget) == knot.schedule


def test_by_default_each_knot_is_one_of_its_candidates_no_moves():
    """Default: no hill climbing, so a knot is I_K, G_K or U_K (reference/anchor at their ends), the best of them."""
    graph = all_graph_solutions(synthetic_costs(), "sum")
    reference, anchor = graph[10], Schedule.uniform(N, 4)
    calls = []

    def objective(schedule):
        calls.append(str(schedule))
        return synthetic_objective(schedule)

    path = build_path(objective, reference, anchor, graph)
    for knot in path.knots:
        own = {4: anchor, 10: reference}.get(knot.budget) or interpolate(reference, anchor, knot.budget)
        candidates = [own, graph[knot.budget], Schedule.uniform(N, knot.budget)]
        assert "+neighbours" not in knot.origin
        assert knot.schedule in candidates
        assert knot.objective == min(synthetic_objective(c) for c in candidates)
    assert len(set(calls)) == len(calls) <= 3 * len(path.knots)
    # The reference is its own graph solution here; its knot is labelled by what it is.
    assert graph[10] == reference and path.knot_at(10).origin == "reference"


def test_a_knot_takes_the_uniform_schedule_when_it_scores_best():
    """An objective whose unique optimum at each budget is uniform: every knot, the anchor's included, is uniform."""
    graph = all_graph_solutions(synthetic_costs(), "sum")
    reference, anchor = graph[10], Schedule.parse(f"{N}:0,1,2,{N - 1}")

    def distance_to_uniform(schedule):
        return float(np.abs(np.subtract(schedule.compute, Schedule.uniform(N, schedule.budget).compute)).sum())

    path = build_path(distance_to_uniform, reference, anchor, graph, neighbour_evals=0)
    assert [k.budget for k in path.knots] == list(range(4, 11))
    assert all(k.origin == "uniform" and k.schedule == Schedule.uniform(N, k.budget) and k.objective == 0
               for k in path.knots)


def test_hill_climbing_walks_to_a_better_neighbour_within_its_allowance():
    target = Schedule.parse("12:0,3,6,11")
    start = Schedule.parse("12:0,1,4,11")

    def distance(schedule):
        return float(sum(abs(a - b) for a, b in zip(schedule.compute, target.compute)))

    from comfyui_otcache.otcache_core.budget_path import _Scores, best_at_budget

    knot = best_at_budget(_Scores(distance), [("interpolated", start)], neighbour_evals=50)
    assert knot.schedule == target and knot.origin == "interpolated+neighbours" and knot.objective == 0
    capped = best_at_budget(_Scores(distance), [("interpolated", start)], neighbour_evals=1)
    assert capped.objective < distance(start) and capped.schedule != target  # one move allowed, one made


def test_the_graph_solution_stays_unless_beaten_beyond_the_noise():
    """Per-sample scores: an OT schedule ahead of G_K by less than one paired standard error does not replace it."""
    graph = all_graph_solutions(synthetic_costs(), "sum")
    reference, anchor, budget = graph[10], Schedule.uniform(N, 4), 7
    ot = interpolate(reference, anchor, budget).with_metadata(params={})
    assert str(ot) != str(graph[budget])
    base = [1.0, 2.0, 3.0, 4.0]

    def objective_with(ot_samples):
        def objective(schedule):
            if str(schedule) in {str(g) for g in graph.values()}:
                return base
            return ot_samples if str(schedule) == str(ot) else [9.0] * 4
        return objective

    noisy = [b + d for b, d in zip(base, [-0.5, 0.6, -0.6, 0.42])]  # mean 0.02 lower, spread 0.3
    knot = build_path(objective_with(noisy), reference, anchor, graph).knot_at(budget)
    assert knot.origin == "graph" and knot.schedule == graph[budget] and knot.objective == pytest.approx(2.5)
    clear = [b - 0.3 for b in base]
    knot = build_path(objective_with(clear), reference, anchor, graph).knot_at(budget)
    assert knot.origin == "interpolated" and str(knot.schedule) == str(ot) and knot.objective == pytest.approx(2.2)
    # A mean alone (no per-sample values) cannot tell noise: the lower mean wins, as before.
    means = build_path(lambda s: float(np.mean(objective_with(noisy)(s))), reference, anchor, graph)
    assert means.knot_at(budget).origin == "interpolated"


@pytest.mark.parametrize("end", ["reference", "anchor"])
def test_the_reference_and_anchor_stay_at_their_budgets_unless_beaten_beyond_the_noise(end):
    """At the path's ends a uniform schedule ahead by less than one paired standard error does not replace them."""
    graph = all_graph_solutions(synthetic_costs(), "sum")
    reference, anchor = graph[10], Schedule.parse(f"{N}:0,1,3,{N - 1}")
    budget = {"reference": 10, "anchor": 4}[end]
    uniform = Schedule.uniform(N, budget)
    base = [1.0, 2.0, 3.0, 4.0]

    def objective_with(uniform_samples):
        def objective(schedule):
            if str(schedule) == str(uniform):
                return uniform_samples
            return base if str(schedule) in (str(reference), str(anchor)) else [9.0] * 4
        return objective

    noisy = [b + d for b, d in zip(base, [-0.5, 0.6, -0.6, 0.42])]  # mean 0.02 lower, spread 0.3
    knot = build_path(objective_with(noisy), reference, anchor, graph).knot_at(budget)
    assert knot.origin == end and knot.schedule == {"reference": reference, "anchor": anchor}[end]
    knot = build_path(objective_with([b - 0.3 for b in base]), reference, anchor, graph).knot_at(budget)
    assert knot.origin == "uniform" and knot.schedule == uniform


def test_clearly_better_and_bad_scores():
    from comfyui_otcache.otcache_core.budget_path import _Scores, clearly_better
    from comfyui_otcache.otcache_core.schedule import ScheduleError

    a, b = Schedule.parse("10:0,3,9"), Schedule.parse("10:0,5,9")
    scores = _Scores(lambda s: [1.0, 1.0] if s == a else [2.0, 2.0])
    assert clearly_better(scores, a, b) and not clearly_better(scores, b, a) and not clearly_better(scores, a, a)
    one = _Scores(lambda s: [1.0] if s == a else [1.1])  # one sample: no spread to judge, the mean decides
    assert clearly_better(one, a, b)
    arrays = _Scores(lambda s: np.array([1.0, 3.0]) if s == a else np.array([2.0, 2.0]))  # numpy, as lists
    assert arrays(a) == 2.0 and arrays.samples[str(a)] == (1.0, 3.0) and not clearly_better(arrays, a, b)
    for bad in ([], [1.0, float("nan")], float("inf")):
        with pytest.raises(ScheduleError, match="must be finite"):
            _Scores(lambda s, bad=bad: bad)(a)


def test_path_scores_keep_per_sample_values_and_read_older_means(tmp_path):
    from comfyui_otcache.otcache_comfy.anchor_run import PathScores

    path = tmp_path / "study.path.json"
    path.write_text('{"10:0,5,9": 0.25}')  # a file from before per-sample scores
    scores = PathScores(path)
    scores.add("10:0,3,9", [0.1, 0.3])
    assert PathScores(path).values == {"10:0,5,9": 0.25, "10:0,3,9": [0.1, 0.3]}


def test_known_scores_cost_nothing():
    graph = all_graph_solutions(synthetic_costs(), "sum")
    reference, anchor = graph[10], Schedule.uniform(N, 4)
    first = build_path(synthetic_objective, reference, anchor, graph)
    known = {str(k.schedule): k.objective for k in first.knots}
    known.update({str(s): synthetic_objective(s) for s in graph.values()})

    def refuse(schedule):
        if str(schedule) not in known:
            return synthetic_objective(schedule)
        raise AssertionError(f"{schedule} was scored again")

    build_path(refuse, reference, anchor, graph, known=known)


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(folder_paths, "get_user_directory", lambda: str(tmp_path))
    return tmp_path


@pytest.mark.slow
def test_on_a_tiny_model_every_knot_scores_no_worse_than_graph_and_ot(user_dir):
    """Reference (with its graph solutions) -> Anchor Search (with the path) -> Budget Slider, on a tiny FLUX."""
    steps = 10
    model = build_tiny_model("flux", seed=0, scale=0.5)
    positive, negative = conditioning_pair("flux", separate=False)
    common = dict(positive=positive, negative=negative, latent_image=tiny_latent("flux"), seed=0, seeds=1,
                  sampler_name="euler", scheduler="simple", steps=steps, cfg=1.0)
    setup = reference_setup(model, positive, negative, tiny_latent("flux"), "euler", "simple", steps, 1.0)
    ref = build_reference(setup, ReferenceOptions(seed=0, seeds=1, budget=6, max_skip=5, measure=False))
    graph = graph_solutions_from_params(ref.schedule.params)
    assert graph[6] == ref.schedule and set(graph) >= set(range(3, 11))
    for k, g in graph.items():
        assert g.compute == best_path(ref.costs, k, "minimax")

    vae = LatentRGBDecoder(16)
    anchor, _, _, text = run_anchor_search(model, vae, reference=ref.schedule, budget=3, trials=4, metric="ssim",
                                           neighbour_evals=3, **common)
    path = path_from_params(anchor.params, ref.schedule)
    assert path is not None and [k.budget for k in path.knots] == [3, 4, 5, 6] and "budget path" in text

    # Score the graph and OT schedules with the same objective, independently of the search.
    sampling = SamplingSetup(model, positive, negative, tiny_latent("flux"), "euler", "simple", steps, 1.0)
    objective = Objective(sampling, vae, [0], "auto", load_metric("ssim"), {})
    objective.references = {0: objective.images(0, None)}
    for knot in path.knots:
        assert knot.objective == pytest.approx(objective(knot.schedule), abs=1e-6)
        assert knot.objective <= objective(graph[knot.budget]) + 1e-6
        if 3 < knot.budget < 6:
            assert knot.objective <= objective(interpolate(ref.schedule, anchor, knot.budget)) + 1e-6
    assert anchor == path.knots[0].schedule and anchor.metrics["objective"] == pytest.approx(path.knots[0].objective)

    # The slider lands on the knots and shows the curve.
    assert path_for(ref.schedule, anchor) is not None
    for knot in path.knots:
        out = OTCacheBudgetSlider.execute(reference=ref.schedule, anchor=anchor, speedup=steps / knot.budget)
        assert out.args[0] == knot.schedule and "measured knot" in out.args[0].params["path"]
        assert [p["budget"] for p in out.ui["otcache_curve"][0]["points"]] == [3, 4, 5, 6]
    plain = OTCacheBudgetSlider.execute(reference=ref.schedule, anchor=anchor.with_metadata(params={}), speedup=2.5)
    assert plain.ui["otcache_curve"] == [] and "lambda" in plain.args[0].params
