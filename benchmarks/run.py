"""Run every benchmark (or those named) and print each one's table:
python -m benchmarks.run [NAME ...]"""

import importlib
import sys
import time

BENCHMARKS = [
    "startup",
    "load",
    "forward",
    "precision",
    "memory",
    "heads",
    "lens",
    "patch",
    "ray",
    "formation",
    "tuned_lens",
    "attribution",
    "circuits",
    "grokking",
    "features",
]


def main(names: list[str]) -> None:
    for name in names or BENCHMARKS:
        module = importlib.import_module(f"benchmarks.bench_{name}")
        start = time.perf_counter()
        module.main()
        print(f"[{name}: {time.perf_counter() - start:.0f} s]\n")


if __name__ == "__main__":
    main(sys.argv[1:])
