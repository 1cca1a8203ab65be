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

    async def connection(slot, session):
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

        async def connection(slot, session):
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

        async def connection(slot, session):
            starts.append(slot)  # returns at once, as after the run's planned end

        async with trio.open_nursery() as nursery:
            pool = Pool(nursery, open_session, connection)
            await pool.scale_to(4)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert sorted(starts) == [0, 1, 2, 3]
