"""The ComfyExtension that registers the OTCache nodes (V3 API)."""
from __future__ import annotations

import logging

from comfy_api.latest import ComfyExtension, io

from ..otcache_comfy.routes import register_routes
from .anchor_search import OTCacheAnchorSearch
from .cached_model import OTCacheCachedModel
from .demo import OTCacheDemoModel, OTCacheTinyFlux
from .reference import OTCacheReference
from .schedule_nodes import (
    OTCacheBudgetSlider,
    OTCacheExpertSplit,
    OTCacheScheduleFromText,
    OTCacheScheduleLoad,
    OTCacheSchedulePreset,
    OTCacheScheduleSave,
)

log = logging.getLogger("otcache")


class OTCacheExtension(ComfyExtension):
    async def on_load(self) -> None:
        # The frontend's live previews (web/otcache.js). Guarded: without a running
        # PromptServer (tests, scripts) nothing is registered and nothing fails.
        try:
            register_routes()
        except Exception as error:  # a route problem must never hide the nodes
            log.warning("OTCache: preview routes not registered: %s", error)

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [
            OTCacheSchedulePreset,
            OTCacheScheduleFromText,
            OTCacheScheduleLoad,
            OTCacheScheduleSave,
            OTCacheReference,
            OTCacheAnchorSearch,
            OTCacheBudgetSlider,
            OTCacheExpertSplit,
            OTCacheCachedModel,
            OTCacheDemoModel,
            OTCacheTinyFlux,
        ]
