"""Start-up: `import mechlab`, `mechlab --help` and an argument error, each in a fresh interpreter,
against `python -c pass` in the same run (and `import torch` for scale: what they no longer pay).
Goals: each of the three <= 1 s."""

import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import print_table

# The console script pip installed next to this interpreter, as a user runs it.
MECHLAB = [str(Path(sys.executable).with_name("mechlab"))]
COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "import mechlab": [sys.executable, "-c", "import mechlab"],
    "mechlab --help": [*MECHLAB, "--help"],
    "mechlab lens --top-k -3 (error)": [
        *MECHLAB,
        "lens",
        "--top-k",
        "-3",
        "--prompt",
        "x",
        "--out",
        "out",
    ],
    "import torch (for scale)": [sys.executable, "-c", "import torch"],
}


def best_seconds(repeat: int = 5) -> dict[str, float]:
    """Best wall-clock time of each command, run in turn so that load spikes hit all of them."""
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(repeat):
        for name, command in COMMANDS.items():
            start = time.perf_counter()
            subprocess.run(command, capture_output=True)
            times[name].append(time.perf_counter() - start)
    return {name: min(values) for name, values in times.items()}


def main() -> None:
    seconds = best_seconds()
    floor = seconds["python -c pass"]
    rows = [
        [
            name,
            value,
            value / floor,
            ""
            if "scale" in name or name == "python -c pass"
            else ("ok" if value <= 1 else "MISSED"),
        ]
        for name, value in seconds.items()
    ]
    print_table(
        "start-up, fresh interpreter, best of 5 (goal: <= 1 s each)",
        ["command", "seconds", "x python -c pass", "goal"],
        rows,
    )


if __name__ == "__main__":
    main()
