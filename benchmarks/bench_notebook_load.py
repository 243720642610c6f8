"""Time `load_notebook_assets` on a notebook of 100 chained models against a plain import of the same file.

Run: .venv/bin/python benchmarks/bench_notebook_load.py [--models 100] [--repeat 7]
The target is under 1 s for 100 models; the ratio shows what the loader adds over importing the notebook.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path

TARGET_SECONDS = 1.0


def notebook_text(models: int) -> str:
    """A marimo notebook whose first model reads a lakehouse table and each next model reads the one before."""
    cells = [
        "@app.function\n"
        '@model(inputs={"source": Input("raw.source", columns=["x"], filter="x > 0")})\n'
        "def model_000(source: pl.DataFrame) -> pl.DataFrame:\n"
        '    """The first model."""\n'
        '    return source.with_columns(pl.col("x") + 1)\n'
    ]
    for i in range(1, models):
        cells.append(
            "@app.function\n"
            "@model\n"
            f"def model_{i:03d}(model_{i - 1:03d}: pl.DataFrame) -> pl.DataFrame:\n"
            f'    """Model number {i}."""\n'
            f'    return model_{i - 1:03d}.with_columns(pl.col("x") * 2)\n'
        )
    return (
        '# /// script\n# dependencies = ["dagster-lakehouse", "polars>=1.0", "marimo"]\n# ///\n\n'
        'import marimo\n\n__generated_with = "0.25.2"\napp = marimo.App()\n\n'
        "with app.setup:\n    import polars as pl\n\n    from dagster_lakehouse import Input, model\n\n\n"
        + "\n\n".join(cells)
        + '\n\nif __name__ == "__main__":\n    app.run()\n'
    )


def plain_import(path: Path, run: int) -> None:
    """The baseline: import the notebook as a module, which runs its setup cell and defines its functions."""
    spec = importlib.util.spec_from_file_location(f"bench_plain_{run}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)


def timed(fns, repeat: int) -> list[list[float]]:
    """Time each of `fns` `repeat` times, round-robin, so a noisy neighbour hurts all of them alike."""
    times: list[list[float]] = [[] for _ in fns]
    for run in range(repeat):
        for fn, out in zip(fns, times, strict=True):
            gc.collect()  # garbage from earlier runs would otherwise trigger full collections inside the timing
            start = time.perf_counter()
            fn(run)
            out.append(time.perf_counter() - start)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    sys.dont_write_bytecode = True  # both sides compile the notebook from source every time

    from dagster_lakehouse.notebook import load_notebook_assets

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "chain.py"
        path.write_text(notebook_text(args.models))

        assets = load_notebook_assets(path)  # warm-up: imports Dagster, marimo, Polars once
        plain_import(path, -1)
        assert len(assets) == args.models + 1, len(assets)

        baseline, loader = timed(
            [lambda run: plain_import(path, run), lambda run: load_notebook_assets(path)], args.repeat
        )

    base, load = statistics.median(baseline), statistics.median(loader)
    print(f"notebook with {args.models} chained models, median of {args.repeat} runs (round-robin) [min .. max]")
    spread = lambda times: f"[{min(times) * 1000:.1f} .. {max(times) * 1000:.1f} ms]"  # noqa: E731
    print(f"  plain import (baseline):  {base * 1000:8.1f} ms  {spread(baseline)}")
    print(f"  load_notebook_assets:     {load * 1000:8.1f} ms  {spread(loader)}")
    print(f"  ratio loader / baseline:  {load / base:8.2f}x")
    print(f"  target under {TARGET_SECONDS:.0f} s:        {'met' if load < TARGET_SECONDS else 'MISSED'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
