"""``scale_to``: after it settles, exactly the target number of connections run."""

from __future__ import annotations

import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from startline.engine.pool import Pool
from startline.testing import RecordingTarget


@settings(max_examples=60, deadline=None)
@given(targets=st.lists(st.integers(0, 40), min_size=1, max_size=25), think=st.sampled_from([0.001, 0.5]))
def test_after_scale_to_settles_exactly_target_connections_run(targets, think):
    target = RecordingTarget()
    running = set()
    opened = []

    async def open_session(slot):
        opened.append(slot)
        return await target.open_session("w", slot)

    async def connection(slot, session, lease):
        with lease:
            running.add(slot)
            try:
                while True:
                    await trio.sleep(think)
            finally:
                running.discard(slot)

    async def main():
        async with trio.open_nursery() as nursery:
            pool = Pool(nursery, open_session, connection)
            await pool.prepare(3)
            for n in targets:
                await pool.scale_to(n)
                await trio.testing.wait_all_tasks_blocked()
                assert len(running) == n == pool.size
                assert running == set(range(n))  # lowest slots kept, highest cancelled
            pool.cancel_all()
            await pool.wait_empty()
        await pool.close()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert len(opened) == len(set(opened)), "a slot's session is reopened, not reused"
    assert target.closed == len(opened)


def test_connections_that_finish_leave_the_pool():
    async def main():
        async def open_session(slot):
            return await RecordingTarget().open_session("w", slot)

        async def connection(slot, session, lease):
            with lease:
                await trio.sleep(slot + 1)

        async with trio.open_nursery() as nursery:
            pool = Pool(nursery, open_session, connection)
            await pool.scale_to(3)
            assert pool.size == 3
            await trio.sleep(2.5)
            assert pool.size == 1
            await pool.wait_empty()
            assert pool.size == 0

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_scale_to_does_not_restart_connections_that_end_at_once():
    starts = []

    async def main():
        async def open_session(slot):
            return await RecordingTarget().open_session("w", slot)

        async def connection(slot, session, lease):
            with lease:
                starts.append(slot)  # returns at once, as after the run's planned end

        async with trio.open_nursery() as nursery:
            pool = Pool(nursery, open_session, connection)
            await pool.scale_to(4)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert sorted(starts) == [0, 1, 2, 3]


def test_rewarm_brings_back_each_open_session_in_the_release_order_and_stops_at_its_instant():
    """Issue 25: the release's last millisecond rewarms the parked sessions first-released first;
    past ``by`` (the instant it must be done by) it touches none more."""
    touched: list[int] = []

    class Session:
        def __init__(self, slot: int, clock: trio.testing.MockClock) -> None:
            self.slot, self.clock = slot, clock

        def rewarm(self) -> None:
            touched.append(self.slot)
            self.clock.jump(0.1)  # each costs a tenth of a second here

    clock = trio.testing.MockClock()

    async def main():
        async def open_session(slot):
            return Session(slot, clock)

        async def connection(slot, session, lease):
            with lease:
                await trio.sleep_forever()

        async with trio.open_nursery() as nursery:
            pool = Pool(nursery, open_session, connection)
            await pool.prepare(5)
            t0 = trio.current_time()
            pool.rewarm([3, 9, 4, 0, 1, 2], by=t0 + 0.35)  # slot 9 has no session: skipped
            assert touched == [3, 4, 0, 1]  # the fourth began before `by`; none after it
            touched.clear()
            pool.rewarm([2], by=trio.current_time())  # nothing left of the time: nothing touched
            assert touched == []
            nursery.cancel_scope.cancel()

    trio.run(main, clock=clock)


def test_connections_started_and_cancelled_at_once_each_give_their_place_back():
    """The task is the connection's loop, holding its lease: ``scale_to`` returns once each new
    one has entered it, and a scale-down at once, before any went further, cancels them; each
    gives its place back on the way out."""
    entered: list[int] = []

    async def main():
        async def open_session(slot):
            return await RecordingTarget().open_session("w", slot)

        async def connection(slot, session, lease):
            with lease:
                entered.append(slot)
                await trio.sleep_forever()

        async with trio.open_nursery() as nursery:
            pool = Pool(nursery, open_session, connection)
            await pool.prepare(3)
            await pool.scale_to(3)
            assert entered == [0, 1, 2] and pool.size == 3  # each started, one after another
            await pool.scale_to(0)
            with trio.fail_after(10):  # (virtual time: at once, were a place never given back)
                await pool.wait_exited()
            assert pool.size == 0

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
