"""Searched schedules that travel with a shared workflow.

After a run, OTCache Reference and Anchor Search send a *saved result* in their ``ui``
payload (``otcache_saved``): the schedule, what it was computed for (:func:`computed_for`:
model weights fingerprint, sampler, scheduler, steps, cfg, budget and the search's own
settings) and what the node needs to show it again. The frontend keeps it in the node's
``properties`` (``otcache_last_run.result``), so it is saved in the workflow file.

When the workflow runs on another machine, without calibration files, the node finds its
saved result in the workflow the frontend sent along (the ``extra_pnginfo`` hidden input)
and, when the result was computed for the same inputs, returns it at once instead of
calibrating or searching (:func:`find_saved`). The conditioning (prompt) and the latent are
not part of the match: a schedule carries over between prompts, as the shipped presets do;
the node says whether the prompt was the same.
"""
from __future__ import annotations

import math
import time
from typing import Any

from ..otcache_core.schedule import Schedule, ScheduleError

FORMAT = "otcache.saved-result"
LAST_RUN_PROPERTY = "otcache_last_run"  # web/otcache.js keeps the node's last run here
SAVED_CHOICES = ("use if it matches", "recompute")


def computed_for(model_fingerprint: str, sampler: str, scheduler: str, steps: int, cfg: float, budget: int,
                 **settings: Any) -> dict:
    """What a result depends on, as JSON values: compared key by key with a saved result's."""
    return {"model": model_fingerprint, "sampler": sampler, "scheduler": scheduler, "steps": int(steps),
            "cfg": float(cfg), "budget": int(budget), **settings}


def saved_record(node_type: str, schedule: Schedule, for_: dict, prompt: str, **extra: Any) -> dict:
    """The record a node sends with its output (``ui["otcache_saved"]``)."""
    return {"format": FORMAT, "version": 1, "node": node_type, "schedule": schedule.to_dict(), "for": for_,
            "prompt": prompt, "computed": time.strftime("%Y-%m-%d %H:%M:%S"), **extra}


def _workflow_node(extra_pnginfo: Any, node_id: Any) -> dict | None:
    workflow = extra_pnginfo.get("workflow") if isinstance(extra_pnginfo, dict) else None
    nodes = workflow.get("nodes") if isinstance(workflow, dict) else None
    if not isinstance(nodes, list) or node_id is None:
        return None
    wanted = str(node_id).split(":")[-1]  # a node inside a subgraph has a path id
    return next((n for n in nodes if isinstance(n, dict) and str(n.get("id")) == wanted), None)


def saved_in_workflow(extra_pnginfo: Any, node_id: Any, node_type: str) -> dict | None:
    """The saved result of node ``node_id`` in the workflow the frontend sent, or None (also when malformed)."""
    node = _workflow_node(extra_pnginfo, node_id)
    if node is None or node.get("type") != node_type:
        return None
    last_run = (node.get("properties") or {}).get(LAST_RUN_PROPERTY)
    record = last_run.get("result") if isinstance(last_run, dict) else None
    if not isinstance(record, dict) or record.get("format") != FORMAT or record.get("node") != node_type:
        return None
    return record


def find_saved(choice: str, extra_pnginfo: Any, node_id: Any, node_type: str, for_: dict) -> tuple[Schedule, dict] | None:
    """(schedule, record) when ``choice`` allows it and the workflow holds a result computed for ``for_``."""
    if choice not in SAVED_CHOICES:
        raise ValueError(f"saved_result must be one of {', '.join(SAVED_CHOICES)}; got {choice!r}")
    if choice != "use if it matches":
        return None
    record = saved_in_workflow(extra_pnginfo, node_id, node_type)
    if record is None or not _same(record.get("for"), for_):
        return None
    try:
        return Schedule.from_json(record["schedule"]), record
    except (ScheduleError, KeyError, TypeError):
        return None  # a damaged record: compute as if there were none


def _same(saved: Any, wanted: dict) -> bool:
    if not isinstance(saved, dict) or set(saved) != set(wanted):
        return False
    for key, value in wanted.items():
        other = saved[key]
        if isinstance(value, float) and isinstance(other, (int, float)):
            if not math.isclose(value, float(other), rel_tol=1e-9, abs_tol=1e-12):
                return False
        elif other != value:
            return False
    return True


def used_saved_text(record: dict, same_prompt: bool) -> str:
    prompt = "the same prompt" if same_prompt else "another prompt (a schedule carries over between prompts)"
    return (f"used the saved result from the workflow (computed {record.get('computed', '?')} for this model, "
            f"sampler, scheduler, steps and budget, with {prompt}): no calibration ran. Set saved_result to "
            "'recompute' to compute it here.")


def costs_to_json(costs) -> list:
    """A cost matrix as JSON rows (inf, i.e. forbidden edges, as null)."""
    return [[None if not math.isfinite(float(c)) else float(c) for c in row] for row in costs]


def costs_from_json(rows: list):
    import numpy as np

    return np.array([[math.inf if c is None else float(c) for c in row] for row in rows], dtype=np.float64)
