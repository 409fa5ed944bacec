"""Small helpers shared by the benchmarks: interleaved best-of-n timing and a printed table.

This machine is shared and noisy, so every benchmark measures its contenders side by side in one
run, interleaved, and reports ratios; no test asserts a time.
"""

import gc
import time
from collections.abc import Callable

from rich.console import Console
from rich.table import Table


def interleaved_best_times(
    contenders: dict[str, Callable[[], object]], repeat: int = 5
) -> dict[str, float]:
    """Best time of each contender, running them in turn so that load spikes hit all of them."""
    for fn in contenders.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeat):
        for name, fn in contenders.items():
            gc.collect()
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: min(values) for name, values in times.items()}


def print_table(title: str, columns: list[str], rows: list[list[object]]) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="right" if column != columns[0] else "left")
    for row in rows:
        table.add_row(*[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row])
    Console().print(table)
