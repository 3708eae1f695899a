"""On-disk measurement cache in SQLite, keyed by (arch id, device fingerprint, runtime version)."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from pathlib import Path

from edgekd.core.measurement import Measurement


class MeasurementCache:
    """Survives crashes (each put is its own transaction) and concurrent writers (SQLite locking)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        with self._connect() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS latency (arch_id TEXT, device TEXT, runtime TEXT, measurement TEXT,"
                " PRIMARY KEY (arch_id, device, runtime))"
            )

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=60)

    def get(self, arch_id: str, device: str, runtime: str) -> Measurement | None:
        with self._connect() as db:
            row = db.execute(
                "SELECT measurement FROM latency WHERE arch_id=? AND device=? AND runtime=?", (arch_id, device, runtime)
            ).fetchone()
        return Measurement(**json.loads(row[0])) if row else None

    def put(self, arch_id: str, device: str, m: Measurement) -> None:
        with self._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO latency VALUES (?, ?, ?, ?)",
                (arch_id, device, m.runtime, json.dumps(dataclasses.asdict(m))),
            )
