"""benchmarks/run.py end to end, in its quick profile, on a tiny random-weight FLUX.

The script runs as a user runs it (a subprocess, the same code path as the committed
comparison and as real checkpoints): stage 1 calibration and graph search, stage 2 anchor
search, stage 3 budget path (and plain OT interpolation), the direct graph search, uniform schedules, ComfyUI's
EasyCache with its threshold bisected, the published LeMiCa schedules, the metrics and
the three output files. N = 10, speedups 2, 2.5 and 3.3 (budgets 5, 4, 3), one
calibration and one evaluation prompt, 4 anchor trials, a 8x8 latent, one thread.
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "run.py"
STEPS = 10
BUDGETS = [5, 4, 3]
SCHEDULE_METHODS = ("OTCache", "OT interpolation (paper)", "graph search (direct)", "uniform", "LeMiCa (published)")


pytestmark = pytest.mark.slow  # runs the whole benchmark in a subprocess (about a minute)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("benchmark")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--random-weights", "--threads", "1", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    result = json.loads((out / "comparison.json").read_text())
    return out, result, (out / "comparison.md").read_text(), proc.stdout


def _cell(result):
    assert len(result["cells"]) == 1
    return result["cells"][0]


def test_every_method_has_rows_at_every_target_budget(quick):
    _, result, md, _ = quick
    cell = _cell(result)
    assert cell["model"] == "flux" and cell["steps"] == STEPS and cell["budgets"] == BUDGETS
    methods = {row["method"] for row in cell["rows"]}
    assert methods == {"full compute", "OTCache", "OT interpolation (paper)", "graph search (direct)", "uniform",
                       "EasyCache", "LeMiCa (published)"}
    for method in ("OTCache", "graph search (direct)", "uniform"):
        assert sorted(r["budget"] for r in cell["rows"] if r["method"] == method) == sorted(BUDGETS)
    assert sorted(r["target_budget"] for r in cell["rows"] if r["method"] == "EasyCache") == sorted(BUDGETS)
    # Published FLUX.1-dev schedules (50 steps) resampled to N = 10: budgets 26, 20, 15, 10 -> 5, 4, 3, 2.
    published = [r for r in cell["rows"] if r["method"] == "LeMiCa (published)"]
    assert sorted(r["budget"] for r in published) == [2, 3, 4, 5]
    assert all(r["label"].startswith("lemica-flux1-dev-50-") for r in published)
    # The markdown table has a line per row, with the four fidelity columns.
    assert "| method | budget K | N/K | NFE (measured) | wall speedup | PSNR (dB) | SSIM | LPIPS | rel L2 |" in md
    table_lines = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| method")
                   and not line.startswith("| stage")]
    for row in cell["rows"]:
        assert any(line.startswith(f"| {row['label']}") for line in table_lines), row["label"]


def test_schedule_methods_run_the_transformer_exactly_budget_times(quick):
    _, result, _, _ = quick
    cell = _cell(result)
    checked = 0
    for row in cell["rows"]:
        if row["method"] not in SCHEDULE_METHODS:
            continue
        assert row["schedule"].startswith(f"{STEPS}:") and len(row["schedule"].split(":")[1].split(",")) == row["budget"]
        for entry in row["per_prompt"]:
            assert entry["nfe"] == row["budget"], row["label"]  # counted by the block hook
            assert entry["scheduled_evaluations"] == row["budget"]
        assert row["nfe_equals_budget"] is True
        assert row["ideal_speedup"] == pytest.approx(STEPS / row["budget"])
        checked += 1
    assert checked == 3 * len(BUDGETS) + 1 + 4  # OTCache, graph, uniform at each; plain OT between; 4 published


def test_easycache_reports_its_measured_nfe_and_setting(quick):
    _, result, md, stdout = quick
    rows = [r for r in _cell(result)["rows"] if r["method"] == "EasyCache"]
    assert len(rows) == len(BUDGETS)
    for row in rows:
        setting = row["easycache"]
        assert 0.0 < setting["threshold"] <= 3.0 and 0.0 <= setting["start"] <= 0.15
        assert 2 <= row["nfe_mean"] < STEPS  # it skipped something, and the count is what ran
        assert row["measured_speedup"] == pytest.approx(STEPS / row["nfe_mean"])
        assert row["per_prompt"][0]["scheduled_evaluations"] == STEPS  # the sampler asked every step
        assert f"(target {row['target_budget']})" in md
    assert "EasyCache: reuse_threshold bisection" in md
    assert "EasyCache K=5: threshold" in stdout


def test_full_compute_reproduces_itself(quick):
    _, result, _, _ = quick
    full = _cell(result)["rows"][0]
    assert full["method"] == "full compute" and full["budget"] == STEPS
    for entry in full["per_prompt"]:
        assert entry["nfe"] == STEPS
        assert entry["psnr"] == 99.0 and entry["rel_l2"] == 0.0 and entry["ssim"] == pytest.approx(1.0)
    # Cached methods are really different from full compute.
    uniform = [r for r in _cell(result)["rows"] if r["method"] == "uniform"]
    assert all(0 < r["rel_l2"] < 1 and r["psnr"] < 99.0 for r in uniform)


def test_the_three_stages_and_their_cost(quick):
    _, result, md, _ = quick
    cell = _cell(result)
    schedules = cell["schedules"]
    otcache = {r["budget"]: r for r in cell["rows"] if r["method"] == "OTCache"}
    assert schedules["reference"] == schedules["direct"]["5"]
    # OTCache follows the measured path: a knot at every budget from the anchor's to the reference's.
    knots = {k: (s, v, origin) for k, s, v, origin in schedules["path"]}
    assert sorted(knots) == [3, 4, 5]
    for k in (3, 4, 5):
        assert otcache[k]["schedule"] == knots[k][0] and otcache[k]["label"].startswith("OTCache (measured knot")
    assert knots[3][2].startswith(("anchor", "graph", "uniform"))
    assert knots[5][2].startswith(("reference", "graph", "uniform"))
    assert [r["method"] for r in cell["rows"] if r["budget"] == 4].count("OT interpolation (paper)") == 1
    def stage(prefix):
        (found,) = [c for c in cell["calibration_cost"] if c["stage"].startswith(prefix)]
        return found

    edge_costs = stage("1 reference: global edge costs")
    assert edge_costs["runs"] > 0 and edge_costs["evaluations"] > 100 and edge_costs["seconds"] > 0
    anchor = stage("2 anchor")
    assert anchor["runs"] > 0 and anchor["evaluations"] > 0 and anchor["seconds"] > 0
    path = stage("3 budget path")
    assert path["evaluations"] >= 0 and path["seconds"] > 0
    assert stage("EasyCache")["runs"] > 0
    assert "Calibration cost:" in md and "| stage | detail | sampling runs | model evaluations | wall s |" in md
    # The LPIPS column holds LPIPS or says why not; the anchor metric is named.
    lpips = result["metrics"]["lpips"]
    assert lpips == "lpips-alex" or lpips.startswith("n/a: ")
    assert result["metrics"]["anchor_metric"] in ("lpips-alex", "1-ssim")  # the quick run's default: lpips
    if lpips != "lpips-alex":
        assert all(r["lpips"] is None for r in cell["rows"])


def test_outputs_are_written(quick):
    out, result, md, stdout = quick
    assert result["format"] == "otcache.benchmark.comparison"
    assert md.startswith("# OTCache comparison")
    with Image.open(out / "comparison.png") as image:
        assert image.format == "PNG" and image.width >= 400 and image.height >= 300
    for name in ("comparison.json", "comparison.md", "comparison.png"):
        assert f"wrote {out / name}" in stdout
    assert "one transformer evaluation:" in stdout and "estimated total:" in stdout


def _load_script():
    return importlib.import_module("benchmarks.run")


def test_combine_puts_the_cells_of_several_runs_in_one_table(quick, tmp_path, capsys):
    out, result, md, _ = quick
    run = _load_script()
    assert run.main(["--combine", str(out / "comparison.json"), str(out / "comparison.json"),
                     "--out", str(tmp_path)]) == 0
    combined = json.loads((tmp_path / "comparison.json").read_text())
    assert combined["cells"] == result["cells"] * 2
    assert combined["seconds"] == pytest.approx(2 * result["seconds"])
    assert [p["command"] for p in combined["parts"]] == [result["command"]] * 2
    table = (tmp_path / "comparison.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| uniform"))
    assert table.count(row) == 2 * md.count(row)
    (tmp_path / "bad.json").write_text("{}")
    assert run.main(["--combine", str(tmp_path / "bad.json"), "--out", str(tmp_path / "x")]) == 2
    assert "is not a benchmarks/run.py result" in capsys.readouterr().err


def test_missing_tiny_weights_fail_clearly(tmp_path, capsys):
    run = _load_script()
    assert run.main(["--models", "flux", "--tiny-weights-dir", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "tiny model weights missing" in err and str(tmp_path / "flux.safetensors") in err and "train.py" in err
    assert not (tmp_path / "out").exists()


def test_missing_checkpoint_files_fail_clearly(tmp_path, capsys):
    run = _load_script()
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a cat\na dog\n")
    argv = ["--diffusion-model", str(tmp_path / "flux1-dev.safetensors"), "--text-encoder", str(prompts),
            "--vae", str(prompts), "--prompts", str(prompts), "--out", str(tmp_path / "out")]
    assert run.main(argv) == 2
    assert f"--diffusion-model {tmp_path / 'flux1-dev.safetensors'}: file not found" in capsys.readouterr().err


def test_real_checkpoint_target_is_built_with_comfyuis_loaders(tmp_path, monkeypatch):
    """The real-checkpoint glue, with ComfyUI's loader functions stubbed (no weights here)."""
    import comfy.sd
    import comfy.utils
    import torch

    run = _load_script()
    from benchmarks import targets
    files = {name: tmp_path / name for name in ("flux1-dev.safetensors", "clip_l.safetensors",
                                                "t5xxl_fp16.safetensors", "ae.safetensors")}
    for path in files.values():
        path.write_bytes(b"")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# calibration first\na red cube\n\na blue sphere\na green cone\n")
    loaded = {}

    class FakeClip:
        def tokenize(self, text):
            return text

        def encode_from_tokens_scheduled(self, tokens):
            return [[torch.full((1, 4, 8), float(len(tokens))), {"pooled_output": torch.zeros(1, 8)}]]

    class FakeVae:
        def __init__(self, sd=None, metadata=None):
            loaded["vae"] = (sd, metadata)

        def throw_exception_if_invalid(self):
            pass

    model = types.SimpleNamespace(model=types.SimpleNamespace(diffusion_model=torch.nn.Identity()))
    monkeypatch.setattr(comfy.sd, "load_diffusion_model",
                        lambda path, model_options={}: loaded.setdefault("unet", (path, model_options)) and model)
    monkeypatch.setattr(comfy.sd, "load_clip", lambda ckpt_paths, embedding_directory=None, clip_type=None:
                        loaded.setdefault("clip", (ckpt_paths, clip_type)) and FakeClip())
    monkeypatch.setattr(comfy.sd, "VAE", FakeVae)
    monkeypatch.setattr(comfy.utils, "load_torch_file", lambda path, return_metadata=False: ({"k": 1}, {"m": 1}))
    args = run.parse_args(["--diffusion-model", str(files["flux1-dev.safetensors"]),
                           "--text-encoder", str(files["clip_l.safetensors"]),
                           "--text-encoder", str(files["t5xxl_fp16.safetensors"]), "--clip-type", "flux",
                           "--vae", str(files["ae.safetensors"]), "--prompts", str(prompts),
                           "--width", "512", "--height", "768", "--weight-dtype", "fp8_e4m3fn"])
    target = targets.real_target(args, 1, 2)
    assert target.model is model and target.family == "flux" and target.preset_family == "flux1-dev"
    assert loaded["unet"] == (str(files["flux1-dev.safetensors"]), {"dtype": torch.float8_e4m3fn})
    assert loaded["clip"] == ([str(files["clip_l.safetensors"]), str(files["t5xxl_fp16.safetensors"])],
                              comfy.sd.CLIPType.FLUX)
    assert loaded["vae"] == ({"k": 1}, {"m": 1})
    assert target.cal_prompts == ["a red cube"] and target.eval_prompts == ["a blue sphere", "a green cone"]
    positive, negative = target.eval_conds[0]
    assert positive[0][1]["guidance"] == 3.5 and negative[0][1]["guidance"] == 3.5  # FluxGuidance default
    assert float(positive[0][0][0, 0, 0]) == len("a blue sphere")
    assert tuple(target.latent["samples"].shape) == (1, 16, 96, 64)  # EmptySD3LatentImage
    assert (target.sampler, target.scheduler, target.cfg) == ("euler", "simple", 1.0)
    with pytest.raises(targets.BenchError, match="holds 3 prompts"):
        targets.real_target(args, 2, 2)


def test_anchor_metric_choice_reaches_the_search():
    """--anchor-metric names the objective: lpips keeps the loaded metric, ssim and psnr load their own."""
    run = _load_script()
    loaded = object()
    assert run.anchor_metric_for("lpips", loaded) is loaded
    assert run.anchor_metric_for("ssim", loaded).name == "1-ssim"
    assert run.anchor_metric_for("psnr", loaded).name == "mse-db"
    assert run.parse_args(["--anchor-metric", "psnr"]).anchor_metric == "psnr"
    with pytest.raises(SystemExit):
        run.parse_args(["--anchor-metric", "mse"])


def _stage1_only(cache: Path, out: Path) -> str:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--random-weights", "--threads", "1", "--stage1-only",
         "--stage1-cache", str(cache), "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    (line,) = [x for x in proc.stdout.splitlines() if "stage 1 prompt 1:" in x]
    return line


def test_stage1_cache_is_read_back_by_a_rerun(tmp_path):
    cache = tmp_path / "stage1"
    first = _stage1_only(cache, tmp_path / "out")
    assert "(0 read back" in first and len(list(cache.glob("flux_N10_t1_*.safetensors"))) == 1
    evaluations = first.split(": ")[1].split(" evaluations")[0]
    assert int(evaluations) > 0
    again = _stage1_only(cache, tmp_path / "out")  # nothing left to measure: all of it read back
    assert again.split(": ")[1].startswith(f"{evaluations} evaluations ({evaluations} read back")
    assert not (tmp_path / "out" / "comparison.json").exists()  # stage 1 only writes no comparison


def test_stage1_only_without_a_cache_is_refused(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--random-weights", "--stage1-only",
                           "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and "--stage1-only keeps nothing without --stage1-cache DIR" in proc.stderr
