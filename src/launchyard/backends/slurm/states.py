"""What Slurm says about a job, parsed, and turned into an :class:`Observation`.

Three sources, in the order the backend asks them: ``squeue`` (every job the
controller holds, including ended ones for ``MinJobAge`` seconds), ``scontrol show
job`` (one job, same lifetime) and the job-completion log (``jobcomp/filetxt``),
which keeps the end of every job after the controller forgot it. Pure functions.
"""

from __future__ import annotations

import re
import signal
from dataclasses import dataclass

from launchyard.backends.base import Observation, Phase

SQUEUE_FORMAT = "JobID:|,Name:|,State:|,Reason:|,exit_code:|"
"""``squeue -O`` fields, '|'-separated (no size given: nothing is cut or padded)."""

PENDING_STATES = frozenset(
    {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SPECIAL_EXIT"}
)
RUNNING_STATES = frozenset(
    {"RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "RESIZING"}
)

PENDING_REASONS = {
    "None": "queued, waiting for the scheduler",
    "Resources": "waiting for resources",
    "Priority": "waiting behind higher-priority jobs",
    "Dependency": "waiting for a dependency",
    "BeginTime": "waiting for its start time",
    "Reservation": "waiting for its reservation",
    "Licenses": "waiting for licenses",
    "JobHeldUser": "held by a user (`scontrol release JOBID`)",
    "JobHeldAdmin": "held by an administrator",
    "ReqNodeNotAvail": "the requested nodes are not available",
    "NodeDown": "a node it needs is down",
    "PartitionDown": "the partition is down",
    "PartitionInactive": "the partition is inactive",
    "PartitionNodeLimit": "it asks for more nodes than the partition allows",
    "PartitionTimeLimit": "its time limit is above the partition's",
    "BadConstraints": "its constraints can never be met",
    "QOSMaxGRESPerUser": "the QOS limit on GPUs (GRES) per user is reached",
    "QOSMaxJobsPerUserLimit": "the QOS limit on jobs per user is reached",
    "QOSGrpGRES": "the QOS group limit on GPUs (GRES) is reached",
    "AssocGrpGRES": "the account's limit on GPUs (GRES) is reached",
    "AssocMaxJobsLimit": "the account's limit on jobs is reached",
    "Cleaning": "its node is still being cleaned up after a previous job",
    "launch failed requeued held": "launch failed; requeued and held",
}

_END_REASONS = {
    "TIMEOUT": (Phase.FAILED, "time limit reached; raise `time` in the queue config"),
    "OUT_OF_MEMORY": (Phase.FAILED, "out of memory; raise `mem` in the queue config"),
    "DEADLINE": (Phase.FAILED, "its deadline passed before it could run"),
    "NODE_FAIL": (Phase.PREEMPTED, "a node failed; the run goes back to its queue"),
    "BOOT_FAIL": (Phase.PREEMPTED, "a node failed to boot; the run goes back to its queue"),
    "PREEMPTED": (Phase.PREEMPTED, "preempted; the run goes back to its queue"),
    "REVOKED": (Phase.LOST, "revoked (it runs on another cluster of the federation)"),
}
_QUIET_REASONS = frozenset({"None", "NonZeroExitCode", "(null)", ""})


@dataclass(frozen=True)
class JobRecord:
    """One job as Slurm reports it; ``exit_status``/``exit_signal`` are known once it ended."""

    job_id: str
    name: str
    state: str
    reason: str = "None"
    exit_status: int | None = None
    exit_signal: int | None = None


def parse_squeue(text: str) -> dict[str, JobRecord]:
    """``squeue -h -O SQUEUE_FORMAT`` output, by job id; ``exit_code`` is a wait status."""
    jobs = {}
    for line in text.splitlines():
        fields = [field.strip() for field in line.split("|")]
        if len(fields) < 5 or not fields[0]:
            continue
        job_id, name, state, reason, raw = fields[:5]
        status = int(raw) if raw.isdigit() else 0
        jobs[job_id] = JobRecord(
            job_id, name, _state(state), reason, (status >> 8) & 0xFF, status & 0x7F
        )
    return jobs


def parse_key_values(text: str) -> JobRecord | None:
    """One job from ``scontrol show job -o`` or a line of the job-completion log."""
    values = {}
    for key in ("JobId", "JobName", "Name", "JobState", "Reason", "ExitCode"):
        # The first occurrence: these keys come before free text such as Comment=.
        match = re.search(rf"(?:^|\s){key}=(\S*)", text)
        if match is not None:
            values[key] = match[1]
    if "JobId" not in values or "JobState" not in values:
        return None
    status, _, sig = values.get("ExitCode", "").partition(":")
    return JobRecord(
        job_id=values["JobId"],
        name=values.get("JobName", values.get("Name", "")),
        state=_state(values["JobState"]),
        reason=values.get("Reason", "None"),
        exit_status=int(status) if status.isdigit() else None,
        exit_signal=int(sig) if sig.isdigit() else None,
    )


def find_in_jobcomp(text: str, job_id: str, name: str) -> JobRecord | None:
    """The last completion record of this job (id and name both match) in the log."""
    for line in reversed(text.splitlines()):
        if line.startswith(f"JobId={job_id} "):
            record = parse_key_values(line)
            if record is not None and record.name == name:
                return record
    return None


def observe(job: JobRecord) -> Observation:
    """The phase, exit code and a reason a user can act on, for one job."""
    if job.state in PENDING_STATES:
        return Observation(Phase.PENDING, reason=pending_reason(job))
    if job.state in RUNNING_STATES:
        return Observation(Phase.RUNNING)
    exit_code, how = _exit(job)
    if job.state == "COMPLETED":
        return Observation(Phase.SUCCEEDED, exit_code=0, reason="exit code 0")
    if job.state == "CANCELLED":
        return Observation(Phase.CANCELLED, exit_code=exit_code, reason="cancelled")
    if job.state in _END_REASONS:
        phase, text = _END_REASONS[job.state]
        return Observation(phase, exit_code=exit_code, reason=f"Slurm: {text} ({job.state})")
    if job.state == "FAILED":
        if job.reason not in _QUIET_REASONS:
            how += f" (Slurm: {job.reason})"
        return Observation(Phase.FAILED, exit_code=exit_code, reason=how)
    return Observation(Phase.FAILED, exit_code=exit_code, reason=f"Slurm: job {job.state}")


def pending_reason(job: JobRecord) -> str:
    """``Slurm: waiting for resources (Resources)``: plain words, then Slurm's own code."""
    text = PENDING_REASONS.get(job.reason)
    if text is None:
        if job.reason.startswith("QOS"):
            text = "a limit of its QOS is reached"
        elif job.reason.startswith("Assoc"):
            text = "a limit of its account is reached"
        else:
            text = "waiting"
    if job.state == "CONFIGURING":
        text = "its nodes are being set up"
    elif job.state != "PENDING":
        text = f"{job.state.lower()}, {text}"
    return f"Slurm: {text}" + ("" if job.reason == "None" else f" ({job.reason})")


def _exit(job: JobRecord) -> tuple[int | None, str]:
    if job.exit_signal:
        try:
            name = signal.Signals(job.exit_signal).name
        except ValueError:
            name = f"signal {job.exit_signal}"
        return 128 + job.exit_signal, f"killed by signal {name}"
    if job.exit_status is None:
        return None, "ended"
    return job.exit_status, f"exit code {job.exit_status}"


def _state(raw: str) -> str:
    """``CANCELLED+`` and ``CANCELLED by 0`` (other tools' spellings) as ``CANCELLED``."""
    return raw.split()[0].rstrip("+").upper() if raw.strip() else "UNKNOWN"
