"""OTCache Cached Model: apply a caching schedule to a MODEL."""
from __future__ import annotations

from comfy_api.latest import io

from ..otcache_comfy.cache_runtime import CACHE_DEVICES, REUSE_MODES, STEP_MISMATCH, apply_otcache
from ..otcache_comfy.ui_text import node_id_of
from .types import CATEGORY, OTSchedule


class OTCacheCachedModel(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="OTCacheCachedModel",
            display_name="OTCache Cached Model",
            category=CATEGORY,
            description=(
                "Samples faster by running the transformer only on the schedule's computed steps and "
                "reusing a cached result on the others. Put it between the model loader (and LoRAs) and "
                "the sampler. After each run the node shows how many evaluations were computed and skipped."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model to speed up. It is cloned; the input stays unchanged."),
                OTSchedule.Input("schedule", tooltip=("Which steps run the transformer: from OTCache Budget "
                                                      "Slider, Reference, Anchor Search or a preset.")),
                io.Combo.Input("reuse", options=list(REUSE_MODES), default="auto", tooltip=(
                    "What a skipped step reuses. block: the transformer blocks' residual, embeddings and final "
                    "layer still run (FLUX, Chroma, HunyuanVideo, Qwen-Image, Wan 2.1/2.2, LTX-Video). output: the "
                    "last computed model output (any model). residual: last output minus its input (any model). auto: output "
                    "(on the trained tiny models block reuse was never best; output led on the front-loaded schedules OTCache makes).")),
                io.Combo.Input("cache_device", options=list(CACHE_DEVICES), default="model", advanced=True, tooltip=(
                    "model: keep cached tensors on the model's device (fastest). cpu: offload them to system "
                    "memory to save VRAM on large video latents.")),
                io.Combo.Input("on_step_mismatch", options=list(STEP_MISMATCH), default="resample", advanced=True, tooltip=(
                    "When the sampler runs a different number of steps than the schedule was made for: "
                    "resample keeps the schedule's shape and speedup; error stops with a message.")),
            ],
            outputs=[io.Model.Output(tooltip="The same model, sampling with the schedule.")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, schedule, reuse="auto", cache_device="model", on_step_mismatch="resample") -> io.NodeOutput:
        node_id = node_id_of(cls)
        patched = apply_otcache(model, schedule, reuse=reuse, cache_device=cache_device,
                                on_step_mismatch=on_step_mismatch, node_id=node_id)
        return io.NodeOutput(patched)
