"""The composition root's one job: turn URLs into the backends the engine's ports need."""

from __future__ import annotations

from typing import Any

from startline.engine.ports import ControlPlane, Target
from startline.engine.scenario import ConfigError, Scenario
from startline.urls import Url

SNOWFLAKE_EXTRA = "snowflake:// needs the Snowflake connector: pip install 'startline[snowflake]'"
POSTGRES_EXTRA = "postgresql:// needs psycopg: pip install 'startline[postgres]'"
BACKENDS = {
    "snowflake": ("startline.backends.snowflake", "snowflake", SNOWFLAKE_EXTRA),
    "postgresql": ("startline.backends.postgres", "psycopg", POSTGRES_EXTRA),
}
"""scheme → (backend module, the driver package an extra provides, the line naming that extra)."""


def backend(scheme: str, field: str) -> Any:
    """A backend module behind an extra, or a ConfigError naming the extra when its driver is missing."""
    import importlib

    module, driver, missing = BACKENDS[scheme]
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if exc.name is not None and exc.name.split(".")[0] == driver:
            raise ConfigError(field, missing) from None
        raise


def open_control(url: Url) -> ControlPlane:
    if url.scheme == "sqlite":
        from startline.backends.sqlite import SqliteControlPlane

        assert url.path is not None
        return SqliteControlPlane(url.path)
    if url.scheme == "snowflake":
        return backend("snowflake", "control").SnowflakeControlPlane.from_url(url)
    if url.scheme == "postgresql":
        return backend("postgresql", "control").PostgresControlPlane.from_url(url)
    raise ConfigError("control", f"{url.scheme}:// is in-process only; use it without worker processes")


def open_target(url: Url, scenario: Scenario) -> Any:
    """A ``Target`` (with ``setup`` where it runs SQL) for ``url``; checks the mix and the
    scenario's ``setup`` fit it."""
    if scenario.workload is not None:
        from startline.engine.standard import workload

        runs_on = workload(scenario.workload).targets
        if url.scheme != "memory" and url.scheme not in runs_on:
            listed = ", ".join(s + "://" for s in runs_on)
            raise ConfigError(
                "workload.name", f"{scenario.workload['name']} runs on {listed} targets, not {url.scheme}://"
            )
    target = _target(url, scenario)
    if scenario.setup and not target.traits.setup:
        raise ConfigError("setup", f"the {url.scheme} target runs no setup statements")
    for i, op in enumerate(scenario.operations):
        if op.prepare and not target.traits.prepares:
            raise ConfigError(f"operations[{i}].prepare", f"the {url.scheme} target prepares no statements")
    return target


def _target(url: Url, scenario: Scenario) -> Any:
    target: Target
    if url.scheme == "memory":
        from startline.backends.memory import CallableTarget

        return CallableTarget.for_scenario(scenario)
    from startline.backends.sqlparams import positional
    from startline.engine.workload import resolve_call

    for i, op in enumerate(scenario.operations):
        if op.call is not None:  # awaited as op(session, params): a bad one is a config error now
            resolve_call(op.call, f"operations[{i}].call")
            continue
        known = set(op.params)
        steps = [(f"operations[{i}].sql", op.sql, ())] if op.sql is not None else []
        steps += [(f"operations[{i}].transaction[{j}].sql", s.sql, s.into) for j, s in enumerate(op.transaction)]
        for where, sql, into in steps:
            missing = [name for name in dict.fromkeys(positional(sql)[1]) if name not in known]
            if missing:  # every operation would fail with a KeyError, tens of thousands a second
                raise ConfigError(
                    where,
                    f"placeholder :{missing[0]} has no parameter (give params.{missing[0]}; the parameters are "
                    f"{', '.join(sorted(known)) or 'none'})",
                )
            known.update(into)
    if url.scheme == "sqlite":
        from startline.backends.sqlite import SqliteTarget

        assert url.path is not None
        target = SqliteTarget(url.path)
        return target
    if url.scheme == "snowflake":
        return backend("snowflake", "target").SnowflakeTarget.from_url(url)
    if url.scheme == "postgresql":
        return backend("postgresql", "target").PostgresTarget.from_url(url)
    raise ConfigError("target", f"unknown target {url.scheme}")
