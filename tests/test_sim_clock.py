"""The simulator's clock: its own timers wake each sleeper at exactly its instant, in instant
order (ties in the order the seeded scheduler gives: the same for the same seed), interleaved
rightly with cancel-scope deadlines; a sleeper cancelled while it waits is cancelled as from
``trio.sleep_until``."""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from startline.engine.determinism import seed_everything
from startline.simulate import clock as sim_clock
from startline.simulate.clock import SimClock, sleep, sleep_until

instants = st.lists(st.integers(min_value=0, max_value=40).map(lambda n: n / 8), min_size=1, max_size=30)


def run(main, clock: SimClock | None = None):  # type: ignore[no-untyped-def]
    return trio.run(main, clock=(clock or SimClock()).for_trio())


@settings(max_examples=60, deadline=None)
@given(instants, st.booleans())
def test_every_sleeper_wakes_at_exactly_its_instant_in_instant_order_ties_the_same_for_a_seed(
    wakes: list[float], via_trio_too: bool
) -> None:
    first = _wake_order(wakes, via_trio_too)
    assert all(now == at for now, at, _ in first)
    assert [at for _, at, _ in first] == sorted(wakes)
    assert _wake_order(wakes, via_trio_too) == first


def _wake_order(wakes: list[float], via_trio_too: bool) -> list[tuple[float, float, int]]:
    woke: list[tuple[float, float, int]] = []

    async def sleeper(i: int, at: float) -> None:
        if via_trio_too and i % 3 == 0:  # some on cancel-scope deadlines, as the engine's own sleeps
            await trio.sleep_until(at)
        else:
            await sleep_until(at)
        woke.append((trio.current_time(), at, i))

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for i, at in enumerate(wakes):
                nursery.start_soon(sleeper, i, at)
                await trio.lowlevel.checkpoint()  # each sleeper is asleep before the next starts

    seed_everything(7)
    run(main)
    return woke


def test_a_sleep_of_nothing_or_into_the_past_is_a_checkpoint_that_moves_no_time() -> None:
    async def main() -> list[float]:
        await sleep_until(2.0)
        seen = [trio.current_time()]
        await sleep(0)
        await sleep_until(1.0)
        seen.append(trio.current_time())
        with trio.CancelScope() as scope:
            scope.cancel()
            await sleep(0)  # a checkpoint: a cancelled scope raises there
            seen.append(-1.0)
        return seen

    assert run(main) == [2.0, 2.0]


def test_a_sleeper_cancelled_while_it_waits_is_cancelled_and_its_timer_wakes_no_one() -> None:
    async def main() -> tuple[bool, float, float]:
        with trio.move_on_after(1.0) as scope:
            await sleep_until(5.0)
        cancelled_at = trio.current_time()
        await sleep_until(7.0)  # the dropped timer at 5 neither wakes this task nor stops time
        return scope.cancelled_caught, cancelled_at, trio.current_time()

    assert run(main) == (True, 1.0, 7.0)


def test_time_reads_exactly_the_instant_a_jump_reached() -> None:
    wake = 0.1 + 0.2  # a sum a difference-based jump would miss by a unit in the last place
    clock = SimClock()

    async def main() -> float:
        await sleep_until(0.1)
        await sleep_until(wake)
        return trio.current_time()

    assert run(main, clock) == wake
    assert clock.for_trio().current_time() == wake


def test_the_clock_is_a_mockclock_at_rate_zero_whose_autojump_is_its_own() -> None:
    clock = SimClock()
    assert isinstance(clock.for_trio(), trio.testing.MockClock)  # what the engine asks of virtual time
    with pytest.raises(ValueError):
        clock.jump(-1.0)
    clock.jump(2.5)
    assert clock.current_time() == 2.5
    assert clock.deadline_to_sleep_time(2.5) == 0.0
    assert clock.deadline_to_sleep_time(3.0) > 1e6  # never a real wait: Trio jumps instead


def test_off_a_simclock_the_sleep_is_trios_own() -> None:
    async def main() -> float:
        await sleep(1.5)
        return trio.current_time()

    assert trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0)) == 1.5


def test_a_trio_that_moved_its_deadline_heap_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trio.testing.MockClock, "_autojump", None)

    async def main() -> None:
        await sleep_until(1.0)

    with pytest.raises(sim_clock.HookMoved):
        run(main)


def test_nothing_to_wait_for_ends_a_run_with_only_cancelled_timers() -> None:
    async def main() -> float:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sleep_until, math.inf)
            await sleep_until(3.0)
            nursery.cancel_scope.cancel()
        return trio.current_time()

    assert run(main) == 3.0
