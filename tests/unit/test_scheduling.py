"""The pure scheduling decision: fit, backfill, reservations, ordering, wait reasons."""

from __future__ import annotations

from launchyard.scheduling import AgentView, Candidate, Capacity, explain_wait, ordered, pick


def cand(run_id: str, gpus: int, seq: int, *, rank: int = 2, queued_at: float = 100.0) -> Candidate:
    return Candidate(run_id=run_id, gpus=gpus, priority_rank=rank, seq=seq, queued_at=queued_at)


def cap(free: int, total: int = 4, slots: int = 10) -> Capacity:
    return Capacity(free_gpus=free, total_gpus=total, free_slots=slots)


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
        [cand("big", 4, 1, queued_at=0), cand("small", 1, 2)], cap(2), now=31, reserve_after_s=30
    )
    assert decision.picked == []
    assert decision.reserved_for == "big"
    assert "reservation" in decision.waiting["small"]


def test_reserved_run_starts_once_gpus_drain() -> None:
    decision = pick(
        [cand("big", 4, 1, queued_at=0), cand("small", 1, 2)], cap(4), now=31, reserve_after_s=30
    )
    assert decision.picked == ["big"]


def test_run_larger_than_the_agent_never_blocks_others() -> None:
    decision = pick([cand("huge", 8, 1, queued_at=0), cand("ok", 1, 2)], cap(4), now=1000)
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
    """Simulate: a 4-GPU run behind an endless stream of 1-GPU runs still starts."""
    now, running, seq = 0.0, [], 0
    queue = [cand("big", 4, 0, queued_at=0)]
    started_big_at = None
    while now < 200 and started_big_at is None:
        seq += 1
        queue.append(cand(f"s{seq}", 1, seq, queued_at=now))
        running = [(rid, g, end) for rid, g, end in running if end > now]
        free = 4 - sum(g for _, g, _ in running)
        decision = pick(ordered(queue), cap(free, slots=10), now=now, reserve_after_s=10)
        for rid in decision.picked:
            c = next(q for q in queue if q.run_id == rid)
            running.append((rid, c.gpus, now + 3))
            queue.remove(c)
            if rid == "big":
                started_big_at = now
        now += 1
    assert started_big_at is not None and started_big_at <= 10 + 3 + 1


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
