"""ComfyUI-OTCache: step-level caching for FLUX.1 [dev], Qwen-Image, HunyuanVideo and any DiT.

ComfyUI loads this file as a package and calls ``comfy_entrypoint`` (V3 API). The node
modules are imported only there, so ``otcache_core`` (the algorithms) can be imported
and tested without ComfyUI. No ``NODE_CLASS_MAPPINGS`` on purpose: ComfyUI would then
take the V1 path and ignore the entry point.
"""

WEB_DIRECTORY = "./web"


async def comfy_entrypoint():
    from .nodes.extension import OTCacheExtension

    return OTCacheExtension()
