"""The pure scheduling decision: fit, backfill, reservations, ordering, wait reasons."""

from __future__ import annotations

from dataclasses import replace

from launchyard.scheduling import (
    AgentView,
    Candidate,
    Capacity,
    Held,
    earliest_start,
    explain_wait,
    ordered,
    pick,
)


def cand(
    run_id: str,
    gpus: int,
    seq: int,
    *,
    rank: int = 2,
    blocked_since: float | None = None,
    limit: float | None = None,
) -> Candidate:
    return Candidate(
        run_id=run_id,
        gpus=gpus,
        priority_rank=rank,
        seq=seq,
        blocked_since=blocked_since,
        time_limit_s=limit,
    )


def cap(free: int, total: int = 4, slots: int = 10, held: tuple[Held, ...] = ()) -> Capacity:
    return Capacity(free_gpus=free, total_gpus=total, free_slots=slots, held=held)


def test_picks_in_order_while_gpus_last() -> None:
    decision = pick([cand("a", 2, 1), cand("b", 2, 2), cand("c", 2, 3)], cap(4), now=100)
    assert decision.picked == ["a", "b"]
    assert decision.waiting["c"] == "needs 2 GPUs, 0 free"


def test_slots_bound_concurrency_even_with_free_gpus() -> None:
    decision = pick([cand("a", 0, 1), cand("b", 0, 2), cand("c", 0, 3)], cap(4, slots=2), now=100)
    assert decision.picked == ["a", "b"]
    assert "-j limit" in decision.waiting["c"]


def test_smaller_runs_backfill_past_a_blocked_one() -> None:
    decision = pick([cand("big", 4, 1), cand("small", 1, 2)], cap(2), now=101, reserve_after_s=30)
    assert decision.picked == ["small"]
    assert decision.reserved_for is None


def test_blocked_head_gets_a_reservation_after_the_bound() -> None:
    decision = pick(
        [cand("big", 4, 1, blocked_since=0), cand("small", 1, 2)],
        cap(2),
        now=31,
        reserve_after_s=30,
    )
    assert decision.picked == []
    assert decision.reserved_for == "big"
    assert "reservation" in decision.waiting["small"]


def test_reserved_run_starts_once_gpus_drain() -> None:
    decision = pick(
        [cand("big", 4, 1, blocked_since=0), cand("small", 1, 2)],
        cap(4),
        now=31,
        reserve_after_s=30,
    )
    assert decision.picked == ["big"]


def test_run_larger_than_the_agent_never_blocks_others() -> None:
    decision = pick([cand("huge", 8, 1, blocked_since=0), cand("ok", 1, 2)], cap(4), now=1000)
    assert decision.picked == ["ok"]
    assert decision.reserved_for is None
    assert "has 4 in all" in decision.waiting["huge"]


def test_order_is_priority_then_fifo() -> None:
    runs = [
        cand("low-old", 0, 1, rank=3),
        cand("high-new", 0, 5, rank=1),
        cand("high-old", 0, 2, rank=1),
    ]
    assert [c.run_id for c in ordered(runs)] == ["high-old", "high-new", "low-old"]


def test_no_run_starves_under_a_stream_of_small_runs() -> None:
    """Simulate: a 4-GPU run behind an endless stream of 1-GPU runs still starts.

    The caller stamps ``blocked_since`` on the first blocked run, as the server's claim does."""
    now, running, seq = 0.0, [], 0
    queue = [cand("big", 4, 0)]
    started_big_at = None
    while now < 200 and started_big_at is None:
        seq += 1
        queue.append(cand(f"s{seq}", 1, seq))
        running = [(rid, g, end) for rid, g, end in running if end > now]
        free = 4 - sum(g for _, g, _ in running)
        decision = pick(ordered(queue), cap(free, slots=10), now=now, reserve_after_s=10)
        for rid in decision.picked:
            c = next(q for q in queue if q.run_id == rid)
            running.append((rid, c.gpus, now + 3))
            queue.remove(c)
            if rid == "big":
                started_big_at = now
        queue = [
            replace(c, blocked_since=now)
            if c.run_id == decision.first_blocked and c.blocked_since is None
            else c
            for c in queue
        ]
        now += 1
    assert started_big_at is not None and started_big_at <= 10 + 3 + 1


def test_the_reservation_clock_starts_at_the_front_of_the_line() -> None:
    # Queued long ago but never yet found blocked at the front: no reservation yet.
    fresh = pick([cand("big", 4, 1), cand("small", 1, 2)], cap(2), now=1000, reserve_after_s=30)
    assert fresh.first_blocked == "big" and fresh.reserved_for is None
    assert fresh.picked == ["small"]
    stamped = pick(
        [cand("big", 4, 1, blocked_since=1000), cand("small", 1, 2)],
        cap(2),
        now=1030,
        reserve_after_s=30,
    )
    assert stamped.reserved_for == "big" and stamped.picked == []


def agent(**kw: object) -> AgentView:
    base: dict[str, object] = dict(
        name="a", alive=True, draining=False, free_gpus=4, total_gpus=4, free_slots=1
    )
    base.update(kw)
    return AgentView(**base)  # type: ignore[arg-type]


def test_wait_reasons() -> None:
    assert explain_wait(1, []).startswith("no agent for this queue")
    assert "draining" in explain_wait(1, [agent(draining=True)])
    assert explain_wait(8, [agent()]) == "needs 8 GPUs, but the largest agent for this queue has 4"
    assert "-j limit" in explain_wait(1, [agent(free_slots=0)])
    assert explain_wait(3, [agent(free_gpus=2)]) == "needs 3 GPUs, 2 free"
    assert explain_wait(1, [agent(alive=False)]).startswith("no agent")


# ---- EASY backfill: time limits let smaller runs pass a reservation without delaying it ----

# Two GPUs free; the other two are held by a run that ends by t=50 at the latest.
HELD_TILL_50 = (Held(gpus=2, ends_by=50.0),)


def test_earliest_start_comes_from_the_holders_limits() -> None:
    held = [Held(1, 80.0), Held(2, 50.0), Held(1, None)]
    assert earliest_start(4, 0, held, now=40) == (None, 0)  # needs the unlimited run's GPU
    assert earliest_start(4, 1, held, now=40) == (80.0, 0)
    assert earliest_start(3, 1, held, now=40) == (50.0, 0)
    assert earliest_start(2, 1, held, now=40) == (50.0, 1)
    assert earliest_start(1, 0, [Held(1, 10.0)], now=40) == (40, 0)  # overdue: stopped now


def test_a_run_whose_limit_ends_before_the_reserved_start_passes_it() -> None:
    runs = [cand("big", 4, 1, blocked_since=0), cand("quick", 2, 2, limit=8)]
    decision = pick(runs, cap(2, held=HELD_TILL_50), now=40, reserve_after_s=30)
    assert decision.reserved_for == "big"
    assert decision.starts_by == 50.0
    assert decision.picked == ["quick"]  # ends by 48, before big can start


def test_a_run_that_would_delay_the_reserved_run_waits() -> None:
    runs = [cand("big", 4, 1, blocked_since=0), cand("slow", 2, 2, limit=20), cand("open", 1, 3)]
    decision = pick(runs, cap(2, held=HELD_TILL_50), now=40, reserve_after_s=30)
    assert decision.picked == []  # 40 + 20 > 50, and no limit at all can't be planned
    assert "can start in 10 s" in decision.waiting["slow"]
    assert "time limit ends before then" in decision.waiting["open"]


def test_gpus_the_reserved_run_will_not_need_are_used_by_any_run() -> None:
    # big needs 3: at t=50 four are free, so one spare GPU may go to a run of any length.
    runs = [cand("big", 3, 1, blocked_since=0), cand("long", 1, 2), cand("long2", 1, 3)]
    decision = pick(runs, cap(2, held=HELD_TILL_50), now=40, reserve_after_s=30)
    assert decision.picked == ["long"]
    assert "reservation" in decision.waiting["long2"]


def test_without_limits_on_the_holders_a_reservation_drains_the_gpus() -> None:
    runs = [cand("big", 4, 1, blocked_since=0), cand("quick", 1, 2, limit=1)]
    decision = pick(runs, cap(2, held=(Held(2, None),)), now=40, reserve_after_s=30)
    assert decision.starts_by is None
    assert decision.picked == []


def test_runs_picked_in_the_same_pass_count_as_holders() -> None:
    # "first" takes 2 of 4 GPUs with a 10 s limit; big (4) can then start at 110 at the latest.
    runs = [
        cand("first", 2, 1, limit=10),
        cand("big", 4, 2, blocked_since=0),
        cand("q", 2, 3, limit=5),
    ]
    decision = pick(runs, cap(4), now=100, reserve_after_s=30)
    assert decision.picked == ["first", "q"]
    assert decision.starts_by == 110


def test_explain_false_gives_the_same_picks_without_reasons() -> None:
    runs = [cand("big", 4, 1, blocked_since=0), cand("quick", 2, 2, limit=8), cand("x", 1, 3)]
    full = pick(runs, cap(2, held=HELD_TILL_50), now=40, reserve_after_s=30)
    lean = pick(runs, cap(2, held=HELD_TILL_50), now=40, reserve_after_s=30, explain=False)
    assert lean.picked == full.picked and lean.waiting == {}
