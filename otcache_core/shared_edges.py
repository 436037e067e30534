"""One calibration shared by several workers through a database (PostgreSQL; any SQLAlchemy URL).

A calibration is split into *units* (an edge of a seed, or a seed's arrival pass), each
computed by one worker. Two tables, keyed by the calibration key:

- ``otcache_calibration_claims (key, unit, owner, beat)``: who computes a unit. A worker
  claims a unit by inserting the row; a unit whose owner is dead (same host: its process
  is gone) or silent (no heartbeat for ``stale_seconds``: another host) is taken over
  with a compare-and-swap on the owner, so exactly one worker wins it.
- ``otcache_calibration_results (key, unit, payload, worker)``: the unit's result as JSON,
  and who computed it. A result is written once: the primary key refuses a second.

Every worker reads all results back into its own matrix, so each ends with the same one.
"""
from __future__ import annotations

import json
import threading
import time
from typing import Any

import sqlalchemy as sa

from .anchor import owner_is_dead, owner_token

STALE_SECONDS = 60.0  # a claim whose owner has not beaten for this long is taken over
BEAT_SECONDS = 10.0

_META = sa.MetaData()
CLAIMS = sa.Table("otcache_calibration_claims", _META,
                  sa.Column("key", sa.String(64), primary_key=True), sa.Column("unit", sa.String(64), primary_key=True),
                  sa.Column("owner", sa.Text, nullable=False), sa.Column("beat", sa.Float, nullable=False))
RESULTS = sa.Table("otcache_calibration_results", _META,
                   sa.Column("key", sa.String(64), primary_key=True), sa.Column("unit", sa.String(64), primary_key=True),
                   sa.Column("payload", sa.Text, nullable=False), sa.Column("worker", sa.Text, nullable=False))


class SharedEdgesError(RuntimeError):
    """The shared calibration's database cannot be used; the message names the URL and the fix."""


class SharedEdges:
    """This worker's view of one shared calibration (``key``) in the database at ``url``."""

    def __init__(self, url: str, key: str, stale_seconds: float = STALE_SECONDS):
        try:
            self.engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg2://", 1)
                                           if url.startswith("postgresql://") else url)
            _META.create_all(self.engine)
        except Exception as exc:  # bad URL, no driver, server down: one message
            raise SharedEdgesError(f"cannot open the calibration storage {url.split('@')[-1]!r}: {exc}. Use an "
                                   "SQLAlchemy URL such as postgresql://user@host/db, or leave storage empty") from None
        self.key, self.stale = key, float(stale_seconds)
        self.me = json.dumps(owner_token(), sort_keys=True)
        self.mine: set[str] = set()
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._beat_loop, daemon=True)
        self._beat.start()

    def results(self) -> dict[str, Any]:
        """Every unit computed so far, by anyone: unit -> payload."""
        with self.engine.connect() as c:
            rows = c.execute(sa.select(RESULTS.c.unit, RESULTS.c.payload).where(RESULTS.c.key == self.key))
            return {unit: json.loads(payload) for unit, payload in rows}

    def claim(self, unit: str) -> bool:
        """Whether this worker is to compute ``unit``: unclaimed, or its owner is dead or silent."""
        now = time.time()
        with self.engine.begin() as c:
            if c.execute(sa.select(RESULTS.c.unit).where(RESULTS.c.key == self.key, RESULTS.c.unit == unit)).first():
                return False
            row = c.execute(sa.select(CLAIMS.c.owner, CLAIMS.c.beat)
                            .where(CLAIMS.c.key == self.key, CLAIMS.c.unit == unit)).first()
            if row is None:
                try:
                    with c.begin_nested():
                        c.execute(CLAIMS.insert().values(key=self.key, unit=unit, owner=self.me, beat=now))
                except sa.exc.IntegrityError:  # another worker inserted it first
                    return False
                self.mine.add(unit)
                return True
            owner, beat = row
            if owner == self.me:
                self.mine.add(unit)
                return True
            if not (owner_is_dead(json.loads(owner)) or now - beat > self.stale):
                return False
            taken = c.execute(CLAIMS.update().where(CLAIMS.c.key == self.key, CLAIMS.c.unit == unit,
                                                    CLAIMS.c.owner == owner).values(owner=self.me, beat=now))
            if taken.rowcount == 1:
                self.mine.add(unit)
                return True
            return False

    def put(self, unit: str, payload: Any) -> None:
        """Store this worker's result of ``unit`` (claimed by it)."""
        with self.engine.begin() as c:
            c.execute(RESULTS.insert().values(key=self.key, unit=unit, payload=json.dumps(payload), worker=self.me))
        self.mine.discard(unit)

    def workers(self) -> dict[str, int]:
        """Units computed per worker (``host:pid``)."""
        with self.engine.connect() as c:
            rows = c.execute(sa.select(RESULTS.c.worker, sa.func.count()).where(RESULTS.c.key == self.key)
                             .group_by(RESULTS.c.worker))
            return {_label(worker): int(n) for worker, n in rows}

    def close(self) -> None:
        self._stop.set()
        self._beat.join(timeout=5)
        self.engine.dispose()

    def _beat_loop(self) -> None:
        while not self._stop.wait(BEAT_SECONDS):
            if self.mine:
                try:
                    with self.engine.begin() as c:
                        c.execute(CLAIMS.update().where(CLAIMS.c.key == self.key, CLAIMS.c.owner == self.me)
                                  .values(beat=time.time()))
                except Exception:  # a missed beat only risks a takeover; the next one retries
                    pass


def _label(owner: str) -> str:
    token = json.loads(owner)
    return f"{token.get('host')}:{token.get('pid')}"
