"""Head scans of four random GPT-2-small-shaped models: one after another in this process, against
one Ray task per model on a local Ray instance with two CPUs (its start-up included: what a user
waits for). Each model's job: build the model, scan 10 x [BOS] + r + r (len(r) = 50), render its
files."""

import time

from benchmarks.common import print_table
from mechlab.workflows.distributed import scan_model, scan_models_on_ray

SPECS = [f"random:gpt2-small@{seed}" for seed in range(4)]
OPTIONS = dict(seq_len=50, batch=10)


def main() -> None:
    start = time.perf_counter()
    sequential = [scan_model(spec, **OPTIONS) for spec in SPECS]
    here = time.perf_counter() - start
    start = time.perf_counter()
    on_ray, failures = scan_models_on_ray(SPECS, **OPTIONS)
    there = time.perf_counter() - start
    assert not failures, failures
    for a, b in zip(sequential, on_ray, strict=True):
        assert all((a.scan.scores[k] == b.scan.scores[k]).all() for k in a.scan.scores)
    workers = len({result.worker for result in on_ray})
    print_table(
        f"{len(SPECS)} models, one job each (seconds)",
        ["run", "seconds", "ratio to sequential"],
        [
            ["sequential, this process", here, 1.0],
            [f"Ray, local instance, 2 CPUs ({workers} worker processes)", there, there / here],
        ],
    )


if __name__ == "__main__":
    main()
