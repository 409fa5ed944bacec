"""What a probe of the newer commands found (issue 36): requests that would exhaust memory are
refused up front with the numbers, arguments the parser once let through as tracebacks or hangs are
one line, records and SAEs made from a local checkpoint can be shown again, and the public
functions refuse bad arguments with mechlab's errors. Each test fails without its fix."""

import subprocess
import sys
import time

import pytest

import mechlab
from mechlab.checks import MAX_SEED, check_seed, other_weights
from mechlab.cli import main
from mechlab.errors import InputError, MechlabError, MechlabWarning, ResourceError

HUGE = str(10**400)


@pytest.fixture(scope="module")
def tiny_model():
    return mechlab.load_model("random:tiny")


def one_line_error(capsys, argv: list[str], tmp_path) -> str:
    out = tmp_path / "out"
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert not out.exists()
    return err


@pytest.mark.parametrize(
    "argv,message",
    [
        (["train-grokking", "--p", HUGE], "must be at most 1,000,000"),
        (["train-grokking", "--p", "2305843009213693951"], "must be at most 1,000,000"),  # 2^61 - 1
        (["train-grokking", "--p", "99991"], "of memory but"),
        (["train-grokking", "--p", "10007", "--steps", "10"], "of memory but"),
        (["train-grokking", "--seed", "99999999999999999999999"], "must be at most 2**63 - 1"),
        (["train-induction", "--seed", "99999999999999999999999"], "must be at most 2**63 - 1"),
        (["heads", "--model", "random:tiny", "--seed", "9" * 30], "must be at most 2**63 - 1"),
        (["tune-lens", "--model", "random:tiny", "--seed", "9" * 30], "must be at most 2**63 - 1"),
        (
            ["sae", "train", "--model", "random:tiny", "--layer", "1", "--seed", "9" * 30],
            "must be at most 2**63 - 1",
        ),
        (["heads", "--model", "random:tiny", "--batch", HUGE], "of memory but"),
    ],
)
def test_arguments_that_were_tracebacks_or_hangs_are_one_line(argv, message, tmp_path, capsys):
    start = time.perf_counter()
    assert message in one_line_error(capsys, argv, tmp_path)
    assert time.perf_counter() - start < 30  # the prime 2^61 - 1 took minutes to test


def test_an_sae_too_large_for_memory_is_refused_before_caching(tmp_path, capsys):
    argv = ["sae", "train", "--model", "random:tiny", "--layer", "1", "--expansion", "1000000"]
    err = one_line_error(capsys, argv, tmp_path)
    assert "an SAE of 64,000,000 latents" in err and "of memory but" in err


def test_records_too_large_for_memory_are_refused_before_the_passes(tiny_model):
    with pytest.raises(InputError, match="context must be at most 512"):
        mechlab.top_activations(tiny_model, ["some text"], context=10**6)
    with pytest.raises(ResourceError, match="of memory but"):
        mechlab.top_activations(tiny_model, ["some text " * 10], samples=10**9)


def test_seeds_are_whole_numbers_in_range():
    assert check_seed(0) == 0 and check_seed(MAX_SEED) == MAX_SEED
    for bad in [-1, MAX_SEED + 1, 2**70, 0.5, True, "0", None]:
        with pytest.raises(InputError, match="seed must be a whole number"):
            check_seed(bad)


@pytest.mark.parametrize(
    "kwargs,error,message",
    [
        (dict(seed=2**70), InputError, "seed must be"),
        (dict(seed=0.5), InputError, "seed must be"),
        (dict(p=99991), ResourceError, "of memory but"),
        (dict(p=10**400), InputError, "p must be at most 1,000,000"),
    ],
)
def test_train_grokking_refuses_before_building_anything(kwargs, error, message):
    from mechlab.scratch.grokking import train_grokking

    with pytest.raises(error, match=message):
        unchecked(train_grokking)(progress=False, **kwargs)


def unchecked(function):
    """The function as a user calls it: without the tests' run-time type checking (jaxtyping and
    beartype), which would refuse an argument of the wrong type before mechlab's own check."""
    return getattr(function, "__wrapped__", function)


def test_a_string_is_not_a_list_of_texts(tiny_model):
    with pytest.raises(InputError, match="a list of strings, got str"):
        unchecked(mechlab.top_activations)(tiny_model, "a string")


def test_asking_for_more_tokens_than_the_texts_hold_says_so(tiny_model):
    with pytest.warns(MechlabWarning, match="fewer than the 1,000,000,000,000 asked for"):
        mechlab.top_activations(tiny_model, ["a short text " * 5], layers=[0], tokens=10**12)


def test_a_weights_mismatch_does_not_name_one_model_twice():
    same = other_weights("random:tiny@1", "random:tiny@1", "to")
    assert same.count("random:tiny@1") == 1 and "another weights hash" in same
    assert "'a', not to 'b'" in other_weights("a", "b", "to")


def test_records_and_an_sae_of_a_local_checkpoint_show_again(hf_gpt2_dir, tmp_path, capsys):
    """The README's "your fine-tune" case: the records hold the directory's path, not only its
    name, and `--model` points a moved model out. The checkpoint's context is 64 positions:
    shorter than the SAE's usual sequences of 128."""
    records, sae = tmp_path / "records", tmp_path / "sae"
    model = ["--model", str(hf_gpt2_dir)]
    assert main(["neurons", *model, "--layer", "0", "--tokens", "2000", "--out", str(records)]) == 0
    page = tmp_path / "page.html"
    assert main(["neurons", "show", str(records), "--layer", "0", "--neuron", "1", "--out",
                 str(page)]) == 0  # fmt: skip
    assert page.exists()
    train = ["sae", "train", *model, "--layer", "0", "--expansion", "2", "--k", "4"]
    assert main([*train, "--tokens", "4096", "--epochs", "1", "--out", str(sae)]) == 0
    pages = tmp_path / "pages"
    show = ["sae", "show", str(sae), "--top", "2", "--tokens", "2000", "--out", str(pages)]
    assert main([*show, *model]) == 0 and (pages / "index.html").exists()
    capsys.readouterr()
    other = ["sae", "show", str(sae), "--model", "random:tiny", "--out", str(tmp_path / "x")]
    assert main(other) == 2
    assert "not for 'random:tiny' (another weights hash)" in capsys.readouterr().err


def test_the_documented_minimum_of_sae_tokens_trains(tmp_path):
    """--tokens 4096 (one step) used to fail always: massive activations left out left 4,095."""
    from mechlab.analysis.sae import BATCH

    out = tmp_path / "sae"
    train = ["sae", "train", "--model", "random:tiny", "--layer", "1", "--expansion", "2"]
    assert (
        main([*train, "--k", "4", "--tokens", str(BATCH), "--epochs", "1", "--out", str(out)]) == 0
    )


def test_the_cli_never_shows_a_traceback_for_a_mechlab_error():
    """A subprocess, as a user runs it: exit 2 and one line, for an error raised deep inside."""
    result = subprocess.run(
        [sys.executable, "-m", "mechlab", "train-grokking", "--p", "99991", "--out", "/tmp/x"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert issubclass(ResourceError, MechlabError)


def test_circuits_queries_check_their_arguments():
    from mechlab.analysis.circuits import circuits

    result = circuits(mechlab.load_model("random:tiny"))  # 2 layers of 4 heads
    for call, message in [
        (lambda: result.into(99, 0), "layer must be at most 1"),
        (lambda: result.into(1, 9), "head must be at most 3"),
        (lambda: result.into(1, 0, "z"), "unknown composition kind 'z'"),
        (lambda: result.top("z"), "unknown composition kind 'z'"),
        (lambda: result.top("k", -1), "k must be a whole number of at least 1"),
    ]:
        with pytest.raises(InputError, match=message):
            unchecked(call)()
    # only pairs from an earlier layer into a later one compose: 4 x 4 of them here, never more
    rows = result.top("k", 100)
    assert len(rows) == 16 and all(l1 < l2 for l1, _, l2, _, _ in rows)
    assert [row[-1] for row in rows] == sorted((row[-1] for row in rows), reverse=True)


def test_sigterm_leaves_no_empty_output_directory(tmp_path):
    """A scheduler's stop takes Ctrl-C's way out: an output directory the command made and never
    wrote to is removed (a killed run used to leave it behind, empty)."""
    import signal

    out = tmp_path / "sae"
    command = [sys.executable, "-m", "mechlab", "sae", "train", "--model", "random:tiny"]
    process = subprocess.Popen(
        [*command, "--layer", "1", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not out.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "mechlab sae train: interrupted" in err
    assert not out.exists() or any(out.iterdir())  # gone, or holding a checkpoint


DLA = ["dla", "--model", "random:tiny", "--prompt", "abc"]


@pytest.mark.parametrize(
    "argv,message",
    [
        (["sae", "show", "/nonexistent", "--out", "{out}"], "mechlab sae show: error: no SAE in"),
        (
            ["neurons", "show", "/nonexistent", "--layer", "0", "--neuron", "1", "--out", "{out}"],
            "mechlab neurons show: error:",
        ),
        (
            [*DLA, "--answer", "id:9999999999", "--out", "{out}"],
            "token id 9999999999 is larger than any vocabulary",
        ),
        (
            [*DLA, "--answer", "x" * 3000, "--out", "{out}"],
            "is 3,000 tokens",
        ),
    ],
)
def test_messages_name_the_command_and_the_value(argv, message, tmp_path, capsys):
    out = tmp_path / "out"
    assert main([a.replace("{out}", str(out)) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and len(err) < 400, err
    assert not out.exists()


def test_a_half_precision_load_prints_nothing(capsys):
    """TransformerLens prints "Changing model dtype to ..." unless asked not to."""
    mechlab.load_model("random:tiny", dtype="bfloat16")
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


@pytest.mark.parametrize(
    "name,extra",
    [
        ("logit_lens", {}),
        ("scan_heads", {}),
        ("logit_attribution", {"answer": "a"}),
        ("attribute", {"answer": "a"}),
        ("circuits", {}),
        ("top_activations", {}),
    ],
)
def test_a_model_spec_where_a_model_goes_is_one_clear_error(name, extra):
    function = unchecked(getattr(mechlab, name))
    arguments = [] if name in ("scan_heads", "circuits") else [["some text"]]
    if name in ("logit_lens", "logit_attribution", "attribute"):
        arguments = ["The capital of France is"]
    with pytest.raises(
        InputError, match=r"got the string 'gpt2': load it first.*load_model\('gpt2'\)"
    ):
        function("gpt2", *arguments, **extra)


def test_a_list_of_prompts_where_one_goes_is_one_clear_error(tiny_model):
    """Every function taking one prompt tokenizes it with to_tokens, which refuses a list of
    texts (called directly here: the tests' run-time type checking would refuse it one call
    earlier, which a user's run does not have)."""
    from mechlab.analysis.tokens import to_tokens

    with pytest.raises(InputError, match="one prompt at a time, got a list of 2"):
        unchecked(to_tokens)(tiny_model, ["first prompt", "second prompt"])
    assert unchecked(to_tokens)(tiny_model, [1, 2, 3]).shape == (1, 3)  # token ids still go


@pytest.fixture(scope="module")
def small_sae(tmp_path_factory):
    out = tmp_path_factory.mktemp("sae") / "sae"
    train = ["sae", "train", "--model", "random:tiny", "--layer", "1", "--expansion", "2"]
    assert main([*train, "--k", "4", "--tokens", "8192", "--epochs", "1", "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("change", ["float16", "W_enc x 1e30", "float16, hash updated"])
def test_an_sae_whose_weights_were_changed_is_refused(small_sae, tmp_path, change, tiny_model):
    import hashlib
    import json
    import shutil

    from safetensors.torch import load_file, save_file

    from mechlab.analysis.sae import SAE
    from mechlab.errors import DataError

    directory = tmp_path / "changed"
    shutil.copytree(small_sae, directory)
    weights = directory / "sae.safetensors"
    tensors = load_file(weights)
    if change.startswith("float16"):
        tensors = {name: tensor.half() for name, tensor in tensors.items()}
    else:
        tensors["W_enc"] = tensors["W_enc"] * 1e30
    save_file(tensors, weights)
    if change.endswith("hash updated"):  # the hash then agrees: the dtype check still refuses it
        manifest = json.loads((directory / "sae.json").read_text())
        manifest["sae_sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
        (directory / "sae.json").write_text(json.dumps(manifest))
    message = "is float16, not float32" if change.endswith("updated") else "SHA-256 differs"
    with pytest.raises(DataError, match=message):
        SAE.load(directory, tiny_model)
    assert SAE.load(small_sae, tiny_model).width == 128  # the unchanged one loads


@pytest.mark.parametrize("bad_id", [10**9, -5])
def test_records_holding_token_ids_outside_the_vocabulary_are_refused(tmp_path, bad_id, capsys):
    from safetensors.torch import load_file, save_file

    records = tmp_path / "records"
    neurons = ["neurons", "--model", "random:tiny", "--layer", "1", "--tokens", "2000"]
    assert main([*neurons, "--out", str(records)]) == 0
    path = records / "neurons.safetensors"
    tensors = load_file(path)
    tensors["document_tokens"][3] = bad_id
    save_file(tensors, path)
    page = tmp_path / "page.html"
    show = ["neurons", "show", str(records), "--layer", "1", "--neuron", "1", "--out", str(page)]
    assert main(show) == 2
    assert "token ids outside random:tiny's vocabulary" in capsys.readouterr().err
    assert not page.exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["sae", "train", "--model", "smollm2-135m", "--layer", "999"],
        ["neurons", "--model", "smollm2-135m", "--layer", "999"],
        ["attention", "--model", "gemma3-270m", "--prompt", "hi", "--layer", "18"],
        ["sae", "train", "--model", "random:tiny@3", "--layer", "2"],
    ],
)
def test_a_layer_out_of_range_of_a_known_shape_is_refused_before_loading(
    argv, tmp_path, capsys, monkeypatch
):
    import mechlab.models.loading

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded before its layer was checked")

    monkeypatch.setattr(mechlab.models.loading, "load_model", no_load)
    err = one_line_error(capsys, argv, tmp_path)
    assert "is out of range" in err and "has layers 0 .." in err
