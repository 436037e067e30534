"""Show text on a node in the ComfyUI frontend, when a server is running."""
from __future__ import annotations

import logging
import sys

log = logging.getLogger("otcache")


def prompt_server():
    """The running PromptServer, or None (scripts, tests and benchmarks call nodes directly).

    A running ComfyUI has imported its ``server`` module; never import it here (slow, and
    without a server there is nobody to show the text to).
    """
    return getattr(getattr(sys.modules.get("server"), "PromptServer", None), "instance", None)


def send_node_text(node_id: str | None, text: str) -> bool:
    """Show ``text`` on node ``node_id`` (``send_progress_text``); True when it was sent."""
    server = prompt_server()
    if node_id is None or server is None:
        return False
    try:
        server.send_progress_text(text, node_id)
    except Exception as error:  # showing text must never fail a node or a sampling run
        log.debug("OTCache: could not send progress text: %s", error)
        return False
    return True


def node_id_of(cls) -> str | None:
    """The id of the node a V3 node class is executing for (None when called from Python)."""
    hidden = getattr(cls, "hidden", None)
    return getattr(hidden, "unique_id", None) if hidden is not None else None


def node_ui(cls, schedule, text: str, **extra: list) -> dict:
    """The ``ui`` payload of a node showing ``text`` (and ``schedule``), also sent as progress text.

    ``ui["text"]`` is the text, ``ui["otcache_schedule"]`` the schedule's JSON object
    (empty list when there is none), which the frontend draws as a strip; ``extra`` adds
    more entries (``otcache_saved``, ``otcache_curve``). Progress text is sent only when a
    server runs and the node knows its id.
    """
    send_node_text(node_id_of(cls), text)
    return {"text": [text], "otcache_schedule": [schedule.to_dict()] if schedule is not None else [], **extra}
