"""OTCache algorithms: schedules, warps, optimal-transport interpolation, graph and anchor search.

Pure Python / numpy / torch. Nothing here imports ComfyUI, so it can be read, tested and
reused on its own. Modules import each other relatively, so the package works both as
``otcache_core`` (repository root on ``sys.path``) and inside the ComfyUI pack.
"""
