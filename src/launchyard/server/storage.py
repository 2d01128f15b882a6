"""Run outputs (images, checkpoints, metrics) kept in the server's data folder.

Paths are relative POSIX paths inside one run's folder; anything that could
escape it (absolute paths, `..`, empty parts) is refused.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path, PurePosixPath
from typing import IO

from launchyard.errors import InvalidInputError, NotFoundError

MAX_PATH_CHARS = 1000


def safe_relpath(raw: str) -> PurePosixPath:
    path = PurePosixPath(raw)
    if (
        not raw
        or len(raw) > MAX_PATH_CHARS
        or path.is_absolute()
        or any(part in ("", ".", "..") for part in raw.split("/"))
        or "\x00" in raw
    ):
        raise InvalidInputError(
            f"output path {raw!r} is not allowed: use a relative path like "
            "'images/sample-0.png' with no '..'",
            fields={"field": "path", "value": raw},
        )
    return path


class FileStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _run_dir(self, run_id: str) -> Path:
        return self.root / run_id

    def put(self, run_id: str, raw_path: str, chunks: IO[bytes]) -> int:
        target = self._run_dir(run_id).joinpath(*safe_relpath(raw_path).parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.part")
        with open(tmp, "wb") as fh:
            shutil.copyfileobj(chunks, fh)
            size = fh.tell()
        os.replace(tmp, target)  # a reader never sees half a file
        return size

    def list(self, run_id: str) -> list[tuple[str, int]]:
        base = self._run_dir(run_id)
        if not base.is_dir():
            return []
        found = []
        for path in sorted(base.rglob("*")):
            if path.is_file() and not path.name.startswith("."):
                found.append((path.relative_to(base).as_posix(), path.stat().st_size))
        return found

    def path(self, run_id: str, raw_path: str) -> Path:
        target = self._run_dir(run_id).joinpath(*safe_relpath(raw_path).parts)
        if not target.is_file():
            raise NotFoundError(
                f"run '{run_id}' has no output '{raw_path}'", fields={"path": raw_path}
            )
        return target
