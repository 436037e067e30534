"""The ComfyUI-side library: what the nodes adapt, written against ComfyUI but holding no node class.

- :mod:`.cache_runtime`: the step cache (wrappers, block patches, reuse modes, counts);
- :mod:`.calibration`: sampling set-ups, fingerprints, trajectories and measured edge costs;
- :mod:`.schedule_files`: the ``models/otcache_schedules`` folder and safe saving;
- :mod:`.slider`: the Budget Slider's schedule for a speedup (node and preview route alike);
- :mod:`.plots`: pictures for the nodes (strips, heatmaps, curves);
- :mod:`.routes`: the HTTP routes the frontend calls;
- :mod:`.ui_text`: text and payloads shown on a node.

Imports run one way: ``nodes`` -> ``otcache_comfy`` -> ``otcache_core``.
"""
