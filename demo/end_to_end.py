"""OTCache end to end on the bundled trained tiny FLUX, through a real ComfyUI server.

    scripts/demo [--prompt "stripes background; red circle, any square"] [--port 8188] [--no-serve]

1. ``scripts/demo`` (a shim) sets up as ``scripts/serve`` does (``scripts/setup_host.py``:
   ComfyUI in ``.comfyui/``, ``.venv/``, the pack linked into ``custom_nodes``), then runs
   this module with ``.venv/bin/python -m demo.end_to_end`` (``--skip-setup`` skips the set-up).
2. Starts ComfyUI's ``main.py`` (``--cpu`` when torch sees no GPU) on ``--listen``:``--port``.
3. Loads ``example_workflows/tiny-flux-trained-demo.json`` (the workflow the UI shows
   under Templates -> ComfyUI-OTCache), sets the prompt and the options below, and queues
   it through ``/prompt``: OTCache Tiny FLUX (trained) -> OTCache Reference (global edge
   costs) -> OTCache Anchor Search -> three Budget Sliders -> Cached Models -> KSamplers ->
   VAEDecode -> SaveImage, and a KSampler with no cache on the same seed.
4. Timing: each row (full compute and each budget) is sampled again ``--repeats`` times
   on new seeds, one row per prompt (only that KSampler's seed changes, so ComfyUI runs
   that KSampler, its VAEDecode and SaveImage and takes everything else from its cache,
   as when you change one seed in the UI). The time of a sampling is the prompt's
   ``execution_start`` -> ``execution_success`` timestamps in ``/history`` (server side,
   millisecond resolution); the table shows the median per row.
5. Computed steps: from the Cached Model's report in the server log
   (``OTCache [block] K=9/N=28: computed 9/28 evaluations, ...``), one per cached sampling.
6. Fidelity: every saved PNG is fetched from ``/view``; PSNR and SSIM
   (``otcache_core.perceptual.ssim``) of each budget's image against the full-compute image
   of the same seed, averaged over the seeds. Then ComfyUI's cache is cleared (``/free``)
   and full compute is sampled again on the first seed, to check that it is
   deterministic (the differences in the table come from caching alone).
7. Prints the table, saves a side-by-side picture (rows: seeds; columns: full compute
   and the budgets) in ComfyUI's output folder, and leaves the server running for the
   browser (Ctrl-C stops it) unless ``--no-serve``.

Set-up and server output go to stderr and a log file; the results go to stdout.
"""
from __future__ import annotations

from devtools.host import REPO_ROOT as ROOT

import argparse
import json
import math
import os
import re
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from devtools.server import ComfyServer, ServerError
from devtools.workflow import FRONTEND_ONLY, to_api_prompt, widget_names
from otcache_core import metrics

from . import tiny_data

WORKFLOW = ROOT / "example_workflows" / "tiny-flux-trained-demo.json"
WEIGHTS = ROOT / "demo" / "weights" / "flux.safetensors"
LOADER = "OTCacheTinyFlux"
REPORT = re.compile(r"OTCache \[(\w+)\] K=(\d+)/N=(\d+): computed (\d+)/(\d+) evaluations, skipped (\d+)"
                    r"(?: \([^)]*\))?, ([\d.]+) s")


class DemoError(ServerError):
    """Something the user can act on; printed without a traceback."""


def say(message: str) -> None:
    print(f"[otcache-demo] {message}", file=sys.stderr, flush=True)


class Workflow:
    """The demo workflow (UI format) and what it means: the loader, the searches, one row per sampler."""

    def __init__(self, ui: dict, info: dict):
        self.ui = ui
        self.info = info
        self.nodes = {node["id"]: node for node in ui["nodes"]}
        self.links = {link[0]: link for link in ui["links"]}
        missing = sorted({n["type"] for n in ui["nodes"] if n["type"] not in FRONTEND_ONLY and n["type"] not in info})
        if missing:
            raise DemoError(f"the server does not know {', '.join(missing)}: is the pack loaded? (see the log)")
        self.loader = self._one(LOADER)
        self.reference = self._one("OTCacheReference")
        self.anchor = self._one("OTCacheAnchorSearch")
        self.rows = []  # (label, speedup or None, ksampler, slider or None, cached model or None, save)
        for sampler in sorted(self.of_type("KSampler"), key=lambda n: n["pos"][1]):
            source = self.source(sampler, "model")
            slider = cached = None
            if source["type"] == "OTCacheCachedModel":
                cached, slider = source, self.source(source, "schedule")
                if slider["type"] != "OTCacheBudgetSlider":
                    raise DemoError(f"node {cached['id']}: the Cached Model's schedule is not from a Budget Slider")
            elif source["id"] != self.loader["id"]:
                raise DemoError(f"KSampler {sampler['id']} samples {source['type']}, not the demo model")
            decode = next(n for n in self.consumers(sampler) if n["type"] == "VAEDecode")
            save = next(n for n in self.consumers(decode) if n["type"] == "SaveImage")
            self.rows.append({"sampler": sampler, "slider": slider, "cached": cached, "save": save})
        if sum(row["slider"] is None for row in self.rows) != 1:
            raise DemoError("the demo workflow needs exactly one KSampler without a cache (the full-compute row)")
        self.rows.sort(key=lambda row: (row["slider"] is not None, self.value(row["slider"], "speedup") if row["slider"] else 0))

    def of_type(self, node_type: str) -> list[dict]:
        return [n for n in self.ui["nodes"] if n["type"] == node_type and n.get("mode", 0) == 0]

    def _one(self, node_type: str) -> dict:
        found = self.of_type(node_type)
        if len(found) != 1:
            raise DemoError(f"the demo workflow needs one {node_type} node, it has {len(found)}")
        return found[0]

    def source(self, node: dict, input_name: str) -> dict:
        slot = next(s for s in node.get("inputs", []) if s["name"] == input_name)
        return self.nodes[self.links[slot["link"]][1]]

    def consumers(self, node: dict) -> list[dict]:
        return [self.nodes[link[3]] for link in self.ui["links"] if link[1] == node["id"]]

    def _index(self, node: dict, name: str) -> int:
        names = widget_names(self.info[node["type"]])
        if name not in names:
            raise DemoError(f"{node['type']} has no widget {name!r} (widgets: {names})")
        return names.index(name)

    def value(self, node: dict, name: str):
        return node["widgets_values"][self._index(node, name)]

    def set(self, node: dict, name: str, value) -> None:
        node["widgets_values"][self._index(node, name)] = value

    def label(self, row: dict) -> str:
        return "full compute" if row["slider"] is None else f"{self.value(row['slider'], 'speedup'):g}x"

    def ancestors(self, node: dict) -> set[int]:
        seen, todo = set(), [node["id"]]
        while todo:
            current = todo.pop()
            if current in seen:
                continue
            seen.add(current)
            for slot in self.nodes[current].get("inputs", []):
                if slot.get("link") is not None:
                    todo.append(self.links[slot["link"]][1])
        return seen

    def api(self, only: set[int] | None = None) -> dict:
        """The API-format prompt the frontend would queue (``only``: these node ids)."""
        return to_api_prompt(self.ui, self.info, only)


def configure(flow: Workflow, args) -> None:
    """Apply the command line to the workflow (the same widgets a user would change in the UI)."""
    flow.set(flow.loader, "prompt", args.prompt)
    for node in (flow.reference, flow.anchor):
        flow.set(node, "seed", args.seed)
        if args.steps:
            flow.set(node, "steps", args.steps)
    if args.max_skip:
        flow.set(flow.reference, "max_skip", args.max_skip)
    if args.trials:
        flow.set(flow.anchor, "trials", args.trials)
    if args.anchor_seeds:
        flow.set(flow.anchor, "seeds", args.anchor_seeds)
    if args.reuse:  # what is measured is what runs: the searches use the Cached Models' mode
        for node in (flow.reference, flow.anchor, *(row["cached"] for row in flow.rows if row["cached"])):
            flow.set(node, "reuse", args.reuse)
    budgets = [row for row in flow.rows if row["slider"] is not None]
    if args.speedups:
        if len(args.speedups) != len(budgets):
            raise DemoError(f"--speedups needs {len(budgets)} values (one per Budget Slider), got {len(args.speedups)}")
        for row, speedup in zip(budgets, sorted(args.speedups)):
            flow.set(row["slider"], "speedup", float(speedup))
            label = f"{speedup:g}x"
            row["slider"]["title"] = f"Budget Slider {label}"
            row["sampler"]["title"] = f"KSampler {label}"
            row["save"]["title"] = f"{label} (OTCache)"
            flow.set(row["save"], "filename_prefix", f"otcache-demo/{label}")
    for row in flow.rows:
        flow.set(row["sampler"], "seed", args.seed)
        if args.steps:
            flow.set(row["sampler"], "steps", args.steps)
            if row["slider"] is not None:
                flow.set(row["slider"], "steps", args.steps)
    # The searches must see what the samplers run.
    for name in ("sampler_name", "scheduler", "steps", "cfg"):
        wanted = {flow.value(row["sampler"], name) for row in flow.rows}
        searched = {flow.value(flow.reference, name), flow.value(flow.anchor, name)}
        if len(wanted | searched) != 1:
            raise DemoError(f"the workflow's {name} differs between the searches and the samplers: {wanted | searched}")


# ---------------------------------------------------------------- measuring


def psnr(image, reference) -> float:
    return metrics.psnr(image, reference, cap=None)


def ssim_of(image, reference) -> float:
    a = torch.from_numpy(image).float()[None]
    b = torch.from_numpy(reference).float()[None]
    return float(metrics.ssim(a, b)[0])


def reports_in(lines: list[str]) -> list[dict]:
    found = []
    for line in lines:
        match = REPORT.search(line)
        if match:
            mode, k, n, computed, evaluations, skipped, seconds = match.groups()
            found.append({"reuse": mode, "k": int(k), "n": int(n), "computed": int(computed),
                          "evaluations": int(evaluations), "skipped": int(skipped), "seconds": float(seconds)})
    return found


def schedule_of(entry: dict, node: dict) -> dict:
    output = entry["outputs"].get(str(node["id"]), {})
    schedules = output.get("otcache_schedule") or []
    if not schedules:
        raise DemoError(f"{node['type']} (node {node['id']}) reported no schedule")
    return schedules[0]


def compact(schedule: dict) -> str:
    return f"{schedule['steps']}:" + ",".join(str(s) for s in schedule["compute"])


def side_by_side(images: list[list], labels: list[str], seeds: list[int], path: Path, scale: int = 3) -> None:
    """Rows: seeds; columns: full compute and the budgets; nearest-neighbour upscaled, labelled."""
    import numpy as np
    from PIL import Image, ImageDraw

    h, w = images[0][0].shape[:2]
    cell_w, cell_h, top, left, gap = w * scale, h * scale, 22, 70, 6
    canvas = Image.new("RGB", (left + len(labels) * (cell_w + gap), top + len(seeds) * (cell_h + gap)), "white")
    draw = ImageDraw.Draw(canvas)
    for c, label in enumerate(labels):
        draw.text((left + c * (cell_w + gap) + 4, 4), label, fill="black")
    for r, seed in enumerate(seeds):
        draw.text((6, top + r * (cell_h + gap) + cell_h // 2 - 6), f"seed {seed}", fill="black")
        for c in range(len(labels)):
            tile = Image.fromarray((np.clip(images[r][c], 0, 1) * 255).round().astype(np.uint8))
            canvas.paste(tile.resize((cell_w, cell_h), Image.NEAREST), (left + c * (cell_w + gap), top + r * (cell_h + gap)))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


def fmt_db(value: float) -> str:
    return "inf" if math.isinf(value) else f"{value:.2f}"


def record(server: ComfyServer, row: dict, entry: dict, seed: int, reports: list[dict], timed: bool) -> None:
    """Add one run of ``row`` (its image, time and the Cached Model's report) from a prompt's history ``entry``."""
    image, info = server.image(entry, str(row["save"]["id"]))
    row["runs"].append({"seed": seed, "image": image, "file": info, "seconds": entry["_seconds"] if timed else None,
                        "report": reports[0] if (row["slider"] and reports) else None,
                        "reports": len(reports), "valid": True})


def run_pipeline(server: ComfyServer, flow: Workflow, args) -> dict:
    """Step 1: the whole workflow once; each row gets its schedule and its first run."""
    ui = flow.ui
    rows = flow.rows
    steps = flow.value(flow.reference, "steps")
    labels = [flow.label(row) for row in rows]
    say(f"1/3 the whole pipeline, one prompt: Reference (global edge costs, max_skip "
        f"{flow.value(flow.reference, 'max_skip')}) -> Anchor Search ({flow.value(flow.anchor, 'trials')} trials) -> "
        f"Budget Sliders {', '.join(labels[1:])} -> Cached Models -> KSamplers, and full compute; seed {args.seed}, "
        f"{steps} steps (first run: about a minute or two on 2 CPU cores; later runs reuse the saved calibration)")
    started = time.monotonic()
    pipeline = server.run(flow.api(), ui, "the pipeline prompt", heartbeat=15, say=say)
    reference = schedule_of(pipeline, flow.reference)
    anchor = schedule_of(pipeline, flow.anchor)
    reference_text = pipeline["outputs"][str(flow.reference["id"])]["text"][0]
    anchor_text = pipeline["outputs"][str(flow.anchor["id"])]["text"][0]
    for row in rows:
        row["schedule"] = schedule_of(pipeline, row["slider"]) if row["slider"] else None
        row["k"] = len(row["schedule"]["compute"]) if row["schedule"] else steps
        row["runs"] = []
    pipeline_reports = reports_in(pipeline["_log"])

    for row in rows:
        record(server, row, pipeline, args.seed, [r for r in pipeline_reports if r["k"] == row["k"]][:1], timed=False)
    return {"wall": time.monotonic() - started, "reference": reference, "anchor": anchor,
            "reference_text": reference_text, "anchor_text": anchor_text, "steps": steps}


def time_rows(server: ComfyServer, flow: Workflow, args) -> None:
    """Step 2: each row again on new seeds, one prompt per sampling, rows interleaved."""
    ui, rows = flow.ui, flow.rows
    say(f"2/3 timing: each row sampled again on seeds {args.seed + 1}..{args.seed + args.repeats}, "
        "one prompt per sampling (only that KSampler's seed changes; the rest comes from ComfyUI's cache)")
    for repeat in range(1, args.repeats + 1):
        seed = args.seed + repeat
        order = rows[repeat % len(rows):] + rows[:repeat % len(rows)]  # rotate, so no row always runs first
        for row in order:
            flow.set(row["sampler"], "seed", seed)
            entry = server.run(flow.api(), ui, f"{flow.label(row)} on seed {seed}")
            record(server, row, entry, seed, reports_in(entry["_log"]), timed=True)
            allowed = {str(row[k]["id"]) for k in ("sampler", "save")} | {str(n["id"]) for n in flow.consumers(row["sampler"])}
            ran = set(flow.api()) - entry["_cached"] - allowed
            heavy = {i for i in ran if flow.nodes[int(i)]["type"] in ("KSampler", "OTCacheReference", "OTCacheAnchorSearch")}
            if heavy or str(row["sampler"]["id"]) in entry["_cached"]:
                row["runs"][-1]["valid"] = False
                say(f"  note: the {flow.label(row)} prompt on seed {seed} also ran {sorted(heavy)} or was cached; its time is not used")
            say(f"  {flow.label(row):>12} seed {seed}: {entry['_seconds']:.3f} s")


def check_determinism(server: ComfyServer, flow: Workflow, args) -> dict:
    """Step 3: full compute again after clearing ComfyUI's cache: the same image?"""
    ui, rows = flow.ui, flow.rows
    say("3/3 determinism: ComfyUI's cache cleared (/free), full compute sampled again on seed "
        f"{args.seed}")
    full = rows[0]
    flow.set(full["sampler"], "seed", args.seed)
    server.post("/free", {"free_memory": True})
    time.sleep(1.5)  # the worker applies /free between prompts
    again = server.run(flow.api(only=flow.ancestors(full["save"])), ui, "the full-compute re-run")
    rerun_image, _ = server.image(again, str(full["save"]["id"]))
    recomputed = str(full["sampler"]["id"]) not in again["_cached"]
    determinism = {"recomputed": recomputed, "psnr": psnr(rerun_image, full["runs"][0]["image"]),
                   "max_abs_diff": float(abs(rerun_image - full["runs"][0]["image"]).max())}
    return determinism


def collect_results(server: ComfyServer, flow: Workflow, args, pipeline: dict, determinism: dict) -> dict:
    """The table's rows: schedules, counts, times, speedups, PSNR and SSIM; and the side-by-side picture."""
    rows, full, steps = flow.rows, flow.rows[0], pipeline["steps"]
    reference, anchor = pipeline["reference"], pipeline["anchor"]
    reference_text, anchor_text, pipeline_wall = pipeline["reference_text"], pipeline["anchor_text"], pipeline["wall"]
    seeds = [run["seed"] for run in full["runs"]]
    results = {"prompt": args.prompt, "steps": steps, "sampler": flow.value(full["sampler"], "sampler_name"),
               "scheduler": flow.value(full["sampler"], "scheduler"), "cfg": flow.value(full["sampler"], "cfg"),
               "seeds": seeds, "pipeline_seconds": round(pipeline_wall, 2), "server": server.url,
               "reference": {"schedule": compact(reference), "k": len(reference["compute"]), "text": reference_text},
               "anchor": {"schedule": compact(anchor), "k": len(anchor["compute"]), "text": anchor_text},
               "determinism": determinism, "rows": []}
    full_images = {run["seed"]: run["image"] for run in full["runs"]}
    for row in rows:
        timed = [run["seconds"] for run in row["runs"] if run["seconds"] is not None and run["valid"]]
        median = statistics.median(timed) if timed else math.nan
        psnrs = [psnr(run["image"], full_images[run["seed"]]) for run in row["runs"]]
        ssims = [ssim_of(run["image"], full_images[run["seed"]]) for run in row["runs"]]
        reports = [run["report"] for run in row["runs"] if run["report"]]
        results["rows"].append({
            "label": flow.label(row),
            "speedup_setting": flow.value(row["slider"], "speedup") if row["slider"] else 1.0,
            "schedule": compact(row["schedule"]) if row["schedule"] else f"{steps}:all",
            "k": row["k"], "n": steps, "ideal_speedup": steps / row["k"],
            "computed": [r["computed"] for r in reports], "evaluations": [r["evaluations"] for r in reports],
            "reuse": reports[0]["reuse"] if reports else None,
            "reports_per_run": [run["reports"] for run in row["runs"]],
            "seconds": [run["seconds"] for run in row["runs"] if run["seconds"] is not None],
            "seconds_median": median,
            **round_ratios(full, row),
            "psnr": psnrs, "psnr_mean": statistics.fmean(psnrs) if not any(map(math.isinf, psnrs)) else math.inf,
            "ssim": ssims, "ssim_mean": statistics.fmean(ssims),
            "files": [run["file"]["filename"] for run in row["runs"]],
        })
    # What a timed prompt costs beyond the sampling itself: prompt time minus the Cached Model's own clock.
    rest = [run["seconds"] - run["report"]["seconds"] for row in rows for run in row["runs"]
            if run["seconds"] is not None and run["valid"] and run["report"]]
    results["prompt_overhead_seconds"] = statistics.median(rest) if rest else None
    picture = server.output_dir / "otcache-demo" / "side-by-side.png"
    columns = [f"{r['label']}" + ("" if r["label"] == "full compute" else f" {r['psnr_mean']:.1f} dB")
               for r in results["rows"]]
    side_by_side([[run["image"] for run in [row["runs"][k] for row in rows]] for k in range(len(seeds))],
                 columns, seeds, picture)
    results["picture"] = str(picture)
    return results


def run_demo(server: ComfyServer, args) -> dict:
    info = server.get("/object_info", timeout=120)
    flow = Workflow(json.loads(WORKFLOW.read_text(encoding="utf-8")), info)
    configure(flow, args)
    pipeline = run_pipeline(server, flow, args)
    time_rows(server, flow, args)
    determinism = check_determinism(server, flow, args)
    return collect_results(server, flow, args, pipeline, determinism)


def round_ratios(full: dict, row: dict) -> dict:
    """Speedup as the median of per-round ratios (full compute and this row on the same seed, same round),
    with their range: the rows are interleaved, so drift hits both sides of a ratio alike."""
    full_by_seed = {run["seed"]: run["seconds"] for run in full["runs"] if run["seconds"] is not None and run["valid"]}
    ratios = [full_by_seed[run["seed"]] / run["seconds"] for run in row["runs"]
              if run["seconds"] and run["valid"] and run["seed"] in full_by_seed]
    if not ratios:
        return {"measured_speedup": math.nan, "speedup_range": [math.nan, math.nan]}
    return {"measured_speedup": statistics.median(ratios), "speedup_range": [min(ratios), max(ratios)]}


def speedup_cell(row: dict) -> str:
    """``2.41x [2.30, 2.55]``; a figure above N/K is timing noise and is shown as such, never as a result."""
    low, high = row["speedup_range"]
    text = f"{row['measured_speedup']:.2f}x [{low:.2f}, {high:.2f}]"
    if row["measured_speedup"] > row["ideal_speedup"] * 1.005:
        return f"noise ({text} is above N/K)"
    return text


def print_table(results: dict, params: dict) -> None:
    seeds = results["seeds"]
    n = results["steps"]
    print()
    print(f"OTCache demo: trained tiny FLUX ({params.get('params', '?')} parameters) through ComfyUI at {results['server']}")
    print(f"prompt {results['prompt']!r}; {results['sampler']} / {results['scheduler']} / {n} steps / cfg "
          f"{results['cfg']:g}; seeds {seeds[0]}..{seeds[-1]}")
    print(f"pipeline prompt (Reference + Anchor Search + {len(results['rows'])} samplings): {results['pipeline_seconds']:.1f} s")
    print(f"reference K={results['reference']['k']}/{n}: {results['reference']['schedule']}")
    print(f"anchor    K={results['anchor']['k']}/{n}: {results['anchor']['schedule']}")
    print()
    print("| budget | schedule | K/N | computed (measured) | s per sampling | speedup [range] | ideal N/K | PSNR dB | SSIM |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|")
    for row in results["rows"]:
        computed = sorted(set(row["computed"]))
        pairs = sorted(set(zip(row["computed"], row["evaluations"])))
        shown = ", ".join(f"{c}/{e}" for c, e in pairs) if computed else f"{n}/{n} (no cache)"
        print(f"| {row['label']} | {row['schedule']} | {row['k']}/{row['n']} | {shown} | {row['seconds_median']:.3f} | "
              f"{speedup_cell(row)} | {row['ideal_speedup']:.2f} | {fmt_db(row['psnr_mean'])} | {row['ssim_mean']:.4f} |")
    timed = len(results["rows"][0]["seconds"])
    print()
    print(f"speedup: median over the {timed} timing rounds of full compute's time / this row's time on the same seed "
          "(rows interleaved, so drift of a shared machine hits both), [range over the rounds]; a figure above N/K "
          "is timing noise and is marked so.")
    print(f"s per sampling: median of {timed} prompt{'s' if timed != 1 else ''} per row, each timed by the server "
          "(execution_start -> execution_success in /history), in which only that row's KSampler, VAEDecode and "
          "SaveImage ran" + (f"; the rest of a prompt beyond sampling (decode, save, ComfyUI's own work) took "
                              f"{results['prompt_overhead_seconds'] * 1000:.0f} ms (median of prompt time minus the "
                              "Cached Model's own sampling time)" if results.get("prompt_overhead_seconds") is not None
                              else "") +
          ". computed: the Cached Model's report in the server log, every run. PSNR / SSIM: the saved PNG (from "
          f"/view) against full compute on the same seed, mean over {len(seeds)} seeds.")
    if any(row["reuse"] == "block" for row in results["rows"]):
        print("block reuse still runs the embeddings and the final layer on skipped steps; on a model this small they "
              "and the sampler's own work are a large share of a step, so the speedup stays below N/K (on the 39.6M "
              "tiny FLUX of benchmarks/speed.py block mode is within timing noise of N/K).")
    det = results["determinism"]
    if det["recomputed"]:
        verdict = "identical" if det["max_abs_diff"] == 0 else f"NOT identical (max difference {det['max_abs_diff']:.4f})"
        print(f"full compute sampled again after clearing ComfyUI's cache: {verdict} (PSNR {fmt_db(det['psnr'])})")
    else:
        print("full compute re-run: not checked (ComfyUI served it from its cache)")
    print(f"side by side (rows: seeds): {results['picture']}")


# ---------------------------------------------------------------- main


def parse_args(argv: list[str]):
    ap = argparse.ArgumentParser(prog="scripts/demo", description=(
        "OTCache end to end on the bundled trained tiny FLUX through a real ComfyUI server: prints speedup and "
        "fidelity at three budgets, then leaves the UI served."))
    ap.add_argument("--prompt", default="stripes background; red circle, any square",
                    help="'<background> background; <colour> <shape>[, ...]' (1-3 objects; any word may be 'any')")
    ap.add_argument("--port", type=int, default=int(os.environ.get("PORT", 8188)), help="server port (default 8188)")
    ap.add_argument("--listen", default=os.environ.get("LISTEN", "127.0.0.1"), help="server address (default 127.0.0.1)")
    ap.add_argument("--no-serve", action="store_true", help="stop the server and exit after printing (tests, CI)")
    ap.add_argument("--seed", type=int, default=0, help="sampling and calibration seed (default 0)")
    ap.add_argument("--repeats", type=int, default=5, help="timed samplings per row, on seeds seed+1.. (default 5)")
    ap.add_argument("--steps", type=int, default=0, help="sampling steps (default: the workflow's, 28)")
    ap.add_argument("--speedups", type=float, nargs="+", help="the three Budget Sliders (default: the workflow's, 2 3 4.5)")
    ap.add_argument("--max-skip", type=int, default=0, help="Reference max_skip (default: the workflow's, 4)")
    ap.add_argument("--trials", type=int, default=0, help="Anchor Search trials (default: the workflow's, 8)")
    ap.add_argument("--anchor-seeds", type=int, default=0, help="Anchor Search seeds (default: the workflow's, 2)")
    ap.add_argument("--reuse", choices=("auto", "block", "output", "residual"),
                    help="what a skipped step reuses, in the searches and the Cached Models (default: the workflow's, auto)")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads for the server's torch (default: torch's)")
    ap.add_argument("--workdir", type=Path, help="ComfyUI output/user/temp/input folders here (default: ComfyUI's own)")
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    ap.add_argument("--skip-setup", action="store_true", help="do not run scripts/setup_host.py first")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")
    return args


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    # Ctrl-C, and a plain `kill`, stop the server this script started (also when started in the
    # background, where a shell may have set SIGINT to be ignored).
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        args.prompt = tiny_data.parse_prompt(args.prompt).text()
    except tiny_data.PromptSyntaxError as error:
        print(f"scripts/demo: {error}", file=sys.stderr)
        return 2
    if not WEIGHTS.is_file():
        print(f"scripts/demo: the trained tiny FLUX weights are missing ({WEIGHTS}). They are part of the git "
              "checkout; restore them with `git checkout -- demo/weights/flux.safetensors`, or train them "
              "with `.venv/bin/python benchmarks/tiny/train.py --family flux`.", file=sys.stderr)
        return 2
    from safetensors import safe_open

    with safe_open(str(WEIGHTS), "pt") as f:
        params = f.metadata() or {}
    if "params" in params:
        params["params"] = f"{int(params['params']):,}"
    log_dir = args.workdir if args.workdir else Path(tempfile.mkdtemp(prefix="otcache-demo-"))
    server = ComfyServer(args.port, args.listen, args.workdir, args.threads or None, log_dir / "comfyui.log")
    began = time.monotonic()
    printed = False
    try:
        say(f"starting ComfyUI ({server.root}) on {server.url}; its log: {server.log_path}")
        if server.pack != ROOT:
            say(f"note: the server loads the pack at {server.pack}, not this checkout ({ROOT})")
        server.start()
        results = run_demo(server, args)
        results["total_seconds"] = round(time.monotonic() - began, 1)
        print_table(results, params)
        print(f"demo time (server start to table): {results['total_seconds']:.0f} s")
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=1, default=float) + "\n")
        sys.stdout.flush()
        printed = True
        if args.no_serve:
            return 0
        print(f"\nComfyUI with OTCache: {server.url}  (Ctrl-C stops it)")
        print("The workflow: Templates -> Extensions -> ComfyUI-OTCache -> tiny-flux-trained-demo (or drag an image "
              f"from {server.output_dir / 'otcache-demo'} onto the canvas). Server log follows.", flush=True)
        server.echo = True
        sys.stderr.write(server.tail(5) + "\n")
        while server.process.poll() is None:
            time.sleep(0.5)
        return server.process.returncode or 0
    except ServerError as error:
        print(f"scripts/demo: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C or kill: after the table, the normal way to stop serving
        print("\nstopping ComfyUI", file=sys.stderr)
        return 0 if printed else 130
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
