"""The agent's loop: claim → launch → watch → report, under leases renewed by heartbeats.

Three concurrent tasks share one event loop and never block it:

- ``_claim_loop`` long-polls the server for runs that fit the free GPUs and
  slots (and for cancels); launches go to their own tasks.
- ``_heartbeat_loop`` renews the leases of every run held, reports free
  capacity (which wakes this agent's waiting claim on the server), and kills
  runs whose lease the server says is lost.
- ``_watch_loop`` polls the backend for each run, uploads new log output in
  batches and reports the end. A backend that knows when an attempt ends (local)
  wakes it for that run at once; the poll interval is the fallback for the rest.

Exact GPU ids are chosen here, from the agent's own free set, so two runs
never share a device. Everything held is written to disk (``store.py``): a
restarted agent re-adopts its runs (same name, same state folder).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import time
from pathlib import Path
from typing import Any

from launchyard.agent.store import InFlight, Store
from launchyard.backends import get_backend_class, known_resources
from launchyard.backends.base import Backend, Handle, LaunchSpec, Observation, Phase
from launchyard.client import AgentClient
from launchyard.config import AgentSettings, default_data_dir
from launchyard.errors import LaunchyardError, ServerUnavailableError, StaleLeaseError
from launchyard.models import secrets
from launchyard.models.durations import format_duration
from launchyard.models.runs import RunState

log = logging.getLogger("launchyard.agent")

CLAIM_WAIT_S = 20.0
RETRY_MAX_S = 5.0
STARTING_REPORT_AFTER_S = 1.0
"""A launch still busy after this long (an image pull) is reported as `starting`; a quick one
(local, a cached image) goes from `claimed` straight to `running`: one request less a run."""

_END_STATES = {
    Phase.SUCCEEDED: RunState.FINISHED,
    Phase.FAILED: RunState.FAILED,
    Phase.CANCELLED: RunState.CANCELLED,
    Phase.PREEMPTED: RunState.PREEMPTED,
    Phase.LOST: RunState.CRASHED,
}


class Agent:
    def __init__(
        self,
        settings: AgentSettings,
        client: AgentClient,
        gpu_ids: list[int],
        backends: dict[str, Backend] | None = None,
    ) -> None:
        self.settings = settings
        self.client = client
        self.name = settings.name or socket.gethostname()
        self.gpu_ids = list(gpu_ids)
        self.state_dir = settings.state_dir or (
            default_data_dir() / "agent" / f"{settings.entity}-{self.name}"
        )
        self.store = Store(self.state_dir / "inflight")
        self.backends: dict[str, Backend] = dict(backends or {})
        self.inflight: dict[str, InFlight] = {}
        self.agent_id: int | None = None
        self.lease_ttl_s = 30.0
        self.draining = False
        self._seq = 0
        self._stopping = asyncio.Event()
        self._capacity_changed = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._launching: set[str] = set()
        """Runs whose launch task has not finished: the watch loop leaves them alone."""
        self._woken: set[str] = set()
        """Runs a backend said may have ended: polled at once, not at the next sweep."""
        self._watch_now = asyncio.Event()
        self._stopped_at_limit: set[str] = set()
        """Runs this process has asked its backend to stop at their time limit."""

    # ---- capacity -------------------------------------------------------------------------

    def _holding(self) -> list[InFlight]:
        """Runs that hold a slot and GPUs: an attempt that ended holds nothing, even while
        its end is being reported."""
        return [rec for rec in self.inflight.values() if not rec.ended]

    def free_gpu_ids(self) -> list[int]:
        used = {g for rec in self._holding() for g in rec.gpu_ids}
        return [g for g in self.gpu_ids if g not in used]

    def capacity(self) -> dict[str, Any]:
        self._seq += 1
        holding = self._holding()
        holders = {str(g): rec.run_id for rec in holding for g in rec.gpu_ids}
        return {
            "seq": self._seq,
            "free_gpus": len(self.free_gpu_ids()),
            "free_slots": max(self.settings.max_jobs - len(holding), 0),
            "gpu_holders": holders,
        }

    # ---- lifecycle ------------------------------------------------------------------------

    async def run(self) -> None:
        resources = await self._register()
        self._create_backends(resources)
        loop = asyncio.get_running_loop()
        for backend in self.backends.values():
            backend.on_change(lambda run_id: self._wake_threadsafe(loop, run_id))
        await self._adopt()
        loops = [
            asyncio.create_task(self._claim_loop(), name="claim"),
            asyncio.create_task(self._heartbeat_loop(), name="heartbeat"),
            asyncio.create_task(self._watch_loop(), name="watch"),
        ]
        try:
            await self._stopping.wait()
        finally:
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)

    def stop(self) -> None:
        self._stopping.set()

    async def shutdown(self, *, requeue: bool) -> None:
        """Stop claiming; with ``requeue`` stop every run and hand it back to the queue."""
        self.stop()
        if requeue:
            await asyncio.gather(
                *(self._give_back(rec, "agent stopped") for rec in list(self.inflight.values())),
                return_exceptions=True,
            )
        if self.agent_id is not None and not self.inflight:
            with contextlib.suppress(LaunchyardError):
                await self.client.stop(self.agent_id)
        for backend in self.backends.values():
            await backend.close()

    async def _register(self) -> list[str]:
        body = {
            "name": self.name,
            "hostname": socket.gethostname(),
            "queues": self.settings.queues,
            "max_jobs": self.settings.max_jobs,
            "gpu_ids": self.gpu_ids,
            "resources": known_resources(),
        }
        delay = 0.2
        while True:
            try:
                reply = await self.client.register(self.settings.entity, body)
                break
            except ServerUnavailableError as exc:
                log.warning("%s; retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
        self.agent_id = int(reply["id"])
        self.lease_ttl_s = float(reply["lease_ttl_s"])
        resources = sorted({q["resource"] for q in reply["queues"]})
        log.info(
            "agent %s (id %s) serving %s with %d GPU(s) %s and %d slot(s)",
            self.name,
            self.agent_id,
            ", ".join(q["name"] for q in reply["queues"]),
            len(self.gpu_ids),
            self.gpu_ids,
            self.settings.max_jobs,
        )
        return resources

    def _create_backends(self, resources: list[str]) -> None:
        """One backend per kind of queue served; a missing SDK fails here, naming the extra."""
        for resource in resources:
            if resource not in self.backends:
                self.backends[resource] = get_backend_class(resource).create(
                    state_dir=self.state_dir / resource,
                    lease_ttl_s=self.lease_ttl_s,
                    options=self.settings.backends.get(resource, {}),
                )

    async def _adopt(self) -> None:
        """Take back what a previous process of this agent left running."""
        for rec in self.store.load_all():
            self.inflight[rec.run_id] = rec
            log.info("adopting run %s (attempt %d)", rec.run_id, rec.attempt)
            if rec.reported_running and rec.running_since is None:  # stored by an older agent
                rec.running_since = time.time()
            if rec.handle is None:
                # Crashed mid-launch: launch is idempotent per attempt, so retry it.
                self._launching.add(rec.run_id)
                self._spawn(self._launch(rec))
        if self.inflight:
            await self._heartbeat_once()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- claiming -------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        assert self.agent_id is not None
        delay = 0.2
        while not self._stopping.is_set():
            if self.draining and not self.inflight:
                log.info("drained: no runs left, stopping")
                self.stop()
                return
            try:
                reply = await self.client.claim(
                    self.agent_id, self.capacity(), min(CLAIM_WAIT_S, self.lease_ttl_s / 2)
                )
                delay = 0.2
            except ServerUnavailableError as exc:
                log.warning("%s; retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            except LaunchyardError as exc:
                log.error("claim refused: %s", exc)
                await asyncio.sleep(RETRY_MAX_S)
                continue
            self.draining = bool(reply.get("draining"))
            for run_id in reply.get("cancel", []):
                self._request_cancel(run_id)
            for claimed in reply.get("runs", []):
                self._accept(claimed)
            if self.draining and not reply.get("runs"):
                await asyncio.sleep(self.settings.poll_interval_s)

    def _accept(self, claimed: dict[str, Any]) -> None:
        free = self.free_gpu_ids()
        backend = self.backends.get(claimed["resource"])
        gpus = int(claimed["gpus"]) if backend is not None and backend.assigns_gpus else 0
        if gpus > len(free):  # the server's view was stale: give it back at once
            log.error(
                "run %s needs %d GPUs, %d free; handing it back", claimed["id"], gpus, len(free)
            )
            rec = InFlight(
                claimed["id"],
                claimed["attempt"],
                claimed["lease_token"],
                claimed["resource"],
                claimed,
            )
            self._spawn(self._report(rec, RunState.PREEMPTED, "agent had fewer free GPUs"))
            return
        rec = InFlight(
            run_id=claimed["id"],
            attempt=int(claimed["attempt"]),
            lease_token=claimed["lease_token"],
            resource=claimed["resource"],
            claimed=claimed,
            gpu_ids=free[:gpus],
            log_offset=int(claimed.get("log_bytes", 0)),
        )
        self.inflight[rec.run_id] = rec
        self.store.save(rec)
        self._launching.add(rec.run_id)
        self._spawn(self._launch(rec))

    def _output_dir(self, rec: InFlight) -> Path:
        return self.state_dir / "outputs" / f"{rec.run_id}-{rec.attempt}"

    def _spec(self, rec: InFlight) -> LaunchSpec:
        c = rec.claimed
        outputs = self._output_dir(rec)
        outputs.mkdir(parents=True, exist_ok=True)
        return LaunchSpec(
            run_id=rec.run_id,
            attempt=rec.attempt,
            entity=c["entity"],
            project=c["project"],
            queue=c["queue"],
            command=list(c["command"]),
            config=secrets.unwrap(c["resolved_config"]),
            env={
                **c.get("env", {}),
                "LAUNCHYARD_ENTITY": c["entity"],
                "LAUNCHYARD_PROJECT": c["project"],
                "LAUNCHYARD_QUEUE": c["queue"],
                # Outputs: files written here are uploaded when the run ends; the
                # token (this run's only) lets `launchyard.save` upload at once.
                "LAUNCHYARD_OUTPUT_DIR": str(outputs),
                "LAUNCHYARD_OUTPUT_TOKEN": c.get("output_token", ""),
                "LAUNCHYARD_HOST": self.client.host,
            },
            run_config={
                "run_id": rec.run_id,
                "config": c.get("run_config", {}),
                "values": c.get("values", {}),
                "queue_config": secrets.mask(c["resolved_config"]),
            },
            image=c.get("image"),
            gpus=int(c["gpus"]),
            gpu_ids=list(rec.gpu_ids),
        )

    async def _launch(self, rec: InFlight) -> None:
        backend = self.backends.get(rec.resource)
        try:
            if backend is None:
                raise LaunchyardError(f"this agent has no {rec.resource} backend")
            handle = await self._start(rec, backend)
        except StaleLeaseError:
            return self._forget(rec)
        except Exception as exc:  # any launch failure ends the run, with the reason
            log.warning("run %s failed to launch: %s", rec.run_id, exc)
            await self._report(rec, RunState.FAILED, f"launch failed: {exc}", phase="launch")
            return self._forget(rec)
        rec.handle = handle.to_json()
        self.store.save(rec)
        if rec.cancel_requested:
            await backend.cancel(handle, self.settings.cancel_grace_s)
        # Report `running` at once when the engine already runs it (local, docker);
        # otherwise the watch loop reports it when the engine starts it.
        obs = await backend.poll(handle)
        if obs.phase.is_terminal and obs.exit_code is not None:
            obs = Observation(Phase.RUNNING)  # it ran (and already exited): say so first
        try:
            await self._report_progress(rec, obs)
        finally:
            self._launching.discard(rec.run_id)  # from now on the watch loop reports its end
            if rec.run_id in self._woken:  # it ended while launching: finish it now
                self._watch_now.set()

    async def _start(self, rec: InFlight, backend: Backend) -> Handle:
        """Launch, telling the server `starting` only if the launch is slow."""
        launch = asyncio.ensure_future(backend.launch(self._spec(rec)))
        done, _ = await asyncio.wait({launch}, timeout=STARTING_REPORT_AFTER_S)
        if not done:
            try:
                await self._report(
                    rec, RunState.STARTING, f"launching on {self.name}", phase="launch"
                )
            except StaleLeaseError:  # not ours any more: stop what the launch starts
                with contextlib.suppress(Exception):
                    handle = await launch
                    await backend.cancel(handle, 0)
                    await backend.release(handle)
                raise
            except LaunchyardError as exc:  # only informative: the launch goes on
                log.warning("could not report run %s as starting: %s", rec.run_id, exc)
        return await launch

    async def _report_progress(self, rec: InFlight, obs: Observation) -> None:
        """Tell the server a launched run is running, or why the engine keeps it pending."""
        try:
            if obs.phase is Phase.RUNNING and not rec.reported_running:
                await self._report(
                    rec,
                    RunState.RUNNING,
                    f"running on {self.name}",
                    phase="run",
                    handle=rec.handle,
                    gpu_ids=rec.gpu_ids,
                )
                rec.reported_running = True
                rec.running_since = time.time()  # the time limit counts from here
                self.store.save(rec)
            elif obs.phase is Phase.PENDING and obs.reason and obs.reason != rec.pending_reason:
                await self._report(
                    rec, RunState.STARTING, obs.reason, phase="launch", handle=rec.handle
                )
                rec.pending_reason = obs.reason
        except LaunchyardError as exc:  # the watch loop tries again on its next tick
            log.warning("could not report progress of run %s: %s", rec.run_id, exc)

    # ---- watching -------------------------------------------------------------------------

    def _wake_threadsafe(self, loop: asyncio.AbstractEventLoop, run_id: str) -> None:
        """A backend's ``on_change`` callback: called from its threads."""
        with contextlib.suppress(RuntimeError):  # the loop closed: the agent is gone
            loop.call_soon_threadsafe(self._wake, run_id)

    def _wake(self, run_id: str) -> None:
        self._woken.add(run_id)
        self._watch_now.set()

    async def _watch_loop(self) -> None:
        """Poll every run once per ``poll_interval_s``, and a woken run at once."""
        loop = asyncio.get_running_loop()
        next_sweep = loop.time()
        while not self._stopping.is_set():
            sweep = loop.time() >= next_sweep
            if sweep:
                next_sweep = loop.time() + self.settings.poll_interval_s
            held = [
                rec
                for rec in self.inflight.values()
                if rec.handle is not None
                and rec.run_id not in self._launching
                and (sweep or rec.run_id in self._woken)
            ]
            self._woken.difference_update(rec.run_id for rec in held)
            self._woken.intersection_update(self.inflight)  # runs already gone need no wake
            await asyncio.gather(*(self._watch(rec) for rec in held), return_exceptions=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._watch_now.wait(), timeout=max(next_sweep - loop.time(), 0)
                )
            self._watch_now.clear()

    async def _watch(self, rec: InFlight) -> None:
        backend = self.backends[rec.resource]
        assert rec.handle is not None
        handle = Handle.from_json(rec.handle)
        obs = await backend.poll(handle)
        try:
            await self._upload_logs(rec, backend, handle, drain=obs.phase.is_terminal)
        except ServerUnavailableError:
            return  # keep the output on disk; upload it once the server is back
        if obs.phase.is_terminal:
            await self._finish(rec, backend, handle, obs)
        else:
            await self._report_progress(rec, obs)
            await self._enforce_time_limit(rec, backend, handle)

    async def _enforce_time_limit(self, rec: InFlight, backend: Backend, handle: Handle) -> None:
        """Stop an attempt that has run past its limit; ``_finish`` reports it failed.

        Counted from the `running` report, on this machine's wall clock (stored, so an
        adopting agent keeps counting).
        """
        limit = rec.claimed.get("time_limit_s")
        if limit is None or rec.running_since is None or rec.run_id in self._stopped_at_limit:
            return
        if time.time() - rec.running_since < float(limit):
            return
        if not rec.limit_hit:
            log.info("run %s reached its time limit of %s s: stopping it", rec.run_id, limit)
            rec.limit_hit = True
            self.store.save(rec)
        # Sent again on the next tick if it fails, and once more by an adopting agent.
        await backend.cancel(handle, self.settings.cancel_grace_s)
        self._stopped_at_limit.add(rec.run_id)

    async def _upload_logs(
        self, rec: InFlight, backend: Backend, handle: Handle, *, drain: bool
    ) -> None:
        while True:
            chunk = await backend.read_logs(handle, rec.log_offset)
            if not chunk.text and chunk.next_offset == rec.log_offset:
                return
            text = secrets.mask_text(chunk.text, secrets.values(rec.claimed["resolved_config"]))
            try:
                stored = await self.client.append_logs(
                    rec.run_id,
                    {
                        "lease_token": rec.lease_token,
                        "start": rec.log_offset,
                        "next_offset": chunk.next_offset,
                        "text": text,
                    },
                )
            except StaleLeaseError:
                return
            rec.log_offset = stored
            if not drain:
                return

    async def _finish(
        self, rec: InFlight, backend: Backend, handle: Handle, obs: Observation
    ) -> None:
        state = _END_STATES[obs.phase]
        reason = obs.reason or state.value
        phase = "run"
        if rec.limit_hit and obs.phase is not Phase.SUCCEEDED:
            limit = format_duration(float(rec.claimed["time_limit_s"]))
            state, reason, phase = RunState.FAILED, f"stopped at its time limit of {limit}", "agent"
        try:
            await self._upload_outputs(rec)
        except ServerUnavailableError:
            return  # the files stay on disk; the next tick tries again
        except LaunchyardError as exc:
            log.warning("outputs of run %s were not uploaded: %s", rec.run_id, exc)
        if state is RunState.CANCELLED and not rec.cancel_requested:
            state = RunState.FAILED  # killed, but nobody asked for it
        # It holds nothing now; the report carries the freed capacity, so the server can hand
        # it on at once (no separate heartbeat), and a claim answered meanwhile fits.
        rec.ended = True
        try:
            accepted = await self._report(
                rec, state, reason, phase=phase, exit_code=obs.exit_code, capacity=self.capacity()
            )
        except ServerUnavailableError:
            return  # try again on the next tick: the end is still on disk
        self._forget(rec, capacity_reported=accepted)
        await backend.release(handle)

    async def _upload_outputs(self, rec: InFlight) -> None:
        folder = self._output_dir(rec)
        if not folder.is_dir():
            return
        token = rec.claimed.get("output_token", "")
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            relpath = path.relative_to(folder).as_posix()
            await self.client.put_file(rec.run_id, relpath, path, token)
            path.unlink()  # uploaded: a retry after an outage sends only the rest
        shutil.rmtree(folder, ignore_errors=True)

    # ---- heartbeats, cancels, reports -----------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        interval = max(min(self.lease_ttl_s / 5, 5.0), 0.05)
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._capacity_changed.wait(), timeout=interval)
            self._capacity_changed.clear()
            try:
                await self._heartbeat_once()
            except ServerUnavailableError as exc:
                log.warning("heartbeat failed: %s", exc)
            except LaunchyardError as exc:
                log.error("heartbeat refused: %s", exc)

    async def _heartbeat_once(self) -> None:
        assert self.agent_id is not None
        held = [rec for rec in self.inflight.values()]
        reply = await self.client.heartbeat(
            self.agent_id,
            [{"id": r.run_id, "lease_token": r.lease_token} for r in held],
            self.capacity(),
        )
        lost = set(reply.get("lost", []))
        self.draining = bool(reply.get("draining"))
        for rec in held:
            if self.inflight.get(rec.run_id) is not rec or rec.ended:
                continue  # its end was reported meanwhile (so the server no longer leases it)
            if rec.run_id in lost:
                log.warning("lost the lease on run %s: stopping it", rec.run_id)
                self._spawn(self._abandon(rec))
            elif rec.handle is not None:
                await self.backends[rec.resource].keepalive(Handle.from_json(rec.handle))
        for run_id in reply.get("cancel", []):
            self._request_cancel(run_id)

    def _request_cancel(self, run_id: str) -> None:
        rec = self.inflight.get(run_id)
        if rec is None or rec.cancel_requested:
            return
        rec.cancel_requested = True
        self.store.save(rec)
        if rec.handle is not None:
            handle = Handle.from_json(rec.handle)
            self._spawn(self.backends[rec.resource].cancel(handle, self.settings.cancel_grace_s))

    async def _abandon(self, rec: InFlight) -> None:
        """Stop a run whose lease is gone; report nothing (the server moved on)."""
        if rec.handle is not None:
            backend = self.backends[rec.resource]
            handle = Handle.from_json(rec.handle)
            await backend.cancel(handle, 0)
            await backend.release(handle)
        self._forget(rec)

    async def _give_back(self, rec: InFlight, reason: str) -> None:
        if rec.handle is not None:
            backend = self.backends[rec.resource]
            handle = Handle.from_json(rec.handle)
            await backend.cancel(handle, self.settings.cancel_grace_s)
            for _ in range(int(self.settings.cancel_grace_s / 0.1) + 20):
                if (await backend.poll(handle)).phase.is_terminal:
                    break
                await asyncio.sleep(0.1)
            with contextlib.suppress(LaunchyardError):
                await self._upload_logs(rec, backend, handle, drain=True)
            await backend.release(handle)
        with contextlib.suppress(LaunchyardError):
            await self._report(rec, RunState.PREEMPTED, reason)
        self._forget(rec)

    async def _report(
        self,
        rec: InFlight,
        state: RunState,
        reason: str | None,
        *,
        phase: str = "agent",
        **extra: Any,
    ) -> bool:
        """True when the server took it; False when an end came after the lease was gone."""
        body = {
            "lease_token": rec.lease_token,
            "state": state.value,
            "reason": reason,
            "phase": phase,
            **extra,
        }
        try:
            await self.client.report(rec.run_id, body)
        except StaleLeaseError:
            if state.is_terminal or state is RunState.PREEMPTED:
                return False
            log.warning("lease on run %s is gone; stopping it", rec.run_id)
            await self._abandon(rec)
            raise
        return True

    def _forget(self, rec: InFlight, *, capacity_reported: bool = False) -> None:
        # A requeued run may already be back here as its next attempt: forget only this one.
        if self.inflight.get(rec.run_id) is rec:
            del self.inflight[rec.run_id]
            self._launching.discard(rec.run_id)
            self._stopped_at_limit.discard(rec.run_id)
            self.store.delete(rec.run_id)
            if not capacity_reported:  # tell the server through the next heartbeat, at once
                self._capacity_changed.set()
