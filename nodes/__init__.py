"""ComfyUI adapters for OTCache: V3 nodes, the caching runtime, and test/demo model builders.

Everything here may import ComfyUI; the algorithms live in ``otcache_core``.
"""
