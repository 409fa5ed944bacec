"""Head scans of many models, one model at a time here or one Ray task per model on a cluster
(`mechlab heads --model A --model B ... --ray [ADDRESS]`).

`scan_model` is one model's whole job: load it where it runs, scan its heads, optionally ablate the
top induction heads, and render its files (heads.json, the heatmaps, the page of attention views).
It returns a `ModelScan`: the scan (scores, not the model) and those files, so that the caller only
gathers and writes. `scan_models_on_ray` runs `scan_model` as one Ray task per model: without an
address it starts a local Ray instance on 127.0.0.1 (and stops it at the end); with one it joins
that cluster (started with Ray's own `ray start --head`, see docs/scaling.md). A worker that dies
during a task is restarted and the task retried by Ray (up to `retries` times); a model that fails
on its worker (cannot load, out of memory) is reported by name while the others finish.

Ray is an optional extra (``pip install 'mechlab[ray]'``); nothing here imports it until a scan on
Ray is asked for.
"""

import logging
import os
import signal
import socket
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from mechlab.analysis.ablation import AblationStudy
from mechlab.analysis.heads import HeadScan
from mechlab.defaults import INDUCTION_THRESHOLD
from mechlab.errors import InputError, MechlabError

RAY_INSTALL = "pip install 'mechlab[ray]' (or pip install ray)"


@dataclass
class ModelScan:
    """What one model's job returns: its scan, its ablation study (or None) and its files."""

    spec: str
    scan: HeadScan
    study: AblationStudy | None = None
    files: dict[str, bytes | str] = field(default_factory=dict)
    worker: str = "here"  # the host and process the job ran in


def scan_model(
    spec: str,
    *,
    seq_len: int = 50,
    batch: int = 10,
    seed: int = 0,
    threshold: float = INDUCTION_THRESHOLD,
    ablate: int = 0,
    ablate_method: str = "mean",
    device: str = "auto",
    dtype: str = "float32",
    progress: bool = False,
) -> ModelScan:
    """Load `spec`, scan its heads, ablate the top `ablate` induction heads (0: none), render its
    files. The same for the sequential run and for each Ray task."""
    from mechlab.analysis.heads import scan_heads
    from mechlab.models.loading import load_model
    from mechlab.present.heads import heads_files
    from mechlab.workflows.attention import induction_patterns

    model = load_model(spec, device=device, dtype=dtype)
    study = None
    if ablate:
        from mechlab.analysis.ablation import ablation_study, check_ablation_count

        check_ablation_count(model, ablate)
    scan = scan_heads(model, seq_len=seq_len, batch=batch, seed=seed, progress=progress)
    if ablate:
        study = ablation_study(model, scan, ablate, method=ablate_method, threshold=threshold)
    files = heads_files(scan, induction_patterns(model, scan), threshold, study)
    return ModelScan(spec, scan, study, files, worker=f"{socket.gethostname()}:{os.getpid()}")


# --------------------------------------------------------------------------------------------------
# On Ray


@contextmanager
def native_stderr_held(hold: bool):
    """Keep what is written to file descriptor 2 inside the block off the terminal. Ray's C++ core
    writes its warnings there directly (offline: "Failed to determine local IP via external
    connectivity to 8.8.8.8"), where Python's logging levels do not reach. What was held is shown
    after all if the block fails with anything but mechlab's own one-line errors."""
    if not hold:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        show = False
        try:
            yield
        except MechlabError:
            raise
        except BaseException:
            show = True
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if show:
                held.seek(0)
                sys.stderr.write(held.read().decode(errors="replace"))


def import_ray():
    try:
        import ray
    except ImportError:
        raise InputError(f"--ray needs Ray, which is not installed: {RAY_INSTALL}.") from None
    return ray


def check_reachable(address: str, timeout: float = 3.0) -> None:
    """Fail in seconds, with what to do, when nothing listens at a cluster address (ray.init would
    retry for a minute)."""
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise InputError(
            f"Ray address {address!r} is not HOST:PORT (e.g. 127.0.0.1:6379, or "
            "ray://HOST:10001 for Ray Client); leave it out to start a local Ray instance."
        )
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as error:
        raise InputError(
            f"no Ray cluster answers at {address} ({error.strerror or error}): start one there "
            "with `ray start --head` (see docs/scaling.md), check the address, or leave it out "
            "to start a local Ray instance."
        ) from None


def scan_models_on_ray(
    specs: list[str],
    *,
    address: str | None = None,
    retries: int = 3,
    verbose: bool = False,
    **options,
) -> tuple[list[ModelScan], dict[str, str]]:
    """`scan_model` for every spec as one Ray task each (one CPU each), in parallel; the results in
    the order of `specs`, and a one-line reason for each model that failed. Ray's own INFO lines
    (starting an instance, connecting) stay off the user's stderr unless `verbose`."""
    ray = import_ray()
    if address:
        check_reachable(address)
    # Workers get the MECHLAB_* settings of the process that asks: its test hooks, and its
    # MECHLAB_CACHE if set (on one machine the same cache; on a cluster the same path on each
    # node's own disk; unset, each node uses its default ~/.cache/mechlab).
    env = {key: value for key, value in os.environ.items() if key.startswith("MECHLAB_")}
    init = dict(
        address=address,
        runtime_env={"env_vars": env},
        log_to_driver=verbose,
        logging_level=logging.INFO if verbose else logging.ERROR,
    )
    if not address:  # "local": a new instance, never one that `ray start` left running here
        init.update(address="local", include_dashboard=False, _node_ip_address="127.0.0.1")
    elif address.removeprefix("ray://").rpartition(":")[0] in ("127.0.0.1", "localhost"):
        init.update(_node_ip_address="127.0.0.1")  # a cluster on this machine's loopback
    with native_stderr_held(not verbose):
        return _scan_on_ray(ray, init, specs, address, retries, options)


def _scan_on_ray(
    ray, init: dict, specs: list[str], address: str | None, retries: int, options: dict
) -> tuple[list[ModelScan], dict[str, str]]:
    refused = getattr(ray.exceptions, "AuthenticationError", ())  # Ray 2.52 and later
    try:
        ray.init(**init)
    except refused:
        raise InputError(
            f"the Ray cluster at {address} refused this client's token: set RAY_AUTH_MODE=token "
            "and give the cluster's token (~/.ray/auth_token, RAY_AUTH_TOKEN_PATH or "
            "RAY_AUTH_TOKEN), as docs/scaling.md says."
        ) from None
    try:
        task = ray.remote(num_cpus=1, max_retries=retries)(_scan_task)
        futures = {spec: task.remote(spec, options) for spec in specs}
        results: list[ModelScan] = []
        failures: dict[str, str] = {}
        for spec, future in futures.items():
            try:
                results.append(ray.get(future))
            except ray.exceptions.RayTaskError as error:  # the job raised on its worker
                cause = error.cause if isinstance(error.cause, BaseException) else error
                failures[spec] = one_line(cause)
            except ray.exceptions.RayError as error:  # the worker died more often than retried
                failures[spec] = f"its worker died {retries + 1} times ({type(error).__name__})"
        return results, failures
    finally:
        ray.shutdown()


def _scan_task(spec: str, options: dict) -> ModelScan:
    crash_point(spec)
    return scan_model(spec, **options)


def crash_point(spec: str) -> None:
    """Test hook: with MECHLAB_TEST_CRASH_ONCE=<spec>@<directory>, the first task for <spec> kills
    its own worker process (SIGKILL, as the OS's out-of-memory killer would); a marker file in
    <directory> makes the retry run normally."""
    value = os.environ.get("MECHLAB_TEST_CRASH_ONCE", "")
    target, _, directory = value.rpartition("@")
    if target != spec or not directory:
        return
    marker = Path(directory) / "crashed-once"
    if not marker.exists():
        marker.write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)


def one_line(error: BaseException) -> str:
    if isinstance(error, MechlabError):
        return " ".join(str(error).split())
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[-1] if text else ''}"[:300]
