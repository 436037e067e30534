"""Developer tools shared by the tests, the benchmarks and ``scripts/demo``: not part of the pack.

- :mod:`.host`: where ComfyUI lives, importing it and the pack in-process;
- :mod:`.server`: ComfyUI's ``main.py`` as a child process (start, queue, wait, stop);
- :mod:`.workflow`: a UI-format workflow to the API prompt the frontend would queue.

``scripts/setup_host.py`` puts the repository root on the venv's import path (a ``.pth``
file), so ``import devtools`` works from any script run with ``.venv/bin/python``.
"""
