"""OTCache Reference on a tiny real FLUX: exact replay, global/local costs, resume, cache, node, errors."""
from __future__ import annotations

import random

import comfy.model_management
import folder_paths
import numpy as np
import pytest
import torch
from sampling import conditioning_pair, count_block_stack_calls

from comfyui_otcache.demo.tiny_models import build_tiny_model, tiny_latent
from comfyui_otcache.nodes.reference import OTCacheReference
from comfyui_otcache.otcache_comfy import calibration as cal
from comfyui_otcache.otcache_comfy import fingerprints
from comfyui_otcache.otcache_comfy.cache_runtime import apply_otcache
from comfyui_otcache.otcache_comfy.plots import cost_heatmap, heatmap_shape
from comfyui_otcache.otcache_comfy.reference_build import ReferenceOptions, build_reference, reference_setup
from comfyui_otcache.otcache_core.edge_costs import CostMatrix, edge_evaluations, error, window_edges
from comfyui_otcache.otcache_core.graph import GraphSearchError
from comfyui_otcache.otcache_core.schedule import Schedule

N, W, K, SEEDS = 10, 4, 5, 2


@pytest.fixture(scope="module")
def model():
    return build_tiny_model("flux", seed=0, scale=0.5)


@pytest.fixture(scope="module")
def conds():
    return conditioning_pair("flux", separate=False)


@pytest.fixture(scope="module", autouse=True)
def user_dir(tmp_path_factory):
    """ComfyUI's user directory, in a temporary folder for this module."""
    path = tmp_path_factory.mktemp("comfy-user")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(folder_paths, "get_user_directory", lambda: str(path))
        yield path


@pytest.fixture
def runs(monkeypatch):
    """Every calibration sampling run, as (start_step, schedule or None, starts from a recorded latent)."""
    log = []
    real = cal._run

    def counted(setup, seed, schedule, reuse, start_step, start_x, record, *rest):
        log.append((start_step, schedule, start_x is not None))
        return real(setup, seed, schedule, reuse, start_step, start_x, record, *rest)

    monkeypatch.setattr(cal, "_run", counted)
    return log


def reference(model, conds, **kw):
    """build_reference as the node calls it, from the node's inputs."""
    positive, negative = conds
    args = dict(seed=0, seeds=SEEDS, sampler_name="euler", scheduler="simple", steps=N, cfg=1.0, budget=K,
                edge_cost="global", objective="minimax", max_skip=W, reuse="auto", measure=True)
    args.update(kw)
    sampling = {name: args.pop(name) for name in ("sampler_name", "scheduler", "steps", "cfg")}
    hooks = {name: args.pop(name) for name in ("progress", "status") if name in args}
    setup = reference_setup(model, positive, negative, tiny_latent("flux"), **sampling)
    return build_reference(setup, ReferenceOptions(**args), **hooks)


@pytest.fixture(scope="module")
def global_ref(model, conds):
    return reference(model, conds)


def setup_for(model, conds, steps=N, sampler="euler"):
    positive, negative = conds
    return cal.SamplingSetup(model, positive, negative, tiny_latent("flux"), sampler, "simple", steps, 1.0)


# ----------------------------------------------------------------- replay

def test_replay_without_caching_reproduces_the_full_run(model, conds):
    setup = setup_for(model, conds)
    trajectory = setup.record(3)
    assert trajectory.steps == N and trajectory.evaluations == N
    assert torch.equal(trajectory.xs[0], setup.noise(3) * float(setup.sigmas[0]))  # x_0: the noised latent
    for i in (1, 5, 8):
        replay = setup.sample(3, None, start_step=i, start_x=trajectory.xs[i])
        assert replay.evaluations == N - i
        assert error(replay.final, trajectory.final) < 1e-5
    # The flat helper is the same ComfyUI path as a KSampler: the full run equals comfy.sample.sample.
    import comfy.sample
    positive, negative = conds
    latent = tiny_latent("flux")["samples"]
    plain = comfy.sample.sample(model, comfy.sample.prepare_noise(latent, 3), N, 1.0, "euler", "simple", positive,
                                negative, latent, disable_pbar=True, seed=3)
    ours = cal.sample_with_schedule(model, positive, negative, tiny_latent("flux"), 3, "euler", "simple", N, 1.0)
    assert torch.equal(plain, ours) and torch.equal(ours, trajectory.final)


def test_edge_run_computes_exactly_its_tail(model, conds):
    setup = setup_for(model, conds)
    trajectory = setup.record(0)
    i, j = 2, 5
    schedule = cal.tail_schedule(N, i, j)
    assert schedule.steps == N - i and schedule.compute == (0, *range(j - i, N - i))
    with count_block_stack_calls(model) as counter:
        run = setup.sample(0, schedule, "auto", start_step=i, start_x=trajectory.xs[i])
    assert counter["calls"] == run.evaluations == edge_evaluations(N, i, j) == N - j + 1
    assert 0 < error(run.final, trajectory.final) < 0.5


# ----------------------------------------------------------------- global and local references

@pytest.mark.slow  # a global calibration (about 12 s) and the schedules measured against it
def test_global_reference_beats_uniform_and_random_schedules(model, conds, global_ref):
    schedule = global_ref.schedule
    assert schedule.budget == K and schedule.steps == N and schedule.source == "reference"
    assert schedule.params["edge_cost"] == "global" and schedule.params["objective"] == "minimax"
    assert global_ref.matrix.complete
    expected_edges = SEEDS * len(window_edges(N, W))
    assert global_ref.calibration.edges == expected_edges
    # per seed: record N, the exact-replay check 3, and N - j + 1 per edge
    per_seed = N + sum(edge_evaluations(N, i, j) for i, j in window_edges(N, W))
    assert global_ref.calibration.evaluations == SEEDS * per_seed + 3
    assert schedule.metrics["calibration_evaluations"] == global_ref.calibration.evaluations

    setup = setup_for(model, conds)
    references = [global_ref.matrix.extras[f"final_{s}"] for s in range(SEEDS)]
    chosen = float(np.mean(cal.measure_schedule(setup, 0, schedule, references)[0]))
    assert chosen == pytest.approx(schedule.metrics["calibration_error"], rel=1e-9)
    uniform = float(np.mean(cal.measure_schedule(setup, 0, Schedule.uniform(N, K), references)[0]))
    assert uniform == pytest.approx(schedule.metrics["uniform_error"], rel=1e-9)
    assert chosen <= uniform
    rng = random.Random(1)
    for _ in range(20):
        candidate = Schedule(N, [0, *sorted(rng.sample(range(1, N - 1), K - 2)), N - 1])
        err = float(np.mean(cal.measure_schedule(setup, 0, candidate, references)[0]))
        assert chosen <= err + 1e-12, (candidate, err, schedule, chosen)


def test_local_reference_is_a_labelled_preview(model, conds, runs):
    result = reference(model, conds, edge_cost="local", budget=6, objective="sum")
    assert result.schedule.budget == 6 and result.schedule.params["edge_cost"] == "local"
    assert result.schedule.params["preview"] is True and "PREVIEW" in result.text
    # one full-compute run per seed, then the two measurements (chosen and uniform) per seed
    assert [r for r in runs if r[1] is None] == [(0, None, False)] * SEEDS
    assert len(runs) <= SEEDS + 2 * SEEDS
    c = result.costs
    assert all(np.isfinite(c[i, j]) and c[i, j] > 0 for i, j in window_edges(N, W))
    assert result.matrix.info["evaluations"] == SEEDS * N


# ----------------------------------------------------------------- resume and cache

@pytest.mark.slow  # global calibrations
@pytest.mark.parametrize("how", ["flag", "hook"])
def test_interrupted_global_calibration_resumes_without_recomputing(model, conds, runs, user_dir, how):
    """flag: ComfyUI's interrupt flag, checked between runs. hook: the progress hook raises (as a server's does)."""
    seed = {"flag": 10, "hook": 20}[how]  # a calibration of its own
    settings = dict(steps=8, max_skip=3, seeds=1, budget=4, measure=False, seed=seed)
    edges = window_edges(8, 3)
    stop_after = 4

    def interrupt_after_edges(done, total):
        if sum(1 for r in runs if r[1] is not None) == stop_after:
            if how == "hook":
                raise comfy.model_management.InterruptProcessingException()
            comfy.model_management.interrupt_current_processing(True)

    with pytest.raises(comfy.model_management.InterruptProcessingException):
        reference(model, conds, progress=interrupt_after_edges, **settings)
    first = [(r[0], r[1].compute) for r in runs if r[1] is not None]
    assert len(first) == stop_after
    saved = [CostMatrix.load(p) for p in (user_dir / "otcache" / "calibration").glob("*.safetensors")]
    partial = [m for m in saved if m.steps == 8 and m.info["seed"] == seed]
    assert len(partial) == 1 and partial[0].edges_done == stop_after and not partial[0].complete
    assert not comfy.model_management.processing_interrupted()

    runs.clear()
    result = reference(model, conds, **settings)
    second = [(r[0], r[1].compute) for r in runs if r[1] is not None]
    assert len(second) == len(edges) - stop_after
    assert not set(first) & set(second)
    assert {(i, cal.tail_schedule(8, i, j).compute) for i, j in edges} == set(first) | set(second)
    assert result.matrix.complete and result.schedule.budget == 4
    assert result.calibration.edges == len(edges) - stop_after
    # edges, 1 recording (the resume reads the saved trajectory back), 2 replay checks
    assert result.matrix.info["runs"] == len(edges) + 1 + 2 and result.calibration.reused_trajectories == 1


@pytest.mark.slow
def test_changing_only_the_budget_or_objective_does_no_sampling(model, conds, global_ref, runs):
    for budget, objective in ((6, "minimax"), (4, "sum"), (K, "sum")):
        result = reference(model, conds, budget=budget, objective=objective, measure=False)
        assert result.schedule.budget == budget
        assert result.path == global_ref.path
    assert runs == []
    # measuring a schedule not measured before costs its runs only: no calibration
    result = reference(model, conds, budget=7, measure=True)
    assert result.calibration.runs == 0 and "no sampling" in result.text
    assert len(runs) == result.measurement_runs <= 2 * SEEDS
    assert all(r[1] is not None and r[0] == 0 and not r[2] for r in runs)
    runs.clear()
    reference(model, conds, budget=7, measure=True)  # measurements are remembered
    assert runs == []


def test_cache_key_follows_what_the_costs_depend_on(model, conds):
    setup = setup_for(model, conds)
    key = cal.calibration_key(setup, 0, 2, "global", 4, "block")
    assert key == cal.calibration_key(setup_for(model, conds), 0, 2, "global", 4, "block")
    assert key != cal.calibration_key(setup, 1, 2, "global", 4, "block")
    assert key != cal.calibration_key(setup, 0, 2, "global", 4, "output")
    assert key != cal.calibration_key(setup_for(model, conds, steps=12), 0, 2, "global", 4, "block")
    assert fingerprints.setup_fingerprint(setup, [0, 1], "block") != fingerprints.setup_fingerprint(setup, [0, 2], "block")
    other = conditioning_pair("flux", separate=True)
    assert key != cal.calibration_key(setup_for(model, other), 0, 2, "global", 4, "block")
    assert key != cal.calibration_key(setup_for(build_tiny_model("flux", seed=1, scale=0.5), conds), 0, 2,
                                      "global", 4, "block")


def test_model_fingerprint_is_stable_when_a_patched_model_gets_loaded(conds):
    """A LoRA-like patch changes the key; loading merges it into the weights, which must not."""
    model = build_tiny_model("flux", seed=0, scale=0.5)  # its own: sampling leaves the patch merged
    name = sorted(model.model.diffusion_model.state_dict())[0]
    weight = model.model.diffusion_model.state_dict()[name]
    patched = model.clone()
    patched.add_patches({f"diffusion_model.{name}": (torch.full_like(weight, 0.1),)}, 1.0)
    before = fingerprints.model_fingerprint(patched)
    assert before != fingerprints.model_fingerprint(model)
    positive, negative = conds
    cal.sample_with_schedule(patched, positive, negative, tiny_latent("flux"), 0, "euler", "simple", 3, 1.0)
    assert fingerprints.model_fingerprint(patched) == before


# ----------------------------------------------------------------- the node

@pytest.mark.slow  # global calibrations
def test_node_execute_outside_a_server(model, conds, global_ref, runs):
    schema = OTCacheReference.define_schema()
    assert schema.node_id == "OTCacheReference" and schema.display_name == "OTCache Reference"
    assert schema.category == "OTCache"
    inputs = {i.id: i for i in schema.inputs}
    assert inputs["edge_cost"].default == "fast" and "PREVIEW" in inputs["edge_cost"].tooltip
    assert inputs["objective"].default == "minimax" and inputs["seeds"].default == 2
    positive, negative = conds
    out = OTCacheReference.execute(model=model, positive=positive, negative=negative,
                                   latent_image=tiny_latent("flux"), seed=0, seeds=SEEDS, sampler_name="euler",
                                   scheduler="simple", steps=N, cfg=1.0, budget=6, edge_cost="global",
                                   objective="minimax", max_skip=W, reuse="auto", measure=False)
    schedule, image = out.args
    assert isinstance(schedule, Schedule) and schedule.budget == 6 and schedule.steps == N
    assert image.shape == heatmap_shape(N) and image.dtype == torch.float32
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert "K=6/N=10" in out.ui["text"][0]
    assert Schedule.from_json(out.ui["otcache_schedule"][0]) == schedule  # the frontend's strip draws this
    assert runs == []  # the module's global calibration is reused
    # budget 0: a conservative N/2
    out = OTCacheReference.execute(model=model, positive=positive, negative=negative,
                                   latent_image=tiny_latent("flux"), seed=0, seeds=SEEDS, sampler_name="euler",
                                   scheduler="simple", steps=N, cfg=1.0, budget=0, max_skip=W, measure=False)
    assert out.args[0].budget == N // 2


def test_heatmap_draws_the_path():
    costs = np.full((4, 4), np.inf)
    costs[0, 1] = costs[1, 2] = costs[2, 3] = 0.0
    costs[0, 2], costs[1, 3], costs[0, 3] = 1e-3, 1e-1, 1.0
    img = cost_heatmap(costs, (0, 2, 3), size=40)
    assert img.shape == heatmap_shape(4, size=40) == (1, 40, 40 + 22, 3)
    cell = 10
    assert torch.equal(img[0, 0, 2 * cell], torch.ones(3))  # edge 0 -> 2 framed in white
    assert not torch.equal(img[0, cell + 5, 3 * cell + 5], torch.ones(3))  # edge 1 -> 3: not on the path


# ----------------------------------------------------------------- bad inputs

def test_bad_inputs_fail_before_sampling(model, conds, runs):
    with pytest.raises(GraphSearchError, match="budget must be between 2 and N = 10"):
        reference(model, conds, budget=11)
    with pytest.raises(GraphSearchError, match="budget 3 is too small"):
        reference(model, conds, budget=3, max_skip=4)  # needs ceil(9/4) + 1 = 4
    with pytest.raises(GraphSearchError, match="unknown objective"):
        reference(model, conds, objective="mean")
    with pytest.raises(ValueError, match="edge_cost must be one of fast, global, local"):
        reference(model, conds, edge_cost="exact")
    with pytest.raises(ValueError, match="steps must be at least 3"):
        reference(model, conds, steps=2, budget=2)
    with pytest.raises(ValueError, match="seeds must be at least 1"):
        reference(model, conds, seeds=0)
    with pytest.raises(cal.CalibrationError, match="already has an OTCache schedule"):
        reference(apply_otcache(model, Schedule.uniform(N, K)), conds)
    with pytest.raises(cal.CalibrationError, match="unknown sampler"):
        reference(model, conds, sampler_name="nope")
    assert runs == []
