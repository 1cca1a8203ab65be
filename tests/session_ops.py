"""``call`` operations that hold a session (issue 24), importable by worker processes."""

from __future__ import annotations

from typing import Any


async def add(session: Any, params: dict[str, Any]) -> None:
    """Read a row, write it back changed, in one transaction."""
    async with session.transaction():
        ((v,),) = await session.execute("SELECT v FROM kv WHERE k = :k", params)
        await session.execute("UPDATE kv SET v = :v WHERE k = :k", {"k": params["k"], "v": v + params["d"]})


class Refused(Exception):
    pass


async def add_then_fail(session: Any, params: dict[str, Any]) -> None:
    """The same write, then an error before the commit: nothing of it may stay."""
    async with session.transaction():
        await session.execute("UPDATE kv SET v = v + :d WHERE k = :k", params)
        raise Refused("changed my mind")


async def add_to_history(session: Any, params: dict[str, Any]) -> None:
    """TPC-B's bookkeeping from code: an account, a teller, the branch and the history, together."""
    async with session.transaction():
        ((bid,),) = await session.execute("SELECT bid FROM accounts WHERE aid = :aid", params)
        await session.execute("UPDATE accounts SET abalance = abalance + :delta WHERE aid = :aid", params)
        await session.execute("UPDATE tellers SET tbalance = tbalance + :delta WHERE tid = 1", params)
        mine = params | {"bid": bid}
        await session.execute("UPDATE branches SET bbalance = bbalance + :delta WHERE bid = :bid", mine)
        await session.execute("INSERT INTO history VALUES (1, :bid, :aid, :delta, datetime('now'))", mine)
