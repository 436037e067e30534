"""OTCache Reference: a graph-searched reference schedule from a real calibration run (stage 1).

The node adapts :func:`..otcache_comfy.reference_build.build_reference`.
"""
from __future__ import annotations

import logging
import time

import comfy.samplers
import comfy.utils
from comfy_api.latest import io

from ..otcache_comfy.cache_runtime import REUSE_MODES
from ..otcache_comfy.reference_build import (
    DEFAULT_MAX_SKIP,
    DEFAULT_SEEDS,
    ReferenceOptions,
    reference_or_saved,
    reference_setup,
)
from ..otcache_comfy.saved_results import SAVED_CHOICES
from ..otcache_comfy.ui_text import node_id_of, node_ui, send_node_text
from ..otcache_core.edge_costs import EDGE_COSTS
from ..otcache_core.graph import OBJECTIVES
from .types import CATEGORY, OTSchedule

log = logging.getLogger("otcache")


# ----------------------------------------------------------------- the node


class OTCacheReference(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="OTCacheReference",
            display_name="OTCache Reference",
            category=CATEGORY,
            description=(
                "Stage 1 of OTCache: finds a caching schedule for this model, prompt and sampler by a graph search "
                "over the sampling steps (LeMiCa). Takes the same inputs as a KSampler; it samples the calibration "
                "seeds to measure what skipping each run of steps costs, then picks the best schedule with the "
                "requested budget. The measurements are saved in the user directory and resume after a cancel; "
                "changing only the budget or objective re-solves instantly."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model, before any OTCache Cached Model node."),
                io.Conditioning.Input("positive", tooltip="The prompt the schedule is calibrated on."),
                io.Conditioning.Input("negative", tooltip="The negative prompt (unused at cfg 1)."),
                io.Latent.Input("latent_image", tooltip="The latent to sample, as for a KSampler (sets the resolution)."),
                io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=False,
                             tooltip=("First calibration seed; the calibration uses seed, seed+1, ... "
                                      "(fixed: a new seed means a new calibration).")),
                io.Int.Input("seeds", default=DEFAULT_SEEDS, min=1, max=64,
                             tooltip="Number of calibration seeds. Costs are averaged over them; the sampling cost grows linearly."),
                io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS, default="euler",
                               tooltip="Sampler to calibrate with: use the one you will sample with. Deterministic "
                                       "single-step samplers (euler, heun, dpm_2, ddim) replay exactly; multistep and "
                                       "ancestral/SDE ones are compared with an uncached replay of each tail (more evaluations)."),
                io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS, default="simple",
                               tooltip="Scheduler to calibrate with: use the one you will sample with."),
                io.Int.Input("steps", default=20, min=3, max=10000, tooltip="N, the sampling steps of the schedule."),
                io.Float.Input("cfg", default=1.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Classifier-free guidance, as in your KSampler (FLUX: 1)."),
                io.Int.Input("budget", default=0, min=0, max=10000,
                             tooltip="K, the number of steps that run the transformer (0: a conservative N/2). "
                                     "Changing only this re-solves the saved cost matrix without sampling."),
                io.Combo.Input("edge_cost", options=list(EDGE_COSTS), default="fast",
                               tooltip="fast (default): a tenth of global's sampling. Each segment's error where it "
                                       "ends, times how much an error there grows by the last step, fitted over the "
                                       "segment's start and end from a few whole tails; on the tiny models it picked "
                                       "the exact schedule or one within 0.6 steps, held out 0.2 dB better on average "
                                       "and at worst 0.6 dB worse (FLUX, 28 steps, half budget). global: sample every skip "
                                       "segment's whole tail and measure the "
                                       "final-latent error (LeMiCa's exact definition; about N x max_skip tail runs "
                                       "per seed). local: a PREVIEW from one run per seed that adds up step-wise "
                                       "drift; it ignores how early errors grow."),
                io.Combo.Input("objective", options=list(OBJECTIVES), default="minimax",
                               tooltip="minimax: smallest worst edge, then second worst, ... (LeMiCa). "
                                       "sum: smallest total edge cost."),
                io.Int.Input("max_skip", default=DEFAULT_MAX_SKIP, min=2, max=64,
                             tooltip="Longest edge j - i: at most max_skip - 1 consecutive steps reuse the cache. "
                                     "The global calibration costs grow linearly with it; the smallest possible "
                                     "budget is ceil((N-1)/max_skip)+1. 5 covers the published FLUX reference gaps."),
                io.Combo.Input("reuse", options=list(REUSE_MODES), default="auto",
                               tooltip="What a skipped step reuses, as in OTCache Cached Model: set both the same so "
                                       "what is measured is what runs."),
                io.Boolean.Input("measure", default=True, advanced=True,
                                 tooltip="Sample the chosen schedule (and the uniform one) on the calibration seeds "
                                         "and report their final-latent error: 2 x seeds runs of K steps, remembered "
                                         "per schedule. Off: only the graph search runs."),
                # Added later: optional and last, so saved workflows keep their widget values in place.
                io.Combo.Input("saved_result", options=list(SAVED_CHOICES), default=SAVED_CHOICES[0], optional=True,
                               tooltip="The last result travels in the saved workflow, with what it was computed for "
                                       "(model, sampler, scheduler, steps, cfg, budget, settings). 'use if it matches': "
                                       "a workflow shared with you returns that result at once, without calibrating, "
                                       "when these inputs are the same; 'recompute': always calibrate here."),
                io.Int.Input("tail_batch", default=1, min=1, max=64, optional=True, advanced=True,
                             tooltip="Calibration tails run this many at a time in one model call (they share their "
                                     "steps). On a GPU with memory to spare 4-8 is faster; on a CPU it changes little. "
                                     "Same costs either way (to float rounding); samplers other than euler, heun, "
                                     "dpm_2, ddim run one at a time."),
                io.String.Input("storage", default="", optional=True, advanced=True, tooltip=(
                    "Empty: the calibration is this machine's (files in ComfyUI's user directory). A database URL "
                    "(e.g. postgresql://user@host/db, as Anchor Search's storage): every ComfyUI instance given the "
                    "same URL and inputs shares one calibration; each edge is computed once, and a worker that dies "
                    "has its edges taken over.")),
            ],
            outputs=[
                OTSchedule.Output(display_name="schedule", tooltip="The reference schedule, with its measurements."),
                io.Image.Output(display_name="cost_matrix",
                                tooltip="The edge-cost matrix (row i -> column j, log colour scale) with the chosen path in white."),
            ],
            hidden=[io.Hidden.unique_id, io.Hidden.extra_pnginfo],
        )

    @classmethod
    def execute(cls, model, positive, negative, latent_image, seed, seeds, sampler_name, scheduler, steps, cfg,
                budget=0, edge_cost="fast", objective="minimax", max_skip=DEFAULT_MAX_SKIP, reuse="auto",
                measure=True, saved_result=SAVED_CHOICES[0], tail_batch=1, storage="") -> io.NodeOutput:
        node_id = node_id_of(cls)
        bar: list = []

        def progress(done: int, total: int) -> None:
            if not bar:
                bar.append(comfy.utils.ProgressBar(total, node_id=node_id))
            bar[0].update_absolute(done, total)  # in a server this is also a cancel point

        last_status = [0.0]

        def status(text: str) -> None:
            now = time.monotonic()
            if now - last_status[0] >= 1.0:  # at most once a second on the node
                last_status[0] = now
                send_node_text(node_id, text)

        setup = reference_setup(model, positive, negative, latent_image, sampler_name, scheduler, steps, cfg)
        options = ReferenceOptions(seed, seeds, budget, edge_cost, objective, max_skip, reuse, measure, tail_batch,
                                   storage or "")
        extra_pnginfo = cls.hidden.extra_pnginfo if cls.hidden is not None else None
        schedule, image, text, record = reference_or_saved(setup, options, saved_result, extra_pnginfo, node_id,
                                                           progress=progress, status=status)
        log.info(text)
        return io.NodeOutput(schedule, image, ui=node_ui(cls, schedule, text, otcache_saved=[record]))
