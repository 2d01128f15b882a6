"""The files of one attempt, in ``<shared_dir>/jobs/<run_id>-<attempt>/`` (blocking I/O).

The backend calls these through ``asyncio.to_thread``. The folder is on a filesystem
the compute nodes share: the job reads ``config.json`` and writes ``output.log`` there.
"""

from __future__ import annotations

import codecs
import contextlib
import fcntl
import json
import os
import shlex
from pathlib import Path
from typing import Any

from launchyard.backends.base import LaunchSpec, LogChunk
from launchyard.backends.slurm import config as cfg
from launchyard.backends.slurm.states import JobRecord, find_in_jobcomp
from launchyard.errors import InvalidInputError

MAX_LOG_CHUNK = 1024 * 1024
"""Most bytes of output returned by one ``read_log`` call."""
JOBCOMP_TAIL_BYTES = 16 * 1024 * 1024
"""How much of the end of the job-completion log is searched for a forgotten job."""


def write_files(spec: LaunchSpec, job_dir: Path) -> Path:
    """The batch script (mode 0700: it holds the environment) and the run config."""
    for stale in ("end.json", "output.log"):
        (job_dir / stale).unlink(missing_ok=True)
    try:
        config_text = json.dumps(spec.run_config)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"the run config is not JSON: {exc}") from exc
    (job_dir / "config.json").write_text(config_text)
    (job_dir / "work").mkdir(exist_ok=True)
    env = {str(k): cfg.env_value(v) for k, v in spec.config.get("env", {}).items()}
    env.update({str(k): str(v) for k, v in spec.env.items()})
    env["LAUNCHYARD_RUN_ID"] = spec.run_id
    env["LAUNCHYARD_CONFIG_FILE"] = str(job_dir / "config.json")
    for name in env:
        if not cfg.ENV_NAME.fullmatch(name):
            raise InvalidInputError(f"env name {name!r} is not a shell variable name")
    lines = [
        "#!/bin/sh",
        f"# launchyard run {spec.run_id}, attempt {spec.attempt}: "
        f"{spec.entity}/{spec.project} on queue {spec.queue}",
        *(f"#SBATCH {option}" for option in spec.config.get("extra", [])),
        *(f"export {name}={shlex.quote(value)}" for name, value in env.items()),
        "exec " + shlex.join(spec.command),
    ]
    script = job_dir / "job.sh"
    script.unlink(missing_ok=True)
    fd = os.open(script, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o700)  # it may hold secrets
    with os.fdopen(fd, "w") as out:
        out.write("\n".join(lines) + "\n")
    return script


def lock(job_dir: Path) -> Any:
    job_dir.mkdir(parents=True, exist_ok=True)
    handle = open(job_dir / ".launch.lock", "a")  # noqa: SIM115 - closed by the caller
    fcntl.flock(handle, fcntl.LOCK_EX)
    return handle


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def write_json(path: Path, value: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)


def read_log(job_dir: Path, offset: int) -> LogChunk:
    finished = (job_dir / "end.json").exists()  # before reading: then the log is whole
    try:
        with open(job_dir / "output.log", "rb") as log:
            log.seek(offset)
            data = log.read(MAX_LOG_CHUNK)
    except OSError:
        return LogChunk(text="", next_offset=offset)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    text = decoder.decode(data, final=False)
    held = len(decoder.getstate()[0])  # an incomplete character, kept for the next call
    if held and finished and len(data) < MAX_LOG_CHUNK:
        text += decoder.decode(b"", final=True)
        held = 0
    return LogChunk(text=text, next_offset=offset + len(data) - held)


def search_jobcomp(path: Path, job_id: str, name: str) -> JobRecord | None:
    with contextlib.suppress(OSError), open(path, "rb") as log:
        log.seek(0, os.SEEK_END)
        log.seek(max(0, log.tell() - JOBCOMP_TAIL_BYTES))
        return find_in_jobcomp(log.read().decode(errors="replace"), job_id, name)
    return None
