"""Slurm's own command-line tools, run as asyncio subprocesses (never a re-implementation).

The agent runs on a login node: ``sbatch``, ``squeue``, ``scontrol`` and ``scancel``
talk to the cluster's controller for it. Where the tools or the controller are
missing, the error says what to install or set.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from launchyard.errors import BackendError, MissingDependencyError

TOOLS = ("sbatch", "squeue", "scontrol", "scancel", "sinfo")
INSTALL_HINT = (
    "install Slurm's client tools (Debian/Ubuntu: `apt-get install slurm-client`) and point "
    "SLURM_CONF (or the agent's `backends: {slurm: {slurm_conf: PATH}}`) at the cluster's "
    "slurm.conf"
)


class SlurmCommands:
    """Finds the tools once and runs them with the cluster's ``SLURM_CONF``."""

    def __init__(
        self, *, bin_dir: str | None, slurm_conf: str | None, timeout_s: float = 30.0
    ) -> None:
        self.paths = {tool: _find(tool, bin_dir) for tool in TOOLS}
        self.env = dict(os.environ)
        if slurm_conf:
            self.env["SLURM_CONF"] = str(Path(slurm_conf).expanduser())
        self.timeout_s = timeout_s

    async def run(
        self,
        tool: str,
        args: Sequence[str],
        *,
        check: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> tuple[int, str]:
        """``(exit status, stdout)``; a failure with ``check`` raises BackendError with stderr."""
        try:
            proc = await asyncio.create_subprocess_exec(
                self.paths[tool],
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=dict(env if env is not None else self.env),
            )
        except OSError as exc:
            raise MissingDependencyError(f"could not run {tool}: {exc}; {INSTALL_HINT}") from exc
        try:
            out, err = await asyncio.wait_for(proc.communicate(), self.timeout_s)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise BackendError(
                f"`{tool}` did not answer within {self.timeout_s:g} s: is slurmctld reachable?"
            ) from None
        returncode = proc.returncode if proc.returncode is not None else -1
        if check and returncode != 0:
            raise BackendError(f"`{tool} {' '.join(args)}` failed: {_last_line(err)}")
        return returncode, out.decode(errors="replace")

    def run_sync(self, tool: str, args: Sequence[str]) -> tuple[int, str]:
        """The same, blocking (for ``doctor`` checks): ``(status, stdout or stderr)``."""
        try:
            done = subprocess.run(
                [self.paths[tool], *args],
                capture_output=True,
                text=True,
                env=self.env,
                timeout=self.timeout_s,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return -1, str(exc)
        return done.returncode, done.stdout if done.returncode == 0 else _last_line(done.stderr)


def _find(tool: str, bin_dir: str | None) -> str:
    path = shutil.which(tool, path=str(Path(bin_dir).expanduser()) if bin_dir else None)
    if path is None:
        where = f"in {bin_dir}" if bin_dir else "on PATH"
        raise MissingDependencyError(
            f"Slurm's `{tool}` is not {where}: {INSTALL_HINT}", fields={"tool": tool}
        )
    return path


def _last_line(stderr: bytes | str) -> str:
    """What a tool said on stderr, on one line (Slurm's errors are short)."""
    text = stderr.decode(errors="replace") if isinstance(stderr, bytes) else stderr
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return "; ".join(lines)[-1000:] if lines else "no error output"
