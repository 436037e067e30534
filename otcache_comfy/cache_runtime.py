"""The OTCache runtime: run a caching schedule inside ComfyUI's sampling loop.

Shaped like diffusers' hooks: a config (:class:`CacheConfig`), a per-run state
(:class:`CacheState`), the hooks (an OUTER_SAMPLE wrapper that owns the state, a
DIFFUSION_MODEL wrapper for the generic modes, ``dit`` replace patches for ``block``
mode) and one entry point, :func:`apply_otcache`.

Step resolution: an evaluation's sigma is matched against the run's
``sample_sigmas`` (``isclose``); an evaluation whose sigma matches no step (SDE and
second-order midpoints) follows the most recent matched step. So heun, which
evaluates at sigma_i and sigma_{i+1}, makes 2K-1 real evaluations for a schedule of
K computed steps, as it makes 2N-1 without one.

Reuse modes:
- ``block``: FLUX, Chroma, HunyuanVideo, Qwen-Image, Wan 2.1/2.2, LTX-Video. Embeddings and the final layer always run;
  on a skipped step every block is the identity and the last one adds the residual
  (block-stack output minus its input) of the most recent computed evaluation.
- ``residual``: any model behind a DIFFUSION_MODEL wrapper; reuses output - input.
- ``output``: any such model; reuses the last computed output unchanged (for flow
  models, the velocity).

Caches are kept per conditioning entry (``transformer_options["uuids"]``), so cond and
uncond work whether ComfyUI batches them or not. A skipped evaluation never writes
into the model's input: its result is a new tensor.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Callable

import comfy.patcher_extension
import torch
from comfy.model_patcher import ModelPatcher, create_model_options_clone

from ..otcache_core.schedule import Schedule
from ..otcache_core.warp import resample
from .ui_text import send_node_text

log = logging.getLogger("otcache")

WRAPPER_KEY = "otcache"
STATE_KEY = "otcache_state"
CALL_KEY = "otcache_call"
REUSE_MODES = ("auto", "block", "residual", "output")
CACHE_DEVICES = ("model", "cpu")
STEP_MISMATCH = ("resample", "error")


class OTCacheRuntimeError(RuntimeError):
    """Raised when a schedule cannot be applied to a sampling run."""


@dataclasses.dataclass(frozen=True)
class CacheConfig:
    schedule: Schedule
    reuse: str = "block"  # resolved mode: block, residual or output
    cache_device: str = "model"
    on_step_mismatch: str = "resample"
    node_id: str | None = None  # where to show stats in the UI
    on_report: Callable[["RunReport"], None] | None = None
    quiet: bool = False  # calibration runs: log at DEBUG instead of INFO


@dataclasses.dataclass
class RunReport:
    """What one sampling run did; logged, shown on the node, handed to ``on_report``."""

    schedule: Schedule
    reuse: str
    computed: int = 0
    skipped: int = 0
    forced: int = 0  # evaluations computed although scheduled to skip (no cache yet)
    seconds: float = 0.0
    model_calls: int = 0  # diffusion-model calls seen by the DIFFUSION_MODEL wrapper (every mode)
    steps_computed: set = dataclasses.field(default_factory=set)  # steps whose evaluation reached the hooks
    steps_skipped: set = dataclasses.field(default_factory=set)
    warning: str = ""  # set by check_honoured when the schedule was not what ran
    span: tuple[int, int] | None = None  # one pass of a split sampling: its steps [start, end) of the schedule's N

    @property
    def evaluations(self) -> int:
        return self.computed + self.skipped

    def text(self) -> str:
        total = max(self.evaluations, 1)
        where = ""
        if self.span is not None:
            start, end = self.span
            inside = sum(self.schedule.mask[start:end])
            where = f" steps {start}-{end - 1} (one pass; {inside} computed there)"
        return (
            f"OTCache [{self.reuse}] K={self.schedule.budget}/N={self.schedule.steps}{where}: computed "
            f"{self.computed}/{self.evaluations} evaluations, skipped {self.skipped} "
            f"({total / max(self.computed, 1):.2f}x fewer transformer runs), {self.seconds:.2f} s"
            + (f", {self.forced} forced by missing cache" if self.forced else "")
            + (f"\nWARNING: {self.warning}" if self.warning else "")
        )


def check_honoured(report: RunReport) -> str:
    """Why the run did not follow its schedule ("" when it did): hooks never reached, or K/N not met.

    The steady failure of step caches is a speedup that silently disappears, because
    another node replaced the model's forward or the block patches, or ComfyUI changed
    its hooks. So after every run the steps the hooks saw are compared with the schedule.
    """
    schedule = report.schedule
    if report.evaluations == 0:
        if report.reuse == "block" and report.model_calls:
            return (f"the transformer ran {report.model_calls} time(s) but never reached OTCache's block patches, so "
                    "nothing was cached. Likely cause: a node after the Cached Model replaced the 'dit' block "
                    "patches (another cache or patch pack); put the Cached Model last, or use reuse 'output'.")
        return ("no transformer evaluation reached OTCache's hooks, so nothing was cached. Likely cause: another "
                "node replaces the model's forward (another cache pack, or a model wrapper) after the Cached "
                "Model, or this ComfyUI version calls the model differently; put the Cached Model last.")
    start, end = report.span or (0, schedule.steps)
    scheduled_skips = [s for s in schedule.skipped if start <= s < end]
    if not scheduled_skips:
        return ""
    seen = report.steps_computed | report.steps_skipped
    expected_skips = set(scheduled_skips) & seen
    if not report.steps_skipped:
        return (f"no step reused the cache although {len(scheduled_skips)} of {end - start} were scheduled to; "
                "the cache was never filled (check the log for 'forced by missing cache').")
    missing = expected_skips - report.steps_skipped
    if len(seen) < end - start:
        return (f"the hooks saw {len(seen)} of the {end - start} steps; the others ran outside OTCache (another "
                "cache pack's wrapper may skip calls before they reach it), so K/N is not what ran.")
    if missing and len(missing) > report.forced:
        return (f"{len(missing)} scheduled skip(s) were computed (steps {sorted(missing)[:8]}), so the run computed "
                f"more than K={schedule.budget} of N={schedule.steps} steps.")
    return ""


# ---------------------------------------------------------------- per-run state

@dataclasses.dataclass
class _Entry:
    """A cached tensor for one conditioning entry, with the input signature it is valid for."""

    value: torch.Tensor
    signature: tuple


class CacheState:
    """Everything one sampling run needs; created by the OUTER_SAMPLE wrapper, freed after."""

    def __init__(self, config: CacheConfig, model_sampling=None):
        self.config = config
        self.model_sampling = model_sampling  # finds where one pass of a split sampling sits (pass_offset)
        self.offset = 0  # that pass's first step in the schedule (0: a whole run)
        self.schedule_for_run: Schedule | None = None
        self.compute_mask: list[bool] = []
        self.store_mask: list[bool] = []
        self.sample_sigmas: torch.Tensor | None = None
        self.last_step = 0
        self.entries: dict[Any, _Entry] = {}
        self.report = RunReport(schedule=config.schedule, reuse=config.reuse)

    # --- schedule and step resolution
    def _prepare(self, sample_sigmas: torch.Tensor) -> None:
        steps = int(sample_sigmas.shape[0]) - 1
        schedule = self.config.schedule
        if steps < 1:
            raise OTCacheRuntimeError("the sampler passed fewer than two sigmas; nothing to schedule")
        offset = pass_offset(sample_sigmas, self.model_sampling, schedule.steps) if steps < schedule.steps else None
        if offset is not None:  # one pass (KSamplerAdvanced start/end) of an N-step sampling: its slice
            self._prepare_pass(sample_sigmas, schedule, offset)
            return
        if steps != schedule.steps:
            if self.config.on_step_mismatch == "error":
                raise OTCacheRuntimeError(
                    f"the schedule was made for {schedule.steps} steps but the sampler runs {steps} steps. "
                    f"Set the sampler to {schedule.steps} steps, or set on_step_mismatch to 'resample'."
                )
            # A 1-step run simply computes its only step.
            schedule = resample(schedule, steps) if steps >= 2 else None
        self.schedule_for_run = schedule
        if schedule is None:
            self.compute_mask = [True]
        else:
            self.compute_mask = list(schedule.mask)
        # A computed evaluation stores its cache only if a skipped step follows it, so the
        # full schedule costs nothing but the step lookup.
        self.store_mask = [i + 1 < len(self.compute_mask) and not self.compute_mask[i + 1]
                           for i in range(len(self.compute_mask))]
        self.sample_sigmas = sample_sigmas.detach().to("cpu", torch.float64).clone()
        if schedule is not None:
            self.report.schedule = schedule

    def _prepare_pass(self, sample_sigmas: torch.Tensor, schedule: Schedule, offset: int) -> None:
        steps = int(sample_sigmas.shape[0]) - 1
        self.offset = offset
        self.schedule_for_run = schedule
        # A pass starts with an empty cache: its first step computes (forced) if the schedule skips it.
        self.compute_mask = list(schedule.mask[offset:offset + steps])
        self.store_mask = [i + 1 < steps and not self.compute_mask[i + 1] for i in range(steps)]
        self.sample_sigmas = sample_sigmas.detach().to("cpu", torch.float64).clone()
        self.report.span = (offset, offset + steps)

    def resolve_step(self, transformer_options: dict) -> int | None:
        """The step index this evaluation belongs to, or None outside a sampling run."""
        sample_sigmas = transformer_options.get("sample_sigmas")
        sigmas = transformer_options.get("sigmas")
        if sample_sigmas is None or sigmas is None:
            return None
        if self.sample_sigmas is None or self.sample_sigmas.shape[0] != sample_sigmas.shape[0]:
            self._prepare(sample_sigmas)
        self.last_step, _ = match_step(self.sample_sigmas, float(sigmas.reshape(-1)[0]), self.last_step)
        return self.last_step

    def wants_compute(self, step: int | None) -> bool:
        return step is None or self.compute_mask[step]

    def wants_store(self, step: int | None) -> bool:
        return step is not None and self.store_mask[step]

    # --- cache entries
    def to_cache(self, t: torch.Tensor) -> torch.Tensor:
        t = t.detach()
        if self.config.cache_device == "cpu":
            return t.to("cpu", copy=True)
        return t.clone()

    def lookup(self, key: Any, signature: tuple) -> torch.Tensor | None:
        entry = self.entries.get(key)
        if entry is None or entry.signature != signature:
            return None
        return entry.value

    def store(self, key: Any, signature: tuple, value: torch.Tensor) -> None:
        self.entries[key] = _Entry(self.to_cache(value), signature)

    def release(self) -> None:
        self.entries.clear()
        self.sample_sigmas = None


def match_step(sample_sigmas: torch.Tensor, sigma: float, last: int) -> tuple[int, bool]:
    """(step, matched) for an evaluation at ``sigma`` in a run over ``sample_sigmas``.

    Steps are matched with ``isclose``; an unmatched sigma (a midpoint) belongs to the last
    matched step. Only the evaluated sigmas (all but the last) are candidates: uni_pc
    overwrites the final one in place. Repeated sigmas take the first match not before
    the last step reached.
    """
    candidates = sample_sigmas[:-1]
    hits = torch.nonzero(torch.isclose(candidates, torch.tensor(sigma, dtype=candidates.dtype), rtol=1e-4, atol=1e-7))
    if hits.numel() == 0:
        return last, False
    matches = [int(i) for i in hits.reshape(-1)]
    later = [m for m in matches if m >= last]
    return (later[0] if later else matches[-1]), True


def pass_offset(sample_sigmas: torch.Tensor, model_sampling, steps: int) -> int | None:
    """Where a run over ``sample_sigmas`` sits in an ``steps``-step sampling, when it is one pass of it.

    Two KSamplerAdvanced passes over one sigma schedule (Wan 2.2's high- and low-noise
    experts: start/end at step s) each get a contiguous slice of the N-step sigmas. The
    slice is found by comparing its evaluated sigmas (all but the last, which a sampler
    may zero or overwrite) with the N-step sigmas of each ComfyUI scheduler (and their
    discard-penultimate variant); None when it is not such a slice (then the schedule is
    resampled, or refused, as for any other step count).
    """
    import comfy.samplers

    n = int(sample_sigmas.shape[0]) - 1
    if model_sampling is None or not 1 <= n < steps:
        return None
    head = sample_sigmas[:-1].detach().to("cpu", torch.float64)
    for name in comfy.samplers.SCHEDULER_NAMES:
        for full in _scheduler_sigmas(model_sampling, name, steps):
            for offset in range(steps - n + 1):
                if torch.allclose(full[offset:offset + n], head, rtol=1e-4, atol=1e-7):
                    return offset
    return None


def _scheduler_sigmas(model_sampling, name: str, steps: int) -> list[torch.Tensor]:
    import comfy.samplers

    try:
        plain = comfy.samplers.calculate_sigmas(model_sampling, name, steps).to("cpu", torch.float64)
        longer = comfy.samplers.calculate_sigmas(model_sampling, name, steps + 1).to("cpu", torch.float64)
    except Exception:  # a scheduler that needs more than the model sampling: not a candidate
        return []
    return [plain, torch.cat([longer[:-2], longer[-1:]])]  # KSampler's discard-penultimate samplers


def _signature(t: torch.Tensor) -> tuple:
    return (tuple(t.shape), t.dtype, t.device)


def _batch_keys(transformer_options: dict, batch: int) -> list[tuple[Any, slice]]:
    """(cache key, batch slice) for each conditioning entry in this call."""
    uuids = transformer_options.get("uuids") or transformer_options.get("cond_or_uncond")
    if not uuids or batch % len(uuids) != 0:
        return [("all", slice(0, batch))]
    per = batch // len(uuids)
    return [(u, slice(k * per, (k + 1) * per)) for k, u in enumerate(uuids)]


def _find_transformer_options(args: tuple, kwargs: dict) -> dict:
    # Same search as core EasyCache: DiTs pass it as the last positional arg, some as a kwarg.
    if args and isinstance(args[-1], dict):
        return args[-1]
    if isinstance(kwargs.get("transformer_options"), dict):
        return kwargs["transformer_options"]
    if len(args) >= 2 and isinstance(args[-2], dict):
        return args[-2]
    return {}


class _Call:
    """The decision for one model call (one batched chunk of one evaluation)."""

    __slots__ = ("compute", "store", "keys", "signatures", "cached", "entry")

    def __init__(self, compute: bool, store: bool, keys, signatures, cached):
        self.compute = compute
        self.store = store
        self.keys = keys  # [(cache key, batch slice)]
        self.signatures = signatures  # what each entry's cache must match: the probe slice
        self.cached = cached
        self.entry: torch.Tensor | None = None

    def store_all(self, state: CacheState, value: torch.Tensor) -> None:
        for (key, sl), signature in zip(self.keys, self.signatures):
            state.store(key, signature, value[sl])


@torch.compiler.disable
def _begin_call(state: CacheState, transformer_options: dict, probe: torch.Tensor) -> _Call:
    """Decide whether this call runs the transformer, and count it.

    Kept out of torch.compile: the step lookup is data dependent, and compiling it would
    recompile for every step (TorchCompileModel before or after this node).
    """
    step = state.resolve_step(transformer_options)
    keys = _batch_keys(transformer_options, probe.shape[0])
    signatures = [_signature(probe[sl]) for _, sl in keys]
    cached = None
    compute, store = state.wants_compute(step), state.wants_store(step)
    if not compute:
        cached = [state.lookup(key, sig) for (key, _), sig in zip(keys, signatures)]
        if any(c is None for c in cached):
            # No usable cache for some entry (a new shape or conditioning): run it, keep it.
            compute, store, cached = True, True, None
            state.report.forced += 1
    if compute:
        state.report.computed += 1
        if step is not None:
            state.report.steps_computed.add(step + state.offset)
    else:
        state.report.skipped += 1
        state.report.steps_skipped.add(step + state.offset)
    return _Call(compute, store, keys, signatures, cached)


def _gather(call: _Call, like: torch.Tensor) -> torch.Tensor:
    """The cached values of this call's entries as one new tensor in batch order."""
    return torch.cat([c.to(like.device, like.dtype, non_blocking=True) for c in call.cached], dim=0)


# ---------------------------------------------------------------- generic modes (DIFFUSION_MODEL)

def diffusion_model_wrapper(executor, *args, **kwargs):
    transformer_options = _find_transformer_options(args, kwargs)
    state: CacheState | None = transformer_options.get(STATE_KEY)
    x = args[0] if args else None
    if state is not None:
        state.report.model_calls += 1
    if state is None or state.config.reuse == "block" or not isinstance(x, torch.Tensor):
        return executor(*args, **kwargs)
    call = _begin_call(state, transformer_options, x)
    mode = state.config.reuse
    if not call.compute:
        cached = _gather(call, x)
        if mode == "output":
            return cached
        channels = cached.shape[1]
        return x[:, :channels] + cached  # a new tensor: never add into the model's input
    out = executor(*args, **kwargs)
    if call.store and isinstance(out, torch.Tensor):
        call.store_all(state, out if mode == "output" else out - x[:, : out.shape[1]])
    return out


# ---------------------------------------------------------------- block mode (dit patches)

@dataclasses.dataclass(frozen=True)
class BlockLayout:
    """The DiT's block patch keys in execution order, and whether the last runs on cat(txt, img)."""

    keys: tuple[tuple[str, int], ...]

    @property
    def first(self) -> tuple[str, int]:
        return self.keys[0]

    @property
    def last(self) -> tuple[str, int]:
        return self.keys[-1]

    @property
    def joint_tail(self) -> bool:
        return self.last[0] == "single_block"


BLOCK_FAMILIES = "FLUX, Chroma, HunyuanVideo, Qwen-Image, Wan 2.1/2.2 or LTX-Video"


def block_layout(diffusion_model: torch.nn.Module) -> BlockLayout | None:
    """The ``dit`` block patch keys of the DiTs block mode knows, in execution order; None for other models.

    FLUX, Chroma and HunyuanVideo: double blocks, then single blocks on ``cat(txt, img)``;
    Qwen-Image, Wan (2.1, 2.2 and their variants) and LTX-Video: one stack of blocks,
    patched as ``double_block`` (the image stream; the text is not changed by a block).
    """
    from comfy.ldm.chroma.model import Chroma
    from comfy.ldm.flux.model import Flux
    from comfy.ldm.hunyuan_video.model import HunyuanVideo
    from comfy.ldm.lightricks.model import LTXVModel
    from comfy.ldm.qwen_image.model import QwenImageTransformer2DModel
    from comfy.ldm.wan.model import WanModel

    if isinstance(diffusion_model, (Flux, HunyuanVideo, Chroma)):
        keys = [("double_block", i) for i in range(len(diffusion_model.double_blocks))]
        keys += [("single_block", i) for i in range(len(diffusion_model.single_blocks))]
    elif isinstance(diffusion_model, QwenImageTransformer2DModel):
        keys = [("double_block", i) for i in range(len(diffusion_model.transformer_blocks))]
    elif isinstance(diffusion_model, WanModel):
        keys = [("double_block", i) for i in range(len(diffusion_model.blocks))]
    elif isinstance(diffusion_model, LTXVModel):
        keys = [("double_block", i) for i in range(len(diffusion_model.transformer_blocks))]
    else:
        return None
    return BlockLayout(tuple(keys)) if keys else None


def _make_block_patch(key: tuple[str, int], layout: BlockLayout, previous: Callable | None):
    is_first, is_last = key == layout.first, key == layout.last

    def run_block(args, extra):
        if previous is not None:
            return previous(args, extra)
        return extra["original_block"](args)

    def otcache_block_patch(args: dict, extra: dict) -> dict:
        transformer_options = args.get("transformer_options") or {}
        state: CacheState | None = transformer_options.get(STATE_KEY)
        if state is None or state.config.reuse != "block":
            return run_block(args, extra)
        if is_first:
            call = _begin_call(state, transformer_options, args["img"])
            transformer_options[CALL_KEY] = call
            if call.compute and call.store:
                # A copy: FLUX blocks add into their inputs in place.
                call.entry = torch.cat((args["txt"], args["img"]), 1) if layout.joint_tail else args["img"].clone()
        call: _Call | None = transformer_options.get(CALL_KEY)
        if call is None:
            return run_block(args, extra)
        if call.compute:
            out = run_block(args, extra)
            if is_last and call.store:
                call.store_all(state, out["img"] - call.entry)
                call.entry = None
            return out
        if not is_last:
            return {k: args[k] for k in ("img", "txt") if k in args}
        out = {"img": args["img"] + _gather(call, args["img"])}
        if "txt" in args:
            out["txt"] = args["txt"]
        return out

    otcache_block_patch.otcache_previous = previous  # lets a second OTCache node replace, not stack
    return otcache_block_patch


def _install_block_patches(model: ModelPatcher, layout: BlockLayout) -> None:
    to = model.model_options["transformer_options"]
    existing = to.get("patches_replace", {}).get("dit", {})
    for kind, index in layout.keys:
        previous = existing.get((kind, index))
        if previous is not None and hasattr(previous, "otcache_previous"):
            previous = previous.otcache_previous
        model.set_model_patch_replace(_make_block_patch((kind, index), layout, previous), "dit", kind, index)


# ---------------------------------------------------------------- OUTER_SAMPLE: own the state

def outer_sample_wrapper(executor, *args, **kwargs):
    guider = executor.class_obj
    original_options = guider.model_options
    config: CacheConfig = original_options["transformer_options"][WRAPPER_KEY]
    guider.model_options = create_model_options_clone(original_options)
    state = CacheState(config, guider.model_patcher.get_model_object("model_sampling"))
    guider.model_options["transformer_options"][STATE_KEY] = state
    start = time.perf_counter()
    finished = False
    try:
        result = executor(*args, **kwargs)
        finished = True
        return result
    finally:
        state.report.seconds = time.perf_counter() - start
        state.release()
        guider.model_options = original_options
        if finished:  # a cancelled or stopped run has no K/N to check
            _publish(state.report, config)
        else:
            log.debug("OTCache: sampling stopped after %d evaluations; no report", state.report.evaluations)


def _publish(report: RunReport, config: CacheConfig) -> None:
    report.warning = check_honoured(report)
    text = report.text()
    log.log(logging.WARNING if report.warning else logging.DEBUG if config.quiet else logging.INFO, text)
    if config.on_report is not None:
        config.on_report(report)
    send_node_text(config.node_id, text)


# ---------------------------------------------------------------- entry point

def supports_block_mode(model: ModelPatcher) -> bool:
    return block_layout(model.get_model_object("diffusion_model")) is not None


def resolve_reuse(model: ModelPatcher, reuse: str) -> str:
    """``auto`` -> ``output``: the mode the trained tiny models favour (see the comment below)."""
    if reuse not in REUSE_MODES:
        raise OTCacheRuntimeError(f"unknown reuse mode {reuse!r}; choose one of {', '.join(REUSE_MODES)}")
    if reuse == "auto":
        # Measured on the trained tiny models (v7 / v8; benchmarks/tiny/README.md, held-out
        # prompts; published / uniform schedule PSNR at N = 28, K = 6 | N = 50, K = 10): FLUX
        # block 22.3 / 21.0 | 29.1 / 25.8, output 23.5 / 21.7 | 31.5 / 26.7, residual 25.7 /
        # 23.5 | 30.2 / 28.1; HunyuanVideo output 31.5 / 21.5 | 36.2 / 27.7, residual 27.7 / 23.1
        # | 31.6 / 28.5. Block is never best; residual wins on uniform schedules and at N = 28 on
        # the image models, output on the front-loaded schedules at N = 50 and on video, 0.6 dB
        # ahead on average; it keeps a flow model's velocity, which a straight path does not change.
        return "output"
    block_ok = supports_block_mode(model)
    if reuse == "block" and not block_ok:
        name = type(model.get_model_object("diffusion_model")).__name__
        raise OTCacheRuntimeError(
            f"block reuse needs a {BLOCK_FAMILIES} transformer; this model is {name}. "
            "Use reuse 'auto', 'output' or 'residual'."
        )
    return reuse


def apply_otcache(model: ModelPatcher, schedule: Schedule, reuse: str = "auto", cache_device: str = "model",
                  on_step_mismatch: str = "resample", node_id: str | None = None,
                  on_report: Callable[[RunReport], None] | None = None, quiet: bool = False) -> ModelPatcher:
    """Return a clone of ``model`` that samples with ``schedule``; ``model`` is left unchanged.

    Applying it to a model that already has OTCache replaces the earlier schedule.
    """
    if not isinstance(schedule, Schedule):
        raise OTCacheRuntimeError(f"schedule must be an OTCache Schedule, got {type(schedule).__name__}")
    if cache_device not in CACHE_DEVICES:
        raise OTCacheRuntimeError(f"cache_device must be one of {', '.join(CACHE_DEVICES)}, got {cache_device!r}")
    if on_step_mismatch not in STEP_MISMATCH:
        raise OTCacheRuntimeError(f"on_step_mismatch must be one of {', '.join(STEP_MISMATCH)}, got {on_step_mismatch!r}")
    mode = resolve_reuse(model, reuse)
    patched = model.clone()
    config = CacheConfig(schedule, mode, cache_device, on_step_mismatch, node_id, on_report, quiet)
    patched.model_options["transformer_options"][WRAPPER_KEY] = config
    for kind in (comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL):
        patched.remove_wrappers_with_key(kind, WRAPPER_KEY)
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, WRAPPER_KEY, outer_sample_wrapper)
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY, diffusion_model_wrapper)
    if mode == "block":
        _install_block_patches(patched, block_layout(patched.get_model_object("diffusion_model")))
    return patched
