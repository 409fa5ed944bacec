"""Memory: what this machine has free, refusing work that cannot fit before it starts, and measuring
the peak memory of a piece of code in a fresh process (for tests and benchmarks)."""

import os
import subprocess
import sys

from mechlab.errors import ResourceError


def available_bytes() -> int:
    """Memory available to new allocations without swapping (Linux's MemAvailable), else free
    RAM."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def gib(n_bytes: int | float) -> str:
    if n_bytes >= 2**30 * 10**15:  # past what a float divides: count the digits instead
        return f"about 10^{len(str(int(n_bytes) >> 30)) - 1} GiB"
    return f"{n_bytes / 2**30:.1f} GiB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:.0f} MiB"


def check_fits(needed: int, *, what: str, fix: str, share: float = 0.8) -> None:
    """Raise ResourceError when `needed` bytes exceed `share` of the memory available now."""
    available = available_bytes()
    if needed > share * available:
        raise ResourceError(
            f"{what} needs about {gib(needed)} of memory but {gib(available)} is available: {fix}"
        )


PEAK_SCRIPT = """
import re, sys, warnings
warnings.simplefilter("ignore")
def status(field):
    text = open("/proc/self/status").read()
    return int(re.search(field + r":\\s+(\\d+) kB", text).group(1)) * 1024
exec(sys.argv[1])
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the high-water mark VmHWM to the current resident size
before = status("VmRSS")
exec(sys.argv[2])
print(status("VmHWM") - before)
"""


# glibc raises its mmap threshold each time a large block is freed, after which blocks of that size
# come from the heap and stay resident once freed: the peak then measures how the allocator's
# history went (119 to 165 MiB over runs of one call in the neurons test, 8x the tokens adding 25
# to 87 MiB), not what the code keeps. A fixed threshold (its default, 128 KiB) turns that off:
# every large block is mapped and unmapped, and the same runs read 86 to 91 MiB.
FIXED_ALLOCATOR = {"MALLOC_MMAP_THRESHOLD_": str(128 << 10)}


def peak_memory_increase(setup: str, run: str) -> int:
    """Peak resident memory (bytes) that `run` adds after `setup`, both Python source, in a fresh
    process (in a long-lived one, memory freed earlier would hide an allocation) whose allocator
    returns large blocks when they are freed (see FIXED_ALLOCATOR). Linux only."""
    result = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, setup, run],
        capture_output=True,
        text=True,
        env={**os.environ, **FIXED_ALLOCATOR},
    )
    if result.returncode != 0:
        raise RuntimeError(f"peak-memory run failed: {result.stderr[-2000:]}")
    return int(result.stdout.split()[-1])


def forward_pattern_bytes(model, pos: int, batch: int = 1) -> int:
    """What one layer's attention holds at its peak in a forward pass over `pos` tokens: the
    scores, the pattern and a temporary of the same size, in the model's dtype."""
    return 3 * batch * model.cfg.n_heads * pos * pos * model.cfg.dtype.itemsize
