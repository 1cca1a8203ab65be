"""Run a benchmark script of another checkout of startline (a git worktree of an older commit)
against that checkout's own package — not the editable install of this one, whose import hook
would otherwise win over ``PYTHONPATH``. For before/after figures measured side by side.

    git worktree add /tmp/before 2519cf9
    .venv/bin/python benchmarks/other_tree.py /tmp/before benchmarks/engine_overhead.py --seconds 3 --reps 1

A script given by an absolute path runs as it is (a script of this checkout against that one's
package: ``engine_instructions.py --tree`` does so).
"""

from __future__ import annotations

import runpy
import sys


def main() -> None:
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    root, script, *args = sys.argv[1:]
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
    sys.path.insert(0, root)
    import startline

    if not startline.__file__ or not startline.__file__.startswith(root):
        raise SystemExit(f"startline still imports from {startline.__file__}, not {root}")
    print(f"startline from {startline.__file__}", file=sys.stderr)
    # a script of that checkout by its path inside it; an absolute path as it is (this one's)
    sys.argv = [script if script.startswith("/") else f"{root}/{script}", *args]
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
