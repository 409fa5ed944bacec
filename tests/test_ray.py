"""Many-model head scans on a real Ray cluster.

Ray binds its servers to every interface (it ignores --node-ip-address=127.0.0.1 on Linux), so each
scenario runs in a fresh network namespace that has only the loopback interface, and in its own PID
namespace: the cluster is reachable on 127.0.0.1 only, and every process Ray started ends with the
scenario's script (which also stops the cluster it started, by process id). Linux as root, as CI.
"""

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mechlab.cli import main

pytest.importorskip("ray")

MODELS = ["random:tiny", "random:tiny@1", "random:llama-tiny"]
SCAN = ["--seq-len", "20", "--batch", "4"]

# Starts a one-node cluster as `ray start --head` does (`--block` keeps it in the foreground, so
# stopping that process stops the cluster), runs `mechlab` once per argument list (after setting
# the environment each one gives), stops the cluster, prints the exit statuses.
SCENARIO = """
import json, os, signal, socket, subprocess, sys, tempfile, time
from pathlib import Path
from mechlab.cli import main

runs, port = json.loads(sys.argv[1]), 6379
head = None
if any("@CLUSTER" in argv for _, argv in runs):
    ray = Path(sys.executable).with_name("ray")
    # `ray start` can exit before its port opens: keep its output, try again up to three times, and
    # print why each attempt ended (this is how the missing token below was found)
    for _ in range(3):
        log = tempfile.TemporaryFile("w+")
        head = subprocess.Popen(
            [str(ray), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
             f"--port={port}", "--include-dashboard=false", "--num-cpus=2",
             "--disable-usage-stats"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        while head.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        if head.poll() is None:
            break
        try:  # whatever it had started, before starting again
            os.killpg(head.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        log.seek(0)
        print(f"ray start exited with {head.returncode}:", log.read()[-2000:], file=sys.stderr)
    assert head.poll() is None, "ray start failed three times"
codes = []
for env, argv in runs:
    os.environ.update(env)
    codes.append(main([f"127.0.0.1:{port}" if a == "@CLUSTER" else a for a in argv]))
if head is not None:
    head.send_signal(signal.SIGTERM)
    head.wait(timeout=60)
print(json.dumps(codes))
"""


def run_isolated(runs: list[tuple[dict, list[str]]]) -> tuple[list[int], str]:
    """Run SCENARIO in a network namespace with only loopback and its own PID namespace."""
    if shutil.which("unshare") is None:
        pytest.fail("the Ray tests need util-linux's unshare (and root) to isolate the cluster")
    command = [
        "unshare", "--net", "--pid", "--fork", "--mount-proc", "--",
        "sh", "-c", 'ip link set lo up && exec "$0" "$@"',
        sys.executable, "-c", SCENARIO, json.dumps(runs),
    ]  # fmt: skip
    # Ray's token authentication, on for the cluster and for the driver alike (`ray start` turns
    # it on by default since Ray 2.5x, ray.init does not), with a token of this run's own: without
    # one, `ray start` reads ~/.ray/auth_token, which exists only once a local ray.init has written
    # it, so on a fresh machine the first cluster test failed with "no authentication token was
    # found" and the same command passed later (the "ray start failed" flake of a fresh clone)
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    result = subprocess.run(command, capture_output=True, text=True, timeout=540, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr


def heads_json(directory: Path, spec: str) -> dict:
    return json.loads((directory / spec.replace(":", "_") / "heads.json").read_text())


def listing(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


@pytest.mark.slow
def test_three_models_on_a_ray_cluster_match_the_sequential_run_even_when_a_worker_dies(tmp_path):
    here, there, crashed = tmp_path / "sequential", tmp_path / "ray", tmp_path / "crashed"
    markers = tmp_path / "markers"
    markers.mkdir()
    models = [arg for spec in MODELS for arg in ("--model", spec)]
    assert main(["heads", *models, *SCAN, "--out", str(here)]) == 0
    codes, _ = run_isolated(
        [
            ({}, ["heads", *models, *SCAN, "--ray", "@CLUSTER", "--out", str(there)]),
            # the first task for random:tiny@1 SIGKILLs its own worker
            # (mechlab.workflows.distributed's crash_point, as an out-of-memory kill would); Ray
            # restarts it and retries the task
            (
                {"MECHLAB_TEST_CRASH_ONCE": f"random:tiny@1@{markers}"},
                ["heads", *models, *SCAN, "--ray", "@CLUSTER", "--out", str(crashed)],
            ),
        ]
    )
    assert codes == [0, 0]
    assert (markers / "crashed-once").exists()  # the worker did die once
    for out in (there, crashed):
        assert listing(out) == listing(here)  # every model's files and the mosaic
        for spec in MODELS:
            assert heads_json(out, spec) == heads_json(here, spec)  # identical scores


@pytest.mark.slow
def test_a_model_failing_on_its_worker_is_named_and_the_others_finish(tmp_path):
    """Without an address: mechlab starts a local Ray instance itself (and stops it)."""
    missing = tmp_path / "no-such-checkpoint"
    out = tmp_path / "out"
    models = ["--model", "random:tiny", "--model", str(missing), "--model", "random:llama-tiny"]
    codes, stderr = run_isolated([({}, ["heads", *models, *SCAN, "--ray", "--out", str(out)])])
    assert codes == [1]
    assert f"mechlab heads: {missing} failed on its worker: " in stderr
    assert "is not a directory" in stderr
    # Ray's own start-up lines stay off the user's stderr (issue 26 §7): mechlab's lines only
    assert all(line.startswith("mechlab heads:") for line in stderr.strip().splitlines()), stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "induction_mosaic.png", "random_llama-tiny", "random_tiny"
    ]  # fmt: skip


def test_an_unreachable_ray_address_and_a_missing_ray_are_one_line(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    start = time.monotonic()
    # port 9 (discard) on loopback: nothing listens there
    assert main(["heads", "--model", "random:tiny", "--ray", "127.0.0.1:9", "--out", str(out)]) == 2
    assert time.monotonic() - start < 60  # not ray.init's minute of retries
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no Ray cluster answers at 127.0.0.1:9" in err[0]
    assert main(["heads", "--model", "random:tiny", "--ray", "nonsense", "--out", str(out)]) == 2
    assert "is not HOST:PORT" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    assert main(["heads", "--model", "random:tiny", "--ray", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'mechlab[ray]'" in err[0]
    assert not out.exists()
