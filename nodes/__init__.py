"""The V3 node classes of OTCache, and nothing else: thin adapters over ``otcache_comfy`` (ComfyUI-side
library) and ``otcache_core`` (the algorithms); the demo nodes adapt the ``demo`` package.
"""
