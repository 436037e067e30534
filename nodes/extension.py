"""The ComfyExtension that registers the OTCache nodes (V3 API)."""
from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from .cached_model import OTCacheCachedModel
from .demo import OTCacheDemoModel
from .schedule_nodes import (
    OTCacheBudgetSlider,
    OTCacheSchedulePreset,
    OTCacheScheduleFromText,
    OTCacheScheduleLoad,
    OTCacheScheduleSave,
)


class OTCacheExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [
            OTCacheSchedulePreset,
            OTCacheScheduleFromText,
            OTCacheScheduleLoad,
            OTCacheScheduleSave,
            OTCacheBudgetSlider,
            OTCacheCachedModel,
            OTCacheDemoModel,
        ]
