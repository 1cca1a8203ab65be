"""The distribution: a wheel built from this repository installs one import package, startline."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import PurePosixPath

import pytest

from startline.testing import ROOT

pytestmark = pytest.mark.live  # processes, servers or a browser


def test_a_wheel_holds_exactly_one_top_level_package_and_its_data(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (wheel,) = tmp_path.glob("startline-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {PurePosixPath(n).parts[0] for n in names if not PurePosixPath(n).parts[0].endswith(".dist-info")}
    assert top == {"startline"}
    assert "startline/simulate/profiles/snowflake-hybrid.toml" in names  # package data travels with it
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)
