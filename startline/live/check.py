"""``startline check --connect``: reach the control plane and the target, and have the target
prepare (explain) every SQL statement with sample parameters."""

from __future__ import annotations

import random
from typing import Any

import attrs
import trio

from startline.compose import open_control
from startline.engine.ports import ControlPlaneError, Target
from startline.engine.scenario import ConfigError, Scenario
from startline.engine.workload import ParamSource
from startline.urls import Url


async def check_connect(scenario: Scenario, control_url: Url, target_url: Url, target: Any) -> list[str]:
    """``startline check --connect``: reach the control plane and the target (``open_target``'s,
    for ``target_url``), and have the target prepare (explain) every SQL statement with sample
    parameters. What went wrong, as lines naming the field; empty when all is well."""
    problems: list[str] = []
    if not control_url.in_process:
        cp = open_control(control_url)
        try:
            with trio.fail_after(scenario.control_timeout_s):
                await cp.server_time()
        except (ControlPlaneError, trio.TooSlowError, OSError) as exc:
            problems.append(f"control: cannot reach it: {exc or type(exc).__name__}")
        finally:
            await cp.close()
    if target.traits.checks_statements:
        params = ParamSource(
            random.Random(scenario.seed),
            slot=0,
            specs=scenario.param_specs,
        )
        sampled = {(op, name) for op, name, _ in scenario.undrawn_samples}  # drawn at run time: NULL here

        def sample(op: Any) -> dict[str, Any]:
            drawn = params.draw(
                attrs.evolve(op, params={k: v for k, v in op.params.items() if (op.name, k) not in sampled})
            )
            return drawn | {k: None for k in op.params if (op.name, k) in sampled}

        statements = [
            (f"operations[{i}].sql", op.sql, sample(op))
            for i, op in enumerate(scenario.operations)
            if op.sql is not None
        ]
        for i, op in enumerate(scenario.operations):  # a transaction's steps; what a step reads is NULL here
            drawn = sample(op) | {name: None for step in op.transaction for name in step.into}
            statements += [
                (f"operations[{i}].transaction[{j}].sql", t.sql, drawn) for j, t in enumerate(op.transaction)
            ]
        for where, said in await target.check_statements(scenario.setup, statements):
            problems.append(f"{where}: the target refuses it: {said}")
    elif target_url.scheme != "memory":
        try:
            await reach_target(target, scenario, "check")
        except ConfigError as exc:
            problems.append(str(exc))
    return problems


async def reach_target(target: Target, scenario: Scenario, who: str) -> None:
    """Open one session on the target and close it (within ``control_timeout_s``): a target that
    cannot be reached (a database that does not exist, a wrong host) is one line naming it, in
    seconds (``run``: before any worker process is started to fail on it). ``who`` names the
    session (its worker id). ``ConfigError`` naming ``target``."""
    try:
        with trio.fail_after(scenario.control_timeout_s):
            session = await target.open_session(who, 0)
            await session.close()
    except Exception as exc:  # whatever the driver raises: said in one line
        raise ConfigError("target", f"cannot reach it: {type(exc).__name__}: {exc}".strip()) from exc
