"""launchyard side by side with Slurm and Ray on this machine: one table of ratios per figure.

    make bench                                  # starts Slurm and Ray, runs this, stops them
    python benchmarks/compare.py                # full sizes of issue 7 (engines already up)
    python benchmarks/compare.py --quick        # small sizes: a few minutes
    python benchmarks/compare.py --only packing --pack-runs 60

1. dispatch latency: submit → the run's first instruction, one at a time, idle engine;
2. throughput: N trivial runs from 4 client threads, runs/s at submit and at completion;
3. GPU packing: the seeded 1/2/4-GPU mix of gpu_packing.py on 4 GPUs, against the lower
   bound max(GPU-seconds / 4, longest run), vs Slurm's backfill, Ray and an agent with a
   concurrency limit only (which oversubscribes GPUs: counted);
4. scale: a deep queue (bulk-inserted into the server's SQLite through SQLAlchemy Core
   after a measured API submit rate): the cost of one more submit, of a claim with
   nothing fitting, of a queue page and of a /metrics scrape, and memory, per depth.

The peers come from ``.ci/services/slurm.sh`` (``SLURM_CONF``) and ``ray.sh``
(``LAUNCHYARD_TEST_RAY_ADDRESS``); a peer not running shows as "—". Ratios are
launchyard / peer; each row says whether lower or higher is better. Every figure
prints the machine's load average, since other work shares these 2 cores.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(__file__))

import peers  # noqa: E402
from gpu_packing import add_packing_options, make_mix  # noqa: E402
from harness import percentile, transition_time  # noqa: E402

GPUS = 4
SLOTS = 16
"""Runs at once for trivial work: the launchyard agent's -j, Slurm's CPUs, Ray's CPUs."""
Row = tuple[str, dict[str, float], str, str]
"""label, value per column, format, "lower" or "higher" (is better) or ""."""


def load() -> str:
    return "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def table(
    title: str, columns: Sequence[str], rows: Sequence[Row], notes: Sequence[str] = ()
) -> None:
    """Values per column, then launchyard / peer for every peer column."""
    peers_ = [c for c in columns[1:]]
    width = max([len(r[0]) for r in rows] + [20]) + 2
    head = f"{'':<{width}}" + "".join(f"{c:>15}" for c in columns)
    head += "".join(f"{'ly/' + p[:10]:>15}" for p in peers_) + "   better"
    print(f"\n{title}\n{'-' * len(head)}\n{head}")
    for label, values, fmt, better in rows:
        line = f"{label:<{width}}"
        for c in columns:
            v = values.get(c)
            line += f"{(fmt.format(v) if v is not None else '—'):>15}"
        ly = values.get(columns[0]) if better else None
        for p in peers_:
            v = values.get(p)
            ok = ly is not None and v not in (None, 0) and v == v and ly == ly
            line += f"{(f'{ly / v:.2f}x' if ok else '—'):>15}"  # type: ignore[operator]
        print(line + f"   {better}")
    for note in notes:
        print(f"  * {note}")


def wait_file(path: Path, timeout_s: float) -> float:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            text = path.read_text()
            if text.endswith("\n"):
                return float(text.split()[0])
        except FileNotFoundError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} was never written")
        time.sleep(0.002)


# ---- 1. dispatch latency ------------------------------------------------------------------


def latency(engine: peers.Engine, n: int, folder: Path) -> tuple[list[float], list[str]]:
    """Submit one run, wait for its first instruction and for the engine to see it end."""
    folder.mkdir(parents=True, exist_ok=True)
    values, ids = [], []
    for i in range(n):
        path = folder / f"lat{i}"
        sub = engine.submit(f"lat{i}", ["bash", "-c", 'echo "$EPOCHREALTIME" > "$0"', str(path)])
        values.append(wait_file(path, 60) - sub.at)
        engine.wait_ended([sub.engine_id], 60, every_s=0.02)
        engine.wait_idle()
        ids.append(sub.engine_id)
    return values, ids


def figure_latency(args: argparse.Namespace, found: dict[str, str], work: Path) -> None:
    before = load()
    cols: dict[str, list[float]] = {}
    server_side: list[float] = []
    with peers.launchyard_stack() as stack:
        stack.client().create_queue("default", peers.plain_queue("lat"))
        stack.agent("lat", jobs=SLOTS, name="lat-agent")
        ly = peers.Launchyard(stack, "lat", gpu_variable=False, name="launchyard")
        cols["launchyard"], ids = latency(ly, args.latency_runs, work / "lat-ly")
        c = stack.client()
        for run_id in ids:
            run = c.get_run(run_id)
            server_side.append(transition_time(run, "running") - transition_time(run, "queued"))
    if "slurm" in found:
        cols["Slurm"], _ = latency(peers.Slurm(found["slurm"]), args.latency_runs, work / "lat-s")
    if "ray" in found:
        cols["Ray"], _ = latency(peers.Ray(found["ray"]), args.ray_latency_runs, work / "lat-r")
    rows: list[Row] = [
        (f"p{q} (ms)", {k: percentile(v, q) * 1000 for k, v in cols.items()}, "{:.1f}", "lower")
        for q in (50, 99)
    ]
    rows.append(
        ("mean (ms)", {k: statistics.fmean(v) * 1000 for k, v in cols.items()}, "{:.1f}", "lower")
    )
    rows.append(("runs", {k: float(len(v)) for k, v in cols.items()}, "{:.0f}", ""))
    table(
        f"1. Dispatch latency: submit → the run's first instruction, idle engine  "
        f"[{before} → {load()}]",
        ["launchyard", "Slurm", "Ray"],
        rows,
        [
            "launchyard's own transitions (queued → running, server clock): "
            f"p50 {percentile(server_side, 50) * 1000:.1f} ms, "
            f"p99 {percentile(server_side, 99) * 1000:.1f} ms",
        ],
    )


# ---- 2. throughput ------------------------------------------------------------------------


def throughput(engine: peers.Engine, n: int, threads: int) -> dict[str, float]:
    start = time.time()
    subs = engine.submit_many(peers.trivial_jobs("tp", n), threads=threads)
    submitted = time.time()
    end = engine.wait_ended([s.engine_id for s in subs], 120 + 3 * n, every_s=0.5)
    return {
        "submit_per_s": n / (submitted - start),
        "complete_per_s": n / (end - start),
        "total_s": end - start,
        "runs": n,
    }


def figure_throughput(args: argparse.Namespace, found: dict[str, str]) -> None:
    before = load()
    res: dict[str, dict[str, float]] = {}
    with peers.launchyard_stack() as stack:
        stack.client().create_queue("default", peers.plain_queue("tp"))
        stack.agent("tp", jobs=SLOTS, name="tp-agent")
        ly = peers.Launchyard(stack, "tp", gpu_variable=False, name="launchyard")
        res["launchyard"] = throughput(ly, args.runs, args.threads)
    if "slurm" in found:
        res["Slurm"] = throughput(peers.Slurm(found["slurm"]), args.runs, args.threads)
    if "ray" in found:
        res["Ray"] = throughput(peers.Ray(found["ray"]), args.ray_runs, args.threads)
    rows: list[Row] = [
        ("submissions/s", {k: v["submit_per_s"] for k, v in res.items()}, "{:.1f}", "higher"),
        ("completions/s", {k: v["complete_per_s"] for k, v in res.items()}, "{:.1f}", "higher"),
        ("all ended after (s)", {k: v["total_s"] for k, v in res.items()}, "{:.1f}", ""),
        ("runs", {k: v["runs"] for k, v in res.items()}, "{:.0f}", ""),
    ]
    notes = [
        f"{args.threads} client threads; {SLOTS} runs at once on every engine; runs are `true`"
    ]
    if "ray" in res and args.ray_runs != args.runs:
        notes.append(
            f"Ray measured on {args.ray_runs} runs, not {args.runs}: every Ray job starts a "
            "Python driver (~1 s of CPU here), so its rate is steady from the first tens "
            f"and {args.runs} would take ≈{args.runs / res['Ray']['complete_per_s'] / 60:.0f} min"
        )
    table(
        f"2. Throughput: trivial runs submitted and completed  [{before} → {load()}]",
        ["launchyard", "Slurm", "Ray"],
        rows,
        notes,
    )


# ---- 3. GPU packing -----------------------------------------------------------------------


def analyse(
    mix: Sequence[tuple[int, float]],
    subs: Sequence[peers.Submitted],
    records: Sequence[dict[str, Any]],
    *,
    assumed_ids: bool,
) -> dict[str, float]:
    """Makespan, bounds, utilisation, waits and GPU sharing from the runs' own records.

    With ``assumed_ids`` (no GPU accounting) a run asking for g GPUs is taken to use
    GPUs 0..g-1, which is what CUDA programs do when nothing restricts them.
    """
    by_key = {s.engine_id: (i, s) for i, s in enumerate(subs)} | {
        s.tag: (i, s) for i, s in enumerate(subs)
    }
    spans = []
    for rec in records:
        i, sub = by_key[str(rec["run"])]
        gpus = mix[i][0]
        ids = (
            set(range(gpus))
            if assumed_ids
            else {int(g) for g in str(rec["gpus"]).split(",") if g.strip()}
        )
        spans.append((float(rec["start"]), float(rec["end"]), gpus, ids, sub.at))
    if not spans:
        return {"runs_ended_ok": 0}
    first = min(s[0] for s in spans)
    makespan = max(s[1] for s in spans) - first
    gpu_s = sum(g * (e - b) for b, e, g, _, _ in spans)
    nominal = max(sum(g * d for g, d in mix) / GPUS, max(d for _, d in mix))
    measured = max(gpu_s / GPUS, max(e - b for b, e, *_ in spans))
    shared = [
        (a, b) for a, b in combinations(spans, 2) if a[0] < b[1] and b[0] < a[1] and a[3] & b[3]
    ]
    over_s, peak = 0.0, 1
    for gpu in range(GPUS):
        events = sorted(
            [(b, 1) for b, _, _, ids, _ in spans if gpu in ids]
            + [(e, -1) for _, e, _, ids, _ in spans if gpu in ids]
        )
        holders, last = 0, first
        for t, step in events:
            if holders > 1:
                over_s += t - last
            holders += step
            peak = max(peak, holders)
            last = t
    ends = sorted(e for _, e, *_ in spans)
    handovers = [
        b - max(e for e in ends if e <= b) for b, *_ in spans if ends[0] <= b
    ]  # from the last end before a start to that start: how fast freed GPUs are reused
    return {
        "handover_p50": percentile(handovers, 50) if handovers else float("nan"),
        "makespan": makespan,
        "nominal_bound": nominal,
        "measured_bound": measured,
        "vs_nominal": makespan / nominal,
        "vs_measured": makespan / measured,
        "utilisation": gpu_s / (GPUS * makespan) * 100,
        "longest_wait": max(b - at for b, _, _, _, at in spans),
        "runs_ended_ok": len(spans),
        "shared_pairs": len(shared),
        "oversubscribed_gpu_s": over_s,
        "peak_runs_per_gpu": peak,
    }


def simulate(
    mix: Sequence[tuple[int, float]],
    reserve_after_s: float,
    slots: int,
    limit_margin_s: float | None = None,
) -> float:
    """Makespan of launchyard's own decision procedure (``scheduling.pick``) on the mix with
    every run queued at 0 and no overhead at all: what the policy alone costs. With
    ``limit_margin_s`` every run has a time limit of its duration plus that margin. The
    first blocked run's ``blocked_since`` is stamped as the server's claim does."""
    from dataclasses import replace

    from launchyard import scheduling

    def limit(i: int) -> float | None:
        return None if limit_margin_s is None else mix[i][1] + limit_margin_s

    queued = [
        scheduling.Candidate(f"r{i}", g, 2, i, time_limit_s=limit(i))
        for i, (g, _) in enumerate(mix)
    ]
    ends: dict[str, float] = {}
    deadlines: dict[str, float | None] = {}
    t, free = 0.0, GPUS
    while queued or ends:
        held = [scheduling.Held(mix[int(r[1:])][0], deadlines[r]) for r in ends]
        decision = scheduling.pick(
            queued,
            scheduling.Capacity(free, GPUS, slots - len(ends), held),
            now=t,
            reserve_after_s=reserve_after_s,
            explain=False,
        )
        for run_id in decision.picked:
            i = int(run_id[1:])
            ends[run_id] = t + mix[i][1]
            lim = limit(i)
            deadlines[run_id] = None if lim is None else t + lim
            free -= mix[i][0]
        queued = [
            replace(c, blocked_since=t)
            if c.run_id == decision.first_blocked and c.blocked_since is None
            else c
            for c in queued
            if c.run_id not in decision.picked
        ]
        if not ends:
            break
        t_next = min(ends.values())
        if decision.reserved_for is None:  # the next reservation may start before that
            clocks = [
                c.blocked_since + reserve_after_s for c in queued if c.blocked_since is not None
            ]
            t_next = min([t_next, *(x for x in clocks if x > t)])
        t = t_next
        for run_id, end in list(ends.items()):
            if end <= t:
                free += mix[int(run_id[1:])][0]
                del ends[run_id]
    return t


def figure_packing(args: argparse.Namespace, found: dict[str, str], work: Path) -> None:
    before = load()
    mix = make_mix(args.pack_runs)
    timeout = 120 + 3 * sum(d for _, d in mix)
    res: dict[str, dict[str, float]] = {}

    # launchyard twice: runs with time limits (their duration + a margin, as a user who
    # knows their run's length writes them), then the same runs without any limit.
    for column, margin in (("launchyard", args.limit_margin), ("ly, no limits", None)):
        with peers.launchyard_stack(reserve_after_s=args.reserve_after) as stack:
            stack.client().create_queue("default", peers.gpu_queue("pack", GPUS))
            stack.agent("pack", jobs=GPUS * 2, gpus="0,1,2,3", name="pack-agent")
            ly = peers.Launchyard(stack, "pack", gpu_variable=True, name=column)
            subs, recs = peers.run_mix(ly, mix, work / "pack-ly.jsonl", timeout, margin)
            res[column] = analyse(mix, subs, recs, assumed_ids=False)
            res[column]["policy_alone"] = simulate(mix, args.reserve_after, GPUS * 2, margin)
    if "slurm" in found:
        slurm = peers.Slurm(found["slurm"])
        subs, recs = peers.run_mix(slurm, mix, work / "pack-s.jsonl", timeout, args.limit_margin)
        res["Slurm"] = analyse(mix, subs, recs, assumed_ids=False)
    if "ray" in found:
        subs, recs = peers.run_mix(peers.Ray(found["ray"]), mix, work / "pack-r.jsonl", timeout)
        res["Ray"] = analyse(mix, subs, recs, assumed_ids=False)
    with peers.launchyard_stack() as stack:
        stack.client().create_queue("default", peers.plain_queue("conc"))
        stack.agent("conc", jobs=GPUS, gpus="none", name="conc-agent")
        conc = peers.Launchyard(stack, "conc", gpu_variable=False, name="-j 4 only")
        subs, recs = peers.run_mix(conc, mix, work / "pack-c.jsonl", timeout)
        res["-j 4 only"] = analyse(mix, subs, recs, assumed_ids=True)

    def row(label: str, key: str, fmt: str, better: str) -> Row:
        return label, {k: v[key] for k, v in res.items() if key in v}, fmt, better

    table(
        f"3. GPU packing: {len(mix)} runs asking 1/2/4 GPUs for 1–8 s (seed 7) on {GPUS} GPUs"
        f"  [{before} → {load()}]",
        ["launchyard", "ly, no limits", "Slurm", "Ray", "-j 4 only"],
        [
            row("makespan (s)", "makespan", "{:.1f}", "lower"),
            row("  the policy alone, simulated (s)", "policy_alone", "{:.1f}", ""),
            row("lower bound, nominal (s)", "nominal_bound", "{:.1f}", ""),
            row("lower bound, measured (s)", "measured_bound", "{:.1f}", ""),
            row("makespan / nominal bound", "vs_nominal", "{:.3f}", "lower"),
            row("makespan / measured bound", "vs_measured", "{:.3f}", "lower"),
            row("GPU-time utilisation (%)", "utilisation", "{:.1f}", "higher"),
            row("handover: a run ends → next starts, p50 (s)", "handover_p50", "{:.2f}", "lower"),
            row("longest wait, submit → start (s)", "longest_wait", "{:.1f}", "lower"),
            row("runs that ended well", "runs_ended_ok", "{:.0f}", ""),
            row("pairs of runs sharing a GPU", "shared_pairs", "{:.0f}", "lower"),
            row("oversubscribed GPU-seconds", "oversubscribed_gpu_s", "{:.1f}", "lower"),
            row("most runs on one GPU at once", "peak_runs_per_gpu", "{:.0f}", "lower"),
        ],
        [
            "times from each run's own record (gpu_work.py); measured bound uses the runs' "
            "real run times (interpreter start included)",
            f"launchyard: agent -j {GPUS * 2} --gpus 0,1,2,3, reservations after "
            f"{args.reserve_after:.0f} s, each run's time limit its duration + "
            f"{args.limit_margin:g} s (EASY backfill); ly, no limits: the same runs without "
            "limits (a reservation drains the GPUs)",
            "Slurm: sched/backfill, --gres=gpu:N, the same limits rounded up to whole "
            "minutes (--time=1, its finest); Ray: entrypoint_num_gpus=N (no limits to give)",
            "-j 4 only: launchyard with a `gpus: 0` queue on a -j 4 agent with no GPUs, "
            "runs assumed on GPUs 0..N-1 (CUDA's default): a utilisation over 100% is "
            "oversubscription, not efficiency",
        ],
    )


# ---- 4. scale -----------------------------------------------------------------------------


BATCH = 500
"""Runs per request for the batch submit rate (launchyard's /runs/batch, Slurm's job arrays)."""
SCALE_NOTES = [
    "every queued run asks for 1 GPU while one run holds all 4: each claim (launchyard) and "
    "each scheduling cycle (Slurm) examines the queue and finds nothing to start",
    "launchyard: the first runs are submitted through the API (the submit rate); the rest "
    "are inserted into the server's SQLite with SQLAlchemy Core (the real schema, one "
    "`queued` transition each), then the server is measured at each depth",
    f"batches of {BATCH}: launchyard's POST /runs/batch, Slurm's job arrays (sbatch "
    f"--array=0-{BATCH - 1}) timed on an empty queue (past MaxJobCount sbatch stalls), "
    "launchyard's at the deepest queue measured",
    "Slurm: `claim` is sdiag's mean main-scheduler cycle; `list a page` is `squeue -t PD` "
    "(squeue has no pages: it lists every pending job); server = slurmctld, agent = slurmd",
]


def _fill(db: Any, template: dict[str, Any], start: int, n: int) -> None:
    """Insert ``n`` queued runs like ``template`` (and their transitions) in big batches."""
    from datetime import UTC, datetime

    from sqlalchemy import insert

    from launchyard.server.tables import RunRow, RunTransitionRow

    base = {k: v for k, v in template.items() if k != "seq"}
    for first in range(start, start + n, 10_000):
        at = datetime.now(UTC)
        ids = [f"z{i:09d}" for i in range(first, min(first + 10_000, start + n))]
        with db.engine.begin() as conn:
            conn.execute(
                insert(RunRow.__table__),
                [{**base, "id": i, "name": i, "queued_at": at, "created_at": at} for i in ids],
            )
            conn.execute(
                insert(RunTransitionRow.__table__),
                [
                    {
                        "run_id": i,
                        "state": "queued",
                        "at": at,
                        "phase": "server",
                        "attempt": 0,
                        "reason": "inserted by benchmarks/compare.py",
                    }
                    for i in ids
                ],
            )


def launchyard_scale(args: argparse.Namespace) -> dict[str, Any]:
    from sqlalchemy import select

    from launchyard.server.db import Database
    from launchyard.server.services.agents import pick_runs
    from launchyard.server.services.auth import now
    from launchyard.server.tables import AgentRow, RunRow

    out: dict[str, Any] = {"depths": {}}
    with peers.launchyard_stack() as stack:
        c = stack.client()
        c.create_queue("default", peers.gpu_queue("scale", GPUS))
        agent = stack.agent("scale", jobs=GPUS, gpus="0,1,2,3", name="scale-agent")
        ly = peers.Launchyard(stack, "scale", gpu_variable=True, name="launchyard")
        blocker = ly.submit("blocker", ["sleep", "900"], GPUS)
        peers.wait_state(lambda: str(c.get_run(blocker.engine_id)["state"]), "running")
        n = args.scale_submit_runs
        start = time.perf_counter()
        ly.submit_many([(f"s{i}", ["true"], 1) for i in range(n)], args.threads)
        out["submit_per_s"] = n / (time.perf_counter() - start)
        probe = c.request(
            "POST",
            "/api/v1/entities/default/agents",
            json={
                "name": "probe",
                "hostname": "bench",
                "queues": ["scale"],
                "max_jobs": GPUS,
                "gpu_ids": list(range(GPUS)),
                "resources": ["local"],
            },
        )
        seq = iter(range(1, 10**9))

        def claim() -> object:
            return c.request(
                "POST",
                f"/api/v1/agents/{probe['id']}/claim",
                json={
                    "capacity": {"seq": next(seq), "free_gpus": 0, "free_slots": GPUS},
                    "wait_s": 0,
                },
            )

        db = Database(f"sqlite:///{stack.tmp / 'server' / 'launchyard.db'}")

        def claim_sql() -> object:
            """The claim's own decision (its queries and ``scheduling.pick``), in-process."""
            with db.session() as sess:
                row = sess.get(AgentRow, probe["id"])
                assert row is not None
                return pick_runs(sess, row, {template["queue_id"]: True}, now(), 30.0, False)

        with db.engine.connect() as conn:
            template = dict(
                conn.execute(select(RunRow.__table__).where(RunRow.state == "queued").limit(1))
                .mappings()
                .one()
            )
        inserted = 0
        for depth in args.depths:
            queued = peers.queue_counts(ly.metrics(), "scale").get("queued", 0)
            if depth > queued:
                _fill(db, template, inserted, depth - queued)
                inserted += depth - queued
            p = args.probes
            out["depths"][depth] = {
                "submit_ms": peers.median_ms(
                    peers.timed(lambda: ly.submit("one-more", ["true"], 1), p)
                ),
                "claim_ms": peers.median_ms(peers.timed(claim, p)),
                "claim_sql_ms": peers.median_ms(peers.timed(claim_sql, p)),
                "page_ms": peers.median_ms(
                    peers.timed(lambda: c.list_runs("default", queue="scale", limit=50), p)
                ),
                "metrics_ms": peers.median_ms(peers.timed(ly.metrics, max(3, p // 4))),
                "server_mib": peers.rss_kib(stack.procs[0].pid) / 1024,
                "agent_mib": peers.rss_kib(agent.pid) / 1024,
            }
        body = {"queue": "scale", "command": ["true"], "values": {"gpus": 1}}
        start = time.perf_counter()
        for _ in range(2):
            c.submit_many("default", [body] * BATCH)
        out["batch_per_s"] = 2 * BATCH / (time.perf_counter() - start)
        c.cancel(blocker.engine_id)
        db.dispose()
    return out


def figure_scale(args: argparse.Namespace, found: dict[str, str]) -> None:
    before = load()
    ly = launchyard_scale(args)
    sl = (
        peers.slurm_scale(found["slurm"], args.depths, args.probes, args.threads, BATCH)
        if "slurm" in found
        else {}
    )
    rows: list[Row] = [
        (
            f"submit rate, {args.threads} threads (runs/s)",
            {"launchyard": ly["submit_per_s"], **({"Slurm": sl["submit_per_s"]} if sl else {})},
            "{:.1f}",
            "higher",
        )
    ]
    rows.append(
        (
            f"submit rate, batches of {BATCH} (runs/s)",
            {"launchyard": ly["batch_per_s"], **({"Slurm": sl["batch_per_s"]} if sl else {})},
            "{:.0f}",
            "higher",
        )
    )
    labels = [
        ("submit one more run (ms)", "submit_ms", "lower"),
        ("claim, nothing fits (ms)", "claim_ms", "lower"),
        ("claim decision alone, in-process (ms)", "claim_sql_ms", "lower"),
        ("list a queue page of 50 (ms)", "page_ms", "lower"),
        ("/metrics scrape (ms)", "metrics_ms", "lower"),
        ("server RSS (MiB)", "server_mib", "lower"),
        ("agent RSS (MiB)", "agent_mib", "lower"),
    ]
    for depth in args.depths:
        for label, key, better in labels:
            values = {"launchyard": ly["depths"][depth][key]}
            peer = sl.get("depths", {}).get(depth, {}) if sl else {}
            if key in peer:
                values["Slurm"] = peer[key]
            rows.append((f"{depth:>7,} queued: {label}", values, "{:.1f}", better))
    table(
        f"4. Scale: a deep queue of runs that cannot start yet  [{before} → {load()}]",
        ["launchyard", "Slurm"],
        rows,
        SCALE_NOTES
        + (sl.get("notes", []) if sl else [])
        + [
            f"100,000 runs through the API: {100_000 / ly['submit_per_s'] / 60:.1f} min one "
            f"by one, {100_000 / ly['batch_per_s'] / 60:.1f} min in batches (extrapolated)"
        ],
    )


# ---- where a GPU handover goes (launchyard only, for the findings) ---------------------------


def figure_handover(args: argparse.Namespace, work: Path) -> None:
    """One GPU, runs of 0.5 s one after another: each step from one run's end to the next
    run's first instruction, from the runs' own records and the server's transitions."""
    before = load()
    with peers.launchyard_stack() as stack:
        c = stack.client()
        c.create_queue("default", peers.gpu_queue("handover", 1))
        stack.agent("handover", jobs=GPUS, gpus="0", name="handover-agent")
        ly = peers.Launchyard(stack, "handover", gpu_variable=True, name="launchyard")
        subs, recs = peers.run_mix(ly, [(1, 0.5)] * 16, work / "handover.jsonl", 120)
        runs = [c.get_run(s.engine_id) for s in subs]
    by_run = {r["run"]: r for r in recs}
    steps: dict[str, list[float]] = {}
    for prev, nxt in zip(runs, runs[1:], strict=False):
        marks = [
            ("the run's process ends", by_run[prev["id"]]["end"]),
            ("exit → server has it `finished`", transition_time(prev, "finished")),
            ("→ next run `claimed`", transition_time(nxt, "claimed")),
            # A quick launch goes claimed → running with no `starting` report: 0 ms here then.
            (
                "→ `starting`",
                transition_time(nxt, "starting")
                if any(t["state"] == "starting" for t in nxt["transitions"])
                else transition_time(nxt, "claimed"),
            ),
            ("→ `running`", transition_time(nxt, "running")),
            ("→ its first instruction", by_run[nxt["id"]]["start"]),
        ]
        for (_, t0), (label, t1) in zip(marks, marks[1:], strict=False):
            steps.setdefault(label, []).append((t1 - t0) * 1000)
        steps.setdefault("end → next start, in all", []).append((marks[-1][1] - marks[0][1]) * 1000)
    print(f"\nGPU handover on launchyard, 1 GPU, 15 handovers  [{before} → {load()}]")
    for label, values in steps.items():
        print(f"  {label:<32} p50 {statistics.median(values):7.1f} ms   max {max(values):7.1f} ms")


# ---- main ---------------------------------------------------------------------------------

FIGURES = ("latency", "throughput", "packing", "scale")
EXTRA_FIGURES = ("handover",)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a few minutes")
    parser.add_argument(
        "--only",
        default=",".join(FIGURES),
        help=f"comma-separated, from {', '.join(FIGURES + EXTRA_FIGURES)}",
    )
    parser.add_argument("--latency-runs", type=int)
    parser.add_argument("--ray-latency-runs", type=int)
    parser.add_argument("--runs", type=int, help="throughput runs (launchyard, Slurm)")
    parser.add_argument("--ray-runs", type=int, help="throughput runs for Ray")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--pack-runs", type=int)
    add_packing_options(parser, margin_default=2.0)
    parser.add_argument("--depths", help="queue depths for the scale figure, e.g. 1000,10000")
    parser.add_argument("--scale-submit-runs", type=int, help="API submits timed for the rate")
    parser.add_argument("--probes", type=int, help="timings per measurement in the scale figure")
    parser.add_argument("--no-slurm", action="store_true")
    parser.add_argument("--no-ray", action="store_true")
    args = parser.parse_args()
    sizes = {
        "latency_runs": (200, 20),
        "ray_latency_runs": (200, 10),
        "runs": (2000, 200),
        "ray_runs": (100, 20),
        "pack_runs": (60, 12),
        "depths": ("1000,10000,100000", "1000,10000"),
        "scale_submit_runs": (1000, 400),
        "probes": (20, 10),
    }
    for key, (full, quick) in sizes.items():
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    args.depths = [int(d) for d in str(args.depths).split(",")]

    found = peers.engines_from_env()
    if args.no_slurm:
        found.pop("slurm", None)
    if args.no_ray:
        found.pop("ray", None)
    print(
        f"launchyard vs {', '.join(found) or 'no peer'} — {os.cpu_count()} CPUs, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, "
        f"python {sys.version.split()[0]}, {load()}"
    )
    work = Path(tempfile.mkdtemp(prefix="ly-compare-"))
    chosen = [f.strip() for f in args.only.split(",")]
    for name in chosen:
        start = time.monotonic()
        if name == "latency":
            figure_latency(args, found, work)
        elif name == "throughput":
            figure_throughput(args, found)
        elif name == "packing":
            figure_packing(args, found, work)
        elif name == "scale":
            figure_scale(args, found)
        elif name == "handover":
            figure_handover(args, work)
        else:
            raise SystemExit(
                f"unknown figure {name!r}; choose from {', '.join(FIGURES + EXTRA_FIGURES)}"
            )
        print(f"  ({name}: {time.monotonic() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
