"""Hypothesis-generated bad input: scenario files (wrong types, unknown keys, out-of-range and huge
values, broken TOML) and CLI arguments always get one clear message and exit code 2, never a
traceback. The CLI runs in-process (click's runner) so that hundreds of examples stay fast."""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path

import attrs
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from startline.cli import main
from startline.engine.scenario import Scenario, StartOptions
from tests.test_scenario_cli import GOOD

fuzz = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def toml_value(v: object) -> str:
    """A TOML literal for what the strategies below generate."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    assert isinstance(v, dict)
    return "{ " + ", ".join(f"{json.dumps(k, ensure_ascii=False)} = {toml_value(x)}" for k, x in v.items()) + " }"


scalars = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.integers(10**20, 10**30).map(lambda n: float(n)),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), max_size=12),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.text("abcdefgh_", min_size=1, max_size=6), inner, max_size=3),
    ),
    max_leaves=6,
)
SCENARIO_FIELDS = [f.name for f in attrs.fields(Scenario) if f.name not in ("operations", "start", "schedule")]
START_FIELDS = [f.name for f in attrs.fields(StartOptions)]


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def refused_in_one_line(result, needle: str | None = None) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit)  # not an uncaught error
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    if needle is not None:
        assert needle in lines[0], (needle, lines[0])


def with_field(key: str, value: object) -> str:
    """GOOD with ``key`` (top level or ``start.x``) set to ``value``."""
    data_lines = GOOD.splitlines()
    section, _, name = key.rpartition(".")
    literal = f"{name} = {toml_value(value)}"
    if not section:
        data_lines.insert(1, literal)  # after the first (blank) line: top level
    else:
        data_lines.insert(data_lines.index(f"[{section}]") + 1, literal)
    return "\n".join(line for line in data_lines if not _replaced(line, name, literal, section))


def _replaced(line: str, name: str, literal: str, section: str) -> bool:
    return line.split("=")[0].strip() == name and line != literal


@fuzz
@given(key=st.sampled_from(SCENARIO_FIELDS + [f"start.{f}" for f in START_FIELDS]), value=values)
def test_any_value_in_any_field_is_accepted_or_refused_in_one_line_naming_it(tmp_path, key, value):
    path = tmp_path / "s.toml"
    path.write_text(with_field(key, value))
    result = invoke("check", str(path))
    if result.exit_code == 0:
        assert "ok" in result.output
    else:
        refused_in_one_line(result, key)


@fuzz
@given(
    key=st.sampled_from(SCENARIO_FIELDS + [f"start.{f}" for f in START_FIELDS]),
    value=st.one_of(
        st.dictionaries(st.just("x"), scalars, min_size=1, max_size=1),
        st.lists(scalars, min_size=2, max_size=3),
    ),
)
def test_a_table_or_array_where_a_value_belongs_is_refused_before_anything_runs(tmp_path, key, value):
    if key in ("setup",):  # the one field that takes an array of strings
        value = [value] if not isinstance(value, list) else [{"x": 1}]
    path = tmp_path / "s.toml"
    path.write_text(with_field(key, value))
    refused_in_one_line(invoke("run", str(path), "--out", str(tmp_path / "out")), key)


@fuzz
@given(key=st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=10), value=scalars)
def test_an_unknown_key_is_refused_naming_it(tmp_path, key, value):
    if key in SCENARIO_FIELDS or key in ("operations", "start", "schedule"):
        return
    path = tmp_path / "s.toml"
    path.write_text(with_field(key, value))
    refused_in_one_line(invoke("run", str(path), "--out", str(tmp_path / "out")), key)


@fuzz
@given(text=st.text(max_size=200))
def test_any_text_as_a_scenario_file_is_checked_or_refused_in_one_line(tmp_path, text):
    path = tmp_path / "s.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    result = invoke("check", str(path))
    assert result.exit_code == 2 or result.exit_code == 0, result.output
    if result.exit_code == 2:
        refused_in_one_line(result)
    else:  # it parsed and validated: then it must really be a valid scenario
        Scenario.from_dict(tomllib.loads(text))


@fuzz
@given(
    option=st.sampled_from(["--workers", "--seeds", "--first-seed", "--jobs"]),
    value=st.one_of(st.integers(max_value=0), st.integers(min_value=10**7), st.text(max_size=8)),
)
def test_bad_numbers_in_cli_options_exit_2_naming_the_option(option, value):
    text = str(value)
    if option == "--first-seed" and text.lstrip("-").isdigit() and 0 <= int(text) <= 2**62:
        return  # a valid first seed
    if text.strip().isdigit() and option == "--seeds" and 1 <= int(text) <= 1_000_000:
        return
    result = invoke("simulate", option, text)
    assert result.exit_code == 2, (result.output, result.exception)
    assert option in result.stderr and "Traceback" not in result.output


@fuzz
@given(choice=st.sampled_from(["--strategy", "--faults", "--profile"]), value=st.text(min_size=1, max_size=12))
def test_bad_names_in_cli_options_exit_2(choice, value):
    if value in ("inline-poll", "poll", "push", "scheduled", "none", "random", "seed"):
        return
    result = invoke("simulate", "--seeds", "1", choice, value)
    assert result.exit_code == 2, (result.output, result.exception)
    assert "Traceback" not in result.output


# ---- file kinds, sizes, nesting, names, --out ----------------------------------------------------


def _fifo(tmp_path):
    import os

    path = tmp_path / "fifo.toml"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("command", ["run", "check"])
@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda tmp: Path("/dev/zero"), "not a regular file"),
        (_fifo, "not a regular file"),
        (lambda tmp: tmp, "not a regular file"),
        (lambda tmp: _write(tmp / "big.toml", "# x\n" * 300_000), "bytes"),
        (lambda tmp: _write(tmp / "deep.toml", "x = " + "[" * 5000 + "]" * 5000), "too deeply"),
        (lambda tmp: _write(tmp / "bin.toml", b"\xff\xfe\x00"), "cannot read"),
    ],
)
def test_a_scenario_path_that_is_not_a_small_regular_text_file_is_refused_in_one_line(tmp_path, command, make, needle):
    refused_in_one_line(invoke(command, str(make(tmp_path))), needle)


def _write(path, content):
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


@pytest.mark.parametrize(
    ("replace", "by", "field"),
    [
        ("max = 3", 'max = 3\nvalues = [1979-05-27]\ntype = "choice"', "values"),
        ('name = "ok"', 'name = "ok\\u001b[31mred"', "name"),
        ('name = "ok"', f'name = "{"n" * 5000}"', "name"),
        ('name = "ok"', 'name = "ok"\nheartbeat_s = 1e-300', "heartbeat_s"),
        (
            "measurement_s = 0.5",
            "measurement_s = 0.5\n[[schedule]]\nat_s = 5.0\nconnections = 1",
            "schedule[0].at_s",
        ),
        (
            "measurement_s = 0.5",
            'measurement_s = 0.5\n[[schedule]]\nat_s = 0.3\nconnections = 1\nscope = "WORKER"\nscope_id = "w009"',
            "schedule[0].scope_id",
        ),
        (
            'strategy = "poll"\npoll_interval_ms = 20',
            'strategy = "scheduled"\npoll_interval_ms = 2000\nlead_ms = 300',
            "start.lead_ms",
        ),
    ],
)
def test_values_run_would_trip_over_are_refused_in_one_line_naming_the_field(tmp_path, replace, by, field):
    assert replace in GOOD
    path = tmp_path / "s.toml"
    text = GOOD.replace(replace, by)
    if "[[schedule]]" in by:  # arrays of tables go last
        text = GOOD.replace(replace, replace) + "\n" + by.split("\n", 1)[1]
    path.write_text(text)
    for command in ("check", "run"):
        refused_in_one_line(
            invoke(command, str(path), *(["--out", str(tmp_path / "o")] if command == "run" else [])), field
        )


@pytest.mark.parametrize("option", ["--run-id", "--worker-id"])
@pytest.mark.parametrize("value", ["", "a b", "x" * 200, "\x1b[31m"])
def test_bad_ids_are_refused_in_one_line(option, value):
    args = ["worker", "--control", "sqlite:///nowhere.db", "--run-id", "r", "--worker-id", "w"]
    args[args.index(option) + 1] = value
    result = invoke(*args)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert option in result.output


def test_an_out_that_cannot_be_written_is_refused_before_anything_starts(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(GOOD)
    blocker = tmp_path / "file"
    blocker.write_text("")
    for out in ("/proc/startline-out", str(blocker / "sub")):
        refused_in_one_line(invoke("run", str(path), "--out", out), "--out")


@pytest.mark.slow
def test_an_out_holding_another_runs_summary_is_refused_unless_overwrite(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(GOOD)
    out = tmp_path / "out"
    assert invoke("run", str(path), "--out", str(out), "--run-id", "first").exit_code == 0
    refused_in_one_line(invoke("run", str(path), "--out", str(out), "--run-id", "second"), "--overwrite")
    assert json.loads((out / "summary.json").read_text())["run_id"] == "first"
    assert invoke("run", str(path), "--out", str(out), "--run-id", "second", "--overwrite").exit_code == 0
    assert json.loads((out / "summary.json").read_text())["run_id"] == "second"


def _make_path(tmp_path, kind: str, content: bytes) -> Path:
    import os

    path = tmp_path / f"{kind}-{abs(hash(content)) % 10**8}.toml"
    if path.exists() or path.is_symlink():
        return path
    if kind == "regular":
        path.write_bytes(content)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "device":
        path.symlink_to("/dev/zero")
    elif kind == "dangling":
        path.symlink_to(tmp_path / "nowhere")
    elif kind == "huge":
        with open(path, "wb") as f:
            f.truncate(2 << 20)  # sparse: 2 MiB of zeros
    return path


@fuzz
@given(
    kind=st.sampled_from(["regular", "fifo", "directory", "device", "dangling", "huge"]),
    content=st.binary(max_size=64) | st.text(max_size=64).map(lambda t: t.encode("utf-8", "surrogatepass")),
)
def test_any_kind_of_path_as_a_scenario_is_checked_or_refused_in_one_line_and_never_hangs(tmp_path, kind, content):
    result = invoke("check", str(_make_path(tmp_path, kind, content)))
    if kind == "regular" and result.exit_code == 0:
        return  # some bytes are a valid scenario (a bare table with defaults needs operations: rare)
    refused_in_one_line(result)


@pytest.mark.parametrize("command", ["check", "run"])
def test_a_sql_placeholder_without_a_parameter_is_refused_before_anything_runs(tmp_path, command):
    """Issue 22 #18: `:aid` with only `params.id` defined ran, failing 71,432 operations with a
    KeyError in one second; `check` passed it."""
    path = tmp_path / "s.toml"
    text = GOOD.replace('call = "startline.backends.memory.ops:sleep_ms"', 'sql = "SELECT :aid"')
    text = text.replace("params.ms", "params.id").replace('name = "ok"', 'name = "ok"\ntarget = "sqlite:///{out}/d.db"')
    path.write_text(text)
    out = ["--out", str(tmp_path / "o")] if command == "run" else []
    result = invoke(command, str(path), *out)
    refused_in_one_line(result, "operations[0].sql")
    assert "placeholder :aid has no parameter" in result.output
