"""TPC-C-like (issue 24; not audited, not comparable with published TPC-C results): the nine
tables and their initial population (TPC-C 5.11, clause 4.3.3.1), the five transactions
(clauses 2.4–2.8) as ``call`` operations that hold the connection's session, and the
consistency conditions 1–4 (clause 3.3.2) checked on the database after a run.

Each transaction draws its inputs from one seed parameter (so a retried transaction replays the
same inputs); its home warehouse is the connection's (``type = "connection"``). Money is passed
as integer cents and divided in SQL (``:cents / 100.0``: exact ``numeric`` on PostgreSQL).
docs/workloads.md lists every deviation."""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from typing import Any

from startline.engine.distributions import nurand

DISTRICTS = 10
"""Districts per warehouse."""
ITEMS, CUSTOMERS = 100_000, 3000
"""TPC-C's items, and customers per district (``items``, ``customers`` options: smaller for a
quick look)."""
C_LAST_LOAD, C_LAST_RUN, C_ID, C_OL_I_ID = 157, 223, 259, 7911
"""NURand's C constants: C_LAST at load and in the run differ by 66 (clause 2.1.6.1: in
[65, 119], not 96 or 112); C for C_ID and OL_I_ID."""
SYLLABLES = ("BAR", "OUGHT", "ABLE", "PRI", "PRES", "ESE", "ANTI", "CALLY", "ATION", "EING")
MIX = {"new_order": 45.0, "payment": 43.0, "order_status": 4.0, "delivery": 4.0, "stock_level": 4.0}
"""The standard mix (clause 5.2.3's minimums, as every driver runs it)."""
THINK_MS = {"new_order": 30_000, "payment": 15_000, "order_status": 12_000, "delivery": 7_000, "stock_level": 7_000}
"""Keying time + mean think time per transaction (clause 5.2.5), with ``think_times = true``."""
LOADED = "2026-01-01 00:00:00"
"""The load's timestamps (``o_entry_d``, ``h_date``, ``c_since``)."""

_ALNUM = bytes(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"[b % 62] for b in range(256))


def last_name(number: int) -> str:
    """C_LAST of a number in [0, 999]: its three digits' syllables (clause 4.3.2.3)."""
    return SYLLABLES[number // 100] + SYLLABLES[number // 10 % 10] + SYLLABLES[number % 10]


def astring(rng: random.Random, lo: int, hi: int) -> str:
    """A random alphanumeric string of length in [lo, hi] (clause 4.3.2.2's a-string)."""
    return rng.randbytes(rng.randint(lo, hi)).translate(_ALNUM).decode("ascii")


def _data(rng: random.Random) -> str:
    """I_DATA / S_DATA: 26–50 characters, 10 % of them holding "ORIGINAL" (clause 4.3.3.1)."""
    text = astring(rng, 26, 50)
    if rng.random() < 0.1:
        at = rng.randint(0, len(text) - 8)
        text = text[:at] + "ORIGINAL" + text[at + 8 :]
    return text


def _money(rng: random.Random, lo_cents: int, hi_cents: int) -> float:
    return rng.randint(lo_cents, hi_cents) / 100


def _zip(rng: random.Random) -> str:
    return f"{rng.randint(0, 9999):04d}11111"


def _address(rng: random.Random) -> tuple[str, str, str, str, str]:
    return astring(rng, 10, 20), astring(rng, 10, 20), astring(rng, 10, 20), astring(rng, 2, 2).upper(), _zip(rng)


def new_orders(customers: int) -> int:
    """Undelivered orders per district at load: the last 900 of 3,000 (30 %)."""
    return customers * 3 // 10


# --- the tables -----------------------------------------------------------------------------

_MONEY = {"postgresql": "numeric(12, 2)", "sqlite": "REAL"}
_STAMP = {"postgresql": "timestamp", "sqlite": "TEXT"}
_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "warehouse": (
        ("w_id", "int"),
        ("w_name", "varchar(10)"),
        ("w_street_1", "varchar(20)"),
        ("w_street_2", "varchar(20)"),
        ("w_city", "varchar(20)"),
        ("w_state", "char(2)"),
        ("w_zip", "char(9)"),
        ("w_tax", "numeric(4, 4)"),
        ("w_ytd", "money"),
    ),
    "district": (
        ("d_id", "int"),
        ("d_w_id", "int"),
        ("d_name", "varchar(10)"),
        ("d_street_1", "varchar(20)"),
        ("d_street_2", "varchar(20)"),
        ("d_city", "varchar(20)"),
        ("d_state", "char(2)"),
        ("d_zip", "char(9)"),
        ("d_tax", "numeric(4, 4)"),
        ("d_ytd", "money"),
        ("d_next_o_id", "int"),
    ),
    "customer": (
        ("c_id", "int"),
        ("c_d_id", "int"),
        ("c_w_id", "int"),
        ("c_first", "varchar(16)"),
        ("c_middle", "char(2)"),
        ("c_last", "varchar(16)"),
        ("c_street_1", "varchar(20)"),
        ("c_street_2", "varchar(20)"),
        ("c_city", "varchar(20)"),
        ("c_state", "char(2)"),
        ("c_zip", "char(9)"),
        ("c_phone", "char(16)"),
        ("c_since", "stamp"),
        ("c_credit", "char(2)"),
        ("c_credit_lim", "money"),
        ("c_discount", "numeric(4, 4)"),
        ("c_balance", "money"),
        ("c_ytd_payment", "money"),
        ("c_payment_cnt", "int"),
        ("c_delivery_cnt", "int"),
        ("c_data", "varchar(500)"),
    ),
    "history": (
        ("h_c_id", "int"),
        ("h_c_d_id", "int"),
        ("h_c_w_id", "int"),
        ("h_d_id", "int"),
        ("h_w_id", "int"),
        ("h_date", "stamp"),
        ("h_amount", "money"),
        ("h_data", "varchar(24)"),
    ),
    "orders": (
        ("o_id", "int"),
        ("o_d_id", "int"),
        ("o_w_id", "int"),
        ("o_c_id", "int"),
        ("o_entry_d", "stamp"),
        ("o_carrier_id", "int"),
        ("o_ol_cnt", "int"),
        ("o_all_local", "int"),
    ),
    "new_order": (("no_o_id", "int"), ("no_d_id", "int"), ("no_w_id", "int")),
    "order_line": (
        ("ol_o_id", "int"),
        ("ol_d_id", "int"),
        ("ol_w_id", "int"),
        ("ol_number", "int"),
        ("ol_i_id", "int"),
        ("ol_supply_w_id", "int"),
        ("ol_delivery_d", "stamp"),
        ("ol_quantity", "int"),
        ("ol_amount", "money"),
        ("ol_dist_info", "char(24)"),
    ),
    "item": (
        ("i_id", "int"),
        ("i_im_id", "int"),
        ("i_name", "varchar(24)"),
        ("i_price", "numeric(5, 2)"),
        ("i_data", "varchar(50)"),
    ),
    "stock": (
        ("s_i_id", "int"),
        ("s_w_id", "int"),
        ("s_quantity", "int"),
        *((f"s_dist_{d:02d}", "char(24)") for d in range(1, DISTRICTS + 1)),
        ("s_ytd", "int"),
        ("s_order_cnt", "int"),
        ("s_remote_cnt", "int"),
        ("s_data", "varchar(50)"),
    ),
}
_KEYS = {
    "warehouse": "w_id",
    "district": "d_w_id, d_id",
    "customer": "c_w_id, c_d_id, c_id",
    "orders": "o_w_id, o_d_id, o_id",
    "new_order": "no_w_id, no_d_id, no_o_id",
    "order_line": "ol_w_id, ol_d_id, ol_o_id, ol_number",
    "item": "i_id",
    "stock": "s_w_id, s_i_id",
}
INDEXES = {
    "customer": ("CREATE INDEX customer_name ON customer (c_w_id, c_d_id, c_last, c_first)",),
    "orders": ("CREATE INDEX orders_customer ON orders (o_w_id, o_d_id, o_c_id, o_id)",),
}
"""Payment and Order-Status find a customer by last name and a customer's last order."""


def _sql_type(kind: str, dialect: str) -> str:
    if kind == "money":
        return _MONEY[dialect]
    if kind == "stamp":
        return _STAMP[dialect]
    if dialect == "sqlite":
        return "INTEGER" if kind == "int" else "REAL" if kind.startswith("numeric") else "TEXT"
    return kind


def ddl(table: str, dialect: str) -> str:
    columns = ", ".join(f"{name} {_sql_type(kind, dialect)}" for name, kind in _COLUMNS[table])
    key = f", PRIMARY KEY ({_KEYS[table]})" if table in _KEYS else ""
    return f"CREATE TABLE {table} ({columns}{key})"


def columns(table: str) -> tuple[str, ...]:
    return tuple(name for name, _ in _COLUMNS[table])


def counts(warehouses: int, items: int, customers: int) -> dict[str, int]:
    """Rows per table at load (order lines: the expected 10 per order)."""
    orders = warehouses * DISTRICTS * customers
    return {
        "item": items,
        "warehouse": warehouses,
        "stock": warehouses * items,
        "district": warehouses * DISTRICTS,
        "customer": orders,
        "history": orders,
        "orders": orders,
        "new_order": warehouses * DISTRICTS * new_orders(customers),
        "order_line": orders * 10,
    }


def rows(table: str, warehouses: int, items: int, customers: int) -> Iterator[tuple[Any, ...]]:
    """The table's initial population, the same every load (seeded per table and warehouse)."""
    if table == "item":
        rng = random.Random("item")
        for i in range(1, items + 1):
            yield (i, rng.randint(1, 10_000), astring(rng, 14, 24), _money(rng, 100, 10_000), _data(rng))
        return
    for w in range(1, warehouses + 1):
        rng = random.Random(f"{table}-{w}")
        if table == "warehouse":
            yield (w, astring(rng, 6, 10), *_address(rng), rng.randint(0, 2000) / 10_000, 300_000.0)
        elif table == "stock":
            for i in range(1, items + 1):
                dists = (astring(rng, 24, 24) for _ in range(DISTRICTS))
                yield (i, w, rng.randint(10, 100), *dists, 0, 0, 0, _data(rng))
        elif table == "district":
            for d in range(1, DISTRICTS + 1):
                yield (
                    d,
                    w,
                    astring(rng, 6, 10),
                    *_address(rng),
                    rng.randint(0, 2000) / 10_000,
                    30_000.0,
                    customers + 1,
                )
        else:
            for d in range(1, DISTRICTS + 1):
                yield from _district_rows(table, w, d, items, customers, rng)


def _district_rows(
    table: str, w: int, d: int, items: int, customers: int, rng: random.Random
) -> Iterator[tuple[Any, ...]]:
    delivered = customers - new_orders(customers)  # orders 1..delivered have a carrier
    if table == "customer":
        for c in range(1, customers + 1):
            number = c - 1 if c <= 1000 else nurand(rng, 255, 0, 999, C_LAST_LOAD)
            yield (
                c,
                d,
                w,
                astring(rng, 8, 16),
                "OE",
                last_name(number % 1000),
                *_address(rng),
                "".join(str(rng.randint(0, 9)) for _ in range(16)),
                LOADED,
                "BC" if rng.random() < 0.1 else "GC",
                50_000.0,
                rng.randint(0, 5000) / 10_000,
                -10.0,
                10.0,
                1,
                0,
                astring(rng, 300, 500),
            )
    elif table == "history":
        for c in range(1, customers + 1):
            yield (c, d, w, d, w, LOADED, 10.0, astring(rng, 12, 24))
    elif table == "new_order":
        for o in range(delivered + 1, customers + 1):
            yield (o, d, w)
    else:  # orders and order_line: each order's line count from one stream both read
        owners = list(range(1, customers + 1))
        random.Random(f"owners-{w}-{d}").shuffle(owners)
        lines = random.Random(f"lines-{w}-{d}")
        for o in range(1, customers + 1):
            n = lines.randint(5, 15)
            done = o <= delivered
            if table == "orders":
                yield (o, d, w, owners[o - 1], LOADED, rng.randint(1, 10) if done else None, n, 1)
                continue
            for number in range(1, n + 1):
                amount = 0.0 if done else _money(rng, 1, 999_999)
                yield (
                    o,
                    d,
                    w,
                    number,
                    rng.randint(1, items),
                    w,
                    LOADED if done else None,
                    5,
                    amount,
                    astring(rng, 24, 24),
                )


TABLES = ("item", "warehouse", "stock", "district", "customer", "history", "orders", "new_order", "order_line")


# --- the transactions ------------------------------------------------------------------------


class _Rollback(Exception):
    """New-Order's unused item number (1 % of them): the transaction is rolled back, and counts."""


def _inputs(params: Mapping[str, Any]) -> tuple[random.Random, int, int, int, int]:
    return random.Random(params["seed"]), params["w"], params["warehouses"], params["items"], params["customers"]


def _other(rng: random.Random, w: int, warehouses: int) -> int:
    """A warehouse other than ``w`` (``w`` itself when there is no other)."""
    if warehouses == 1:
        return w
    other = rng.randint(1, warehouses - 1)
    return other if other < w else other + 1


def _names(customers: int) -> int:
    """The highest C_LAST number every district has (all 1,000 at TPC-C's 3,000 customers)."""
    return min(999, customers - 1)


async def _customer(session: Any, rng: random.Random, w: int, d: int, customers: int) -> int:
    """A customer of (w, d): 60 % by last name (the middle one of those by that name, ordered by
    first name; clause 2.5.2.2), else by number."""
    if rng.randint(1, 100) > 60:
        return nurand(rng, 1023, 1, customers, C_ID)
    last = last_name(nurand(rng, 255, 0, _names(customers), C_LAST_RUN))
    found = await session.execute(
        "SELECT c_id FROM customer WHERE c_w_id = :w AND c_d_id = :d AND c_last = :last ORDER BY c_first",
        {"w": w, "d": d, "last": last},
    )
    if not found:
        raise LookupError(f"no customer named {last} in warehouse {w} district {d}")
    return found[(len(found) + 1) // 2 - 1][0]


async def new_order(session: Any, params: Mapping[str, Any]) -> None:
    """Clause 2.4: an order of 5–15 lines; 1 % name an unused item and are rolled back."""
    rng, w, warehouses, items, customers = _inputs(params)
    d, c = rng.randint(1, DISTRICTS), nurand(rng, 1023, 1, customers, C_ID)
    count, rollback = rng.randint(5, 15), rng.randint(1, 100) == 1
    lines = []
    for n in range(count):
        item = items + 1 if rollback and n == count - 1 else nurand(rng, 8191, 1, items, C_OL_I_ID)
        supply = w if rng.randint(1, 100) > 1 else _other(rng, w, warehouses)
        lines.append((item, supply, rng.randint(1, 10)))
    local = int(all(s == w for _, s, _ in lines))
    key = {"w": w, "d": d}
    try:
        async with session.transaction():
            await session.execute("SELECT w_tax FROM warehouse WHERE w_id = :w", key)
            ((o, _tax),) = await session.execute(
                "UPDATE district SET d_next_o_id = d_next_o_id + 1 WHERE d_w_id = :w AND d_id = :d "
                "RETURNING d_next_o_id - 1, d_tax",
                key,
            )
            await session.execute(
                "SELECT c_discount, c_last, c_credit FROM customer WHERE c_w_id = :w AND c_d_id = :d AND c_id = :c",
                {**key, "c": c},
            )
            order = {**key, "o": o}
            await session.run(
                "INSERT INTO orders (o_id, o_d_id, o_w_id, o_c_id, o_entry_d, o_carrier_id, o_ol_cnt, o_all_local) "
                "VALUES (:o, :d, :w, :c, CURRENT_TIMESTAMP, NULL, :n, :local)",
                {**order, "c": c, "n": count, "local": local},
            )
            await session.run("INSERT INTO new_order (no_o_id, no_d_id, no_w_id) VALUES (:o, :d, :w)", order)
            # stock rows in one order (by warehouse, item) in every transaction: no deadlock between two
            for number, (item, supply, quantity) in sorted(enumerate(lines, 1), key=lambda x: (x[1][1], x[1][0])):
                found = await session.execute("SELECT i_price, i_name, i_data FROM item WHERE i_id = :i", {"i": item})
                if not found:
                    raise _Rollback
                price = found[0][0]
                ((dist, _s_data),) = await session.execute(
                    "UPDATE stock SET s_quantity = CASE WHEN s_quantity >= :q + 10 THEN s_quantity - :q "
                    "ELSE s_quantity - :q + 91 END, s_ytd = s_ytd + :q, s_order_cnt = s_order_cnt + 1, "
                    f"s_remote_cnt = s_remote_cnt + :remote WHERE s_i_id = :i AND s_w_id = :s "
                    f"RETURNING s_dist_{d:02d}, s_data",
                    {"q": quantity, "remote": int(supply != w), "i": item, "s": supply},
                )
                await session.run(
                    "INSERT INTO order_line (ol_o_id, ol_d_id, ol_w_id, ol_number, ol_i_id, ol_supply_w_id, "
                    "ol_delivery_d, ol_quantity, ol_amount, ol_dist_info) "
                    "VALUES (:o, :d, :w, :n, :i, :s, NULL, :q, :amount, :dist)",
                    {
                        **order,
                        "n": number,
                        "i": item,
                        "s": supply,
                        "q": quantity,
                        "amount": quantity * price,
                        "dist": dist,
                    },
                )
    except _Rollback:
        return


async def payment(session: Any, params: Mapping[str, Any]) -> None:
    """Clause 2.5: a payment of $1–5,000 to the district; 15 % for a customer of another
    warehouse, 60 % of customers found by last name."""
    rng, w, warehouses, _items, customers = _inputs(params)
    d, cents = rng.randint(1, DISTRICTS), rng.randint(100, 500_000)
    local = warehouses == 1 or rng.randint(1, 100) <= 85
    cw, cd = (w, d) if local else (_other(rng, w, warehouses), rng.randint(1, DISTRICTS))
    async with session.transaction():
        ((w_name,),) = await session.execute(
            "UPDATE warehouse SET w_ytd = w_ytd + :cents / 100.0 WHERE w_id = :w RETURNING w_name",
            {"w": w, "cents": cents},
        )
        ((d_name,),) = await session.execute(
            "UPDATE district SET d_ytd = d_ytd + :cents / 100.0 WHERE d_w_id = :w AND d_id = :d RETURNING d_name",
            {"w": w, "d": d, "cents": cents},
        )
        c = await _customer(session, rng, cw, cd, customers)
        who = {"cw": cw, "cd": cd, "c": c}
        ((credit,),) = await session.execute(
            "UPDATE customer SET c_balance = c_balance - :cents / 100.0, "
            "c_ytd_payment = c_ytd_payment + :cents / 100.0, c_payment_cnt = c_payment_cnt + 1 "
            "WHERE c_w_id = :cw AND c_d_id = :cd AND c_id = :c RETURNING c_credit",
            {**who, "cents": cents},
        )
        if credit == "BC":
            await session.run(
                "UPDATE customer SET c_data = substr(:info || c_data, 1, 500) "
                "WHERE c_w_id = :cw AND c_d_id = :cd AND c_id = :c",
                {**who, "info": f"{c} {cd} {cw} {d} {w} {cents / 100:.2f} "},
            )
        await session.run(
            "INSERT INTO history (h_c_id, h_c_d_id, h_c_w_id, h_d_id, h_w_id, h_date, h_amount, h_data) "
            "VALUES (:c, :cd, :cw, :d, :w, CURRENT_TIMESTAMP, :cents / 100.0, :data)",
            {**who, "d": d, "w": w, "cents": cents, "data": f"{w_name}    {d_name}"[:24]},
        )


async def order_status(session: Any, params: Mapping[str, Any]) -> None:
    """Clause 2.6: a customer's balance, last order and its lines (read only)."""
    rng, w, _warehouses, _items, customers = _inputs(params)
    d = rng.randint(1, DISTRICTS)
    async with session.transaction():
        c = await _customer(session, rng, w, d, customers)
        key = {"w": w, "d": d, "c": c}
        await session.execute(
            "SELECT c_balance, c_first, c_middle, c_last FROM customer WHERE c_w_id = :w AND c_d_id = :d AND c_id = :c",
            key,
        )
        last = await session.execute(
            "SELECT o_id, o_entry_d, o_carrier_id FROM orders WHERE o_w_id = :w AND o_d_id = :d AND o_c_id = :c "
            "ORDER BY o_id DESC LIMIT 1",
            key,
        )
        if last:
            await session.execute(
                "SELECT ol_i_id, ol_supply_w_id, ol_quantity, ol_amount, ol_delivery_d FROM order_line "
                "WHERE ol_w_id = :w AND ol_d_id = :d AND ol_o_id = :o",
                {**key, "o": last[0][0]},
            )


async def delivery(session: Any, params: Mapping[str, Any]) -> None:
    """Clause 2.7: the oldest undelivered order of each of the warehouse's districts delivered,
    in one transaction (a district with none, or whose order another delivery took, is skipped)."""
    rng, w, _warehouses, _items, _customers = _inputs(params)
    carrier = rng.randint(1, 10)
    async with session.transaction():
        for d in range(1, DISTRICTS + 1):
            key = {"w": w, "d": d}
            ((o,),) = await session.execute(
                "SELECT min(no_o_id) FROM new_order WHERE no_w_id = :w AND no_d_id = :d", key
            )
            if o is None:
                continue
            order = {**key, "o": o}
            if not await session.execute(
                "DELETE FROM new_order WHERE no_w_id = :w AND no_d_id = :d AND no_o_id = :o RETURNING no_o_id", order
            ):
                continue
            ((c,),) = await session.execute(
                "UPDATE orders SET o_carrier_id = :carrier WHERE o_w_id = :w AND o_d_id = :d AND o_id = :o "
                "RETURNING o_c_id",
                {**order, "carrier": carrier},
            )
            amounts = await session.execute(
                "UPDATE order_line SET ol_delivery_d = CURRENT_TIMESTAMP "
                "WHERE ol_w_id = :w AND ol_d_id = :d AND ol_o_id = :o RETURNING ol_amount",
                order,
            )
            await session.run(
                "UPDATE customer SET c_balance = c_balance + :total, c_delivery_cnt = c_delivery_cnt + 1 "
                "WHERE c_w_id = :w AND c_d_id = :d AND c_id = :c",
                {**key, "c": c, "total": sum(a for (a,) in amounts)},
            )


async def stock_level(session: Any, params: Mapping[str, Any]) -> None:
    """Clause 2.8: how many items of a district's last 20 orders are below a threshold (read
    committed, no transaction of its own)."""
    rng, w, _warehouses, _items, _customers = _inputs(params)
    d, threshold = rng.randint(1, DISTRICTS), rng.randint(10, 20)
    ((next_o,),) = await session.execute(
        "SELECT d_next_o_id FROM district WHERE d_w_id = :w AND d_id = :d", {"w": w, "d": d}
    )
    await session.execute(
        "SELECT count(DISTINCT s_i_id) FROM order_line, stock WHERE ol_w_id = :w AND ol_d_id = :d "
        "AND ol_o_id < :next AND ol_o_id >= :next - 20 AND s_w_id = :w AND s_i_id = ol_i_id "
        "AND s_quantity < :threshold",
        {"w": w, "d": d, "next": next_o, "threshold": threshold},
    )


# --- after the run: consistency conditions 1–4 ------------------------------------------------

CONDITIONS = (
    (
        "consistency_1",
        "W_YTD = sum(D_YTD) in every warehouse",
        "SELECT w_id, w_ytd, (SELECT sum(d_ytd) FROM district WHERE d_w_id = w_id) FROM warehouse",
    ),
    (
        "consistency_2",
        "D_NEXT_O_ID - 1 = max(O_ID) = max(NO_O_ID) in every district",
        "SELECT d_w_id, d_id, d_next_o_id - 1, "
        "(SELECT max(o_id) FROM orders WHERE o_w_id = d_w_id AND o_d_id = d_id), "
        "(SELECT max(no_o_id) FROM new_order WHERE no_w_id = d_w_id AND no_d_id = d_id) FROM district",
    ),
    (
        "consistency_3",
        "max(NO_O_ID) - min(NO_O_ID) + 1 = the NEW-ORDER rows in every district",
        "SELECT no_w_id, no_d_id, max(no_o_id) - min(no_o_id) + 1, count(*) FROM new_order GROUP BY no_w_id, no_d_id",
    ),
    (
        "consistency_4",
        "sum(O_OL_CNT) = the ORDER-LINE rows in every district",
        "SELECT o_w_id, o_d_id, sum(o_ol_cnt), "
        "(SELECT count(*) FROM order_line WHERE ol_w_id = o_w_id AND ol_d_id = o_d_id) FROM orders "
        "GROUP BY o_w_id, o_d_id",
    ),
)


def _holds(name: str, row: tuple[Any, ...]) -> bool:
    if name == "consistency_1":
        return row[2] is not None and abs(float(row[1]) - float(row[2])) < 0.005  # (SQLite's REAL: within a cent)
    if name == "consistency_2":
        return row[2] == row[3] and row[4] in (None, row[3])  # (no NEW-ORDER row left: every order delivered)
    return row[-2] == row[-1]


async def check(session: Any) -> list[dict[str, Any]]:
    """Consistency conditions 1–4 (clause 3.3.2.1–4) on the database as it is: each with the
    rows (warehouses or districts) it was checked on and the first that broke it."""
    out = []
    for name, what, sql in CONDITIONS:
        rows = await session.query(sql, {})
        broken = [r for r in rows if not _holds(name, r)]
        detail = f"{what}: {len(rows) - len(broken)} of {len(rows)} hold"
        if broken:
            detail += f"; first broken: {tuple(str(x) for x in broken[0])}"
        ok = not broken and (bool(rows) or name == "consistency_3")  # (3: no NEW-ORDER row left is fine)
        out.append({"name": name, "ok": ok, "checked": len(rows), "detail": detail})
    return out
