"""What the agent holds, on disk, so a restarted agent adopts its runs instead of losing them.

One small JSON file per run, replaced atomically on every change.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class InFlight:
    run_id: str
    attempt: int
    lease_token: str
    resource: str
    claimed: dict[str, Any]
    """The claim as the server sent it: enough to relaunch idempotently."""
    gpu_ids: list[int] = field(default_factory=list)
    handle: dict[str, Any] | None = None
    log_offset: int = 0
    cancel_requested: bool = False
    reported_running: bool = False
    running_since: float | None = None
    """Wall-clock time of the `running` report: where the run's time limit counts from."""
    limit_hit: bool = False
    """Stopped at its time limit: its end is reported as failed for that reason."""
    ended: bool = False
    """The attempt ended and its end is being reported: it holds no slot or GPU."""
    pending_reason: str | None = None


class Store:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, run_id: str) -> Path:
        return self.root / f"{run_id}.json"

    def save(self, rec: InFlight) -> None:
        tmp = self._path(rec.run_id).with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(rec)))
        os.replace(tmp, self._path(rec.run_id))

    def delete(self, run_id: str) -> None:
        self._path(run_id).unlink(missing_ok=True)

    def load_all(self) -> list[InFlight]:
        records = []
        for path in sorted(self.root.glob("*.json")):
            try:
                records.append(InFlight(**json.loads(path.read_text())))
            except (ValueError, TypeError):
                path.unlink(missing_ok=True)  # a torn write cannot happen (os.replace); junk can
        return records
