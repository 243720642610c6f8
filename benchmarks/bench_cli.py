"""Start-up time of the `lakehouse` CLI: `--help`, `--version` and `branch list` on the embedded lakehouse.

Each command runs as a fresh subprocess of the installed console script (the same interpreter as this script),
round-robin with the baseline `python -c pass`, so a noisy neighbour slows them alike; prints medians (min..max),
each command's ratio to the baseline and its margin to the goals of issue 13 (--help/--version under 0.5 s,
branch list under 1 s). The embedded lakehouse (SQLite catalog + folder, two branches) is created in a temporary
folder first, untimed, and removed at the end.

    .venv/bin/python benchmarks/bench_cli.py [--repeat 15] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOALS = {"lakehouse --help": 0.5, "lakehouse --version": 0.5, "lakehouse branch list": 1.0}
"""Wall-time goals of issue 13, in seconds."""


def console_script() -> Path:
    """The `lakehouse` script installed next to this interpreter."""
    script = Path(sys.executable).parent / "lakehouse"
    if not script.exists():
        raise SystemExit(f"no console script at {script}: install the project (pip install -e .) first")
    return script


def timed(argv: list[str], env: dict[str, str]) -> float:
    """Wall seconds of one run of `argv`, which must succeed."""
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=15, help="timed runs of each command (default: 15)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write every timing as JSON")
    options = parser.parse_args()

    script = str(console_script())
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as tmp:
        root = str(Path(tmp) / "lh")
        env = {k: v for k, v in os.environ.items() if not k.startswith("LAKEHOUSE_")}
        timed([script, "--path", root, "branch", "create", "dev"], env)  # the embedded lakehouse, two branches
        commands = {
            "python -c pass (baseline)": [sys.executable, "-c", "pass"],
            "lakehouse --help": [script, "--help"],
            "lakehouse --version": [script, "--version"],
            "lakehouse branch list": [script, "--path", root, "branch", "list"],
        }
        for argv in commands.values():  # warm-up: file-system caches, .pyc files
            timed(argv, env)
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(options.repeat):
            for name, argv in commands.items():
                times[name].append(timed(argv, env))

    baseline = statistics.median(times["python -c pass (baseline)"])
    print(f"CLI start-up, {options.repeat} runs each, round-robin; {sys.executable} (Python {sys.version.split()[0]})")
    print(f"{'command':<28} {'median':>8} {'min..max':>15} {'x baseline':>11} {'goal':>6} {'met':>4}")
    rows = []
    for name, samples in times.items():
        median = statistics.median(samples)
        goal = GOALS.get(name)
        met = "" if goal is None else ("yes" if median < goal else "no")
        spread = f"{min(samples):.3f}..{max(samples):.3f}"
        goal_text = f"{goal:.1f}" if goal is not None else "-"
        print(f"{name:<28} {median:>7.3f}s {spread:>15} {median / baseline:>10.1f}x {goal_text:>6} {met:>4}")
        rows.append({"command": name, "median_s": median, "samples_s": samples, "ratio": median / baseline, "goal_s": goal})
    if options.json:
        options.json.write_text(json.dumps({"repeat": options.repeat, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
