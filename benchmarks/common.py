"""Small helpers shared by the benchmarks: best-of-n timing, peak memory, and a printed table.

This machine is shared and noisy, so every benchmark measures its contenders side by side in one run,
interleaved, and reports ratios; no test asserts a time.
"""

import gc
import threading
import time
from collections.abc import Callable

import psutil
from rich.console import Console
from rich.table import Table


def best_time(fn: Callable[[], object], repeat: int = 5, warmup: int = 1) -> float:
    """Best wall-clock seconds of `repeat` calls (the least disturbed by other load)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def interleaved_best_times(contenders: dict[str, Callable[[], object]], repeat: int = 5) -> dict[str, float]:
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


class PeakRSS:
    """Peak resident memory above the starting point while the block runs, sampled every 2 ms."""

    def __enter__(self):
        self._process = psutil.Process()
        gc.collect()
        self.start = self._process.memory_info().rss
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            time.sleep(0.002)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)
        self.increase = self.peak - self.start


def print_table(title: str, columns: list[str], rows: list[list[object]]) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="right" if column != columns[0] else "left")
    for row in rows:
        table.add_row(*[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row])
    Console().print(table)

