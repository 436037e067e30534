"""An append-only journal of measured edges, so no finished edge is lost to a crash or a damaged file.

The calibration file (:class:`.edge_costs.CostMatrix`) is rewritten whole, every few
seconds at most. Between rewrites each measured edge is appended here as one line of
JSON, flushed and fsynced before the next edge starts, so a ``kill -9`` loses at most
the edge in flight. The journal holds *every* edge of the calibration, not only those
since the last rewrite: when the matrix file itself is damaged (truncated, a changed
header) the journal alone rebuilds what was measured.

Format: the first line is a header naming the settings
``{"format": "otcache.edge_journal", "version": 1, "steps", "max_skip", "seeds", "edge_cost"}``;
each further line is ``{"s": seed_index, "i": i, "j": j, "cost": c}``. A line that does
not parse (the torn last line of a killed write, or damage) is skipped and counted.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from .edge_costs import CostMatrix, EdgeCostError

FORMAT = "otcache.edge_journal"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Replay:
    """What reading a journal into a matrix did."""

    applied: int  # edges the matrix did not have yet
    skipped: int  # lines that did not parse or did not fit


def _header(matrix: CostMatrix) -> dict:
    return {"format": FORMAT, "version": FORMAT_VERSION, "steps": matrix.steps, "max_skip": matrix.max_skip,
            "seeds": matrix.seeds, "edge_cost": matrix.edge_cost}


class EdgeJournal:
    """The journal at ``path`` for one calibration's matrix (see the module docstring)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def start(self, matrix: CostMatrix) -> None:
        """Begin a journal for ``matrix``'s settings, unless one for the same settings exists."""
        if self._header_matches(matrix):
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "w", encoding="utf-8") as stream:
            stream.write(json.dumps(_header(matrix)) + "\n")
            stream.flush()
            os.fsync(stream.fileno())

    def append(self, seed: int, i: int, j: int, cost: float) -> None:
        """One measured edge, durable when this returns."""
        with open(self.path, "a", encoding="utf-8") as stream:
            stream.write(json.dumps({"s": int(seed), "i": int(i), "j": int(j), "cost": float(cost)}) + "\n")
            stream.flush()
            os.fsync(stream.fileno())

    def _lines(self) -> list[str]:
        try:
            return self.path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return []

    def _header_matches(self, matrix: CostMatrix) -> bool:
        lines = self._lines()
        if not lines:
            return False
        try:
            return json.loads(lines[0]) == _header(matrix)
        except ValueError:
            return False

    def replay(self, matrix: CostMatrix) -> Replay:
        """Record every journalled edge ``matrix`` lacks; a journal for other settings applies nothing."""
        if not self._header_matches(matrix):
            return Replay(0, 0)
        applied = skipped = 0
        for line in self._lines()[1:]:
            try:
                entry = json.loads(line)
                s, i, j, cost = int(entry["s"]), int(entry["i"]), int(entry["j"]), float(entry["cost"])
                if not math.isfinite(cost):
                    raise ValueError(cost)
                if 0 <= s < matrix.seeds and 0 <= i < j < matrix.steps and matrix.done[s, i, j]:
                    continue
                matrix.record(s, i, j, cost)
                applied += 1
            except (ValueError, KeyError, TypeError, EdgeCostError):
                skipped += 1
        return Replay(applied, skipped)
