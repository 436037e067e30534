"""ComfyUI types shared by the OTCache nodes."""
from comfy_api.latest import io

CATEGORY = "OTCache"

# The value that travels on an OTCACHE_SCHEDULE link is an ``otcache_core.schedule.Schedule``.
OTSchedule = io.Custom("OTCACHE_SCHEDULE")
