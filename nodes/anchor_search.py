"""OTCache Anchor Search (stage 2): the best schedule at an extreme budget, scored end to end.

Each candidate schedule is sampled on the calibration seeds, decoded with the VAE and
compared with the full-compute image of the same seed and conditioning by LPIPS (or a
stated fallback when the LPIPS weights cannot be loaded). The Optuna study lives in an
SQLite file in ComfyUI's user directory by default, named from everything the result
depends on, so running the node again resumes it; any Optuna storage URL (PostgreSQL)
lets several ComfyUI machines work on one study.
"""
from __future__ import annotations

import logging

import comfy.model_management
import comfy.samplers
import comfy.utils
from comfy_api.latest import io

from ..otcache_comfy.anchor_run import anchor_or_saved
from ..otcache_comfy.cache_runtime import REUSE_MODES
from ..otcache_comfy.saved_results import SAVED_CHOICES
from ..otcache_comfy.ui_text import node_id_of, node_ui
from ..otcache_core.perceptual import METRIC_CHOICES
from .types import CATEGORY, OTSchedule

log = logging.getLogger("otcache")


class OTCacheAnchorSearch(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="OTCacheAnchorSearch",
            display_name="OTCache Anchor Search",
            category=CATEGORY,
            description=(
                "Stage 2 of OTCache: searches the best schedule at an extreme budget (about N/7) with Optuna, "
                "scoring each candidate end to end: sample, decode, LPIPS against full compute. The study is "
                "saved as it goes, so cancelling or restarting resumes it. Feed its output to the Budget "
                "Slider's anchor."),
            inputs=[
                io.Model.Input("model", tooltip="The model to search for; the same one the Cached Model will run."),
                io.Vae.Input("vae", tooltip="Decodes samples so candidates are judged on pixels."),
                io.Conditioning.Input("positive", tooltip="Calibration prompt (positive)."),
                io.Conditioning.Input("negative", tooltip="Calibration prompt (negative)."),
                io.Latent.Input("latent_image", tooltip="Calibration latent: its size should match what you will sample."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=False,
                             tooltip="First calibration seed; also seeds the search (same inputs, same study)."),
                io.Int.Input("seeds", default=2, min=1, max=16, tooltip="Calibration seeds (seed, seed+1, ...) averaged per candidate."),
                io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS, default="euler",
                               tooltip="The sampler you will use."),
                io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS, default="simple",
                               tooltip="The scheduler you will use."),
                io.Int.Input("steps", default=28, min=2, max=1000, tooltip="The step count you will sample with."),
                io.Float.Input("cfg", default=3.5, min=0.0, max=100.0, step=0.1, round=0.01, tooltip="CFG as in your KSampler."),
                OTSchedule.Input("reference", tooltip=("The reference schedule (Reference node or a "
                                                       "preset); enqueued as the first candidate.")),
                io.Int.Input("budget", default=0, min=0, max=1000, tooltip="Computed steps of the anchor; 0 = about steps/7."),
                io.Int.Input("trials", default=30, min=1, max=1000, tooltip=("Completed trials the study should reach; "
                                                                             "repeated schedules cost nothing.")),
                io.String.Input("storage", default="", optional=True, tooltip=(
                    "Optuna storage URL. Empty: an SQLite file in ComfyUI's user directory. A PostgreSQL URL "
                    "(postgresql://user@host/db) lets several ComfyUI machines work on one study.")),
                # Added later: optional and last, so saved workflows keep their widget values in place.
                io.Combo.Input("budget_path", options=["measure", "off"], default="measure", optional=True, advanced=True, tooltip=(
                    "measure: after the search, score a knot at every budget between the anchor and the reference "
                    "(the graph search's schedule, unless the OT-interpolated or the uniform one beats it by more "
                    "than the noise between seeds; with one seed, by any margin), so every slider position is "
                    "measured, and the slider draws the curve. At most (K_r - K_a + 1) x 3 samplings per seed. "
                    "off: the slider interpolates reference and anchor only.")),
                io.Int.Input("neighbour_evals", default=0, min=0, max=64, optional=True, advanced=True, tooltip=(
                    "Per knot, how many one-step neighbours of the best candidate may also be scored (hill "
                    "climbing). 0 (default): only the interpolated, graph and uniform schedules; with a few "
                    "calibration seeds, moves that win on them often lose on other prompts.")),
                io.Combo.Input("saved_result", options=list(SAVED_CHOICES), default=SAVED_CHOICES[0], optional=True,
                               tooltip="The last anchor travels in the saved workflow, with what it was searched for "
                                       "(model, sampler, scheduler, steps, cfg, budget, reference, settings). 'use if it "
                                       "matches': a workflow shared with you returns it at once, without searching, when "
                                       "these inputs are the same; 'recompute': always search here."),
                io.Combo.Input("reuse", options=list(REUSE_MODES), default="auto", advanced=True,
                               tooltip="Reuse mode to measure; use the one the Cached Model will run."),
                io.Combo.Input("metric", options=list(METRIC_CHOICES), default="lpips", advanced=True, tooltip=(
                    "What 'close to full compute' means. lpips: LPIPS (AlexNet), as in the paper; falls back to "
                    "1 - SSIM, and says so, when its weights cannot be loaded. ssim: 1 - SSIM directly. psnr: pixel "
                    "error in dB (minus the PSNR), for when pixel fidelity matters more than perceptual closeness.")),
            ],
            outputs=[
                OTSchedule.Output(display_name="anchor", tooltip="The best schedule found; its objective value is in its metrics."),
                io.Image.Output(display_name="comparison", tooltip=("Full compute, the reference's warp at the anchor "
                                                                    "budget, and the anchor, for the first seed.")),
                io.Image.Output(display_name="trials", tooltip="Objective per trial and the best so far."),
            ],
            hidden=[io.Hidden.unique_id, io.Hidden.extra_pnginfo],
        )

    @classmethod
    def execute(cls, model, vae, positive, negative, latent_image, seed, seeds, sampler_name, scheduler, steps, cfg,
                reference, budget=0, trials=30, storage="", reuse="auto", metric="lpips", budget_path="measure",
                neighbour_evals=0, saved_result=SAVED_CHOICES[0]) -> io.NodeOutput:
        node_id = node_id_of(cls)
        extra_pnginfo = cls.hidden.extra_pnginfo if cls.hidden is not None else None
        anchor, comparison, plot, text, record = anchor_or_saved(
            saved_result, extra_pnginfo, node_id, model, vae, positive, negative, latent_image, seed, seeds,
            sampler_name, scheduler, steps, cfg, reference, budget=budget, trials=trials, metric=metric, reuse=reuse,
            budget_path=budget_path, neighbour_evals=neighbour_evals, storage=storage or "")
        log.info("OTCache anchor search: %s", text.replace("\n", "; "))
        return io.NodeOutput(anchor, comparison, plot, ui=node_ui(cls, anchor, text, otcache_saved=[record]))
