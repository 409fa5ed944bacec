"""The command line as a user meets it: it starts without importing the heavy libraries, every bad
input is one line on stderr with exit status 2 and no files, user text never reaches the terminal
as rich markup, and prompts files are read as documented."""

import json
import subprocess
import sys

import pytest

import mechlab
from mechlab.cli import main
from mechlab.errors import InputError
from mechlab.io import read_prompts

HEAVY = ["torch", "transformer_lens", "transformers", "matplotlib", "circuitsvis"]


def heavy_modules_after(code: str) -> list[str]:
    """Which heavy libraries a fresh interpreter has imported after running `code`."""
    probe = f"{code}\nimport sys\nprint('heavy:', *[m for m in {HEAVY!r} if m in sys.modules])"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1].split()[1:]


def test_import_mechlab_imports_nothing_heavy():
    assert heavy_modules_after("import mechlab") == []


def test_help_and_argument_errors_import_nothing_heavy():
    code = (
        "from mechlab.cli import main\n"
        "assert main(['--help']) == 0\n"
        "assert main(['lens', '--help']) == 0\n"
        "assert main(['lens', '--top-k', '-3', '--prompt', 'x', '--out', 'o']) == 2\n"
        "assert main(['heads', '--model', 'random:huge', '--out', 'o']) == 2"
    )
    assert heavy_modules_after(code) == []


def test_the_checker_sees_a_heavy_import():
    """The probe can fail: loading a model does import torch."""
    assert "torch" in heavy_modules_after("import mechlab; mechlab.load_model")


def test_public_names_resolve_lazily():
    from mechlab.models.loading import load_model

    assert mechlab.load_model is load_model
    assert set(mechlab.__all__) <= set(dir(mechlab))
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        mechlab.nonsense  # noqa: B018


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


PATCH_PAIR = ["--clean", "abcde", "--corrupted", "abcxe", "--answer", "a", "--wrong", "b"]
ATTRIBUTE = ["attribute", "--model", "random:tiny", "--prompt", "abc"]
BAD_INPUT = [
    (
        ["predict", "--model", "random:tiny", "--top-k", "-3"],
        "argument --top-k: must be at least 1, got -3",
    ),
    (
        ["predict", "--model", "random:tiny", "--top-k", "0"],
        "argument --top-k: must be at least 1, got 0",
    ),
    (["predict", "--model", "random:tiny", "--top-k", "x"], "expected a whole number, got 'x'"),
    (["predict", "--model", "random:tiny", "--top-k", "1000"], "more than the 257 tokens"),
    (["predict", "--model", "random:huge"], "unknown random preset 'huge'"),
    (["predict", "--model", " "], "the model spec is empty"),
    (["predict", "--nonsense"], "unrecognized arguments: --nonsense"),
    (["nonsense"], "invalid choice: 'nonsense'"),
    (
        ["heads", "--model", "random:tiny", "--batch", "1000000000", "--out", "{out}"],
        "of memory but",
    ),
    (
        ["heads", "--model", "random:tiny", "--model", "random:tiny", "--out", "{out}"],
        "given twice",
    ),
    (
        ["lens", "--model", "random:tiny", "--prompts-file", "/dev/zero", "--out", "{out}"],
        "larger than 4 MiB",
    ),
    (
        ["lens", "--model", "random:tiny", "--out", "{out}"],
        "one of the arguments --prompt --prompts-file",
    ),
    (
        ["attention", "--model", "random:tiny", "--prompt", "x", "--heads", "1", "--out", "{out}"],
        "LAYER.HEAD",
    ),
    (["attention", "--model", "random:tiny", "--prompt", " ", "--out", "{out}"], "prompt is empty"),
    (
        ["patch", "--model", "random:tiny", *PATCH_PAIR, "--clean", "abcd", "--out", "{out}"],
        "clean is 5 tokens",
    ),
    (
        ["patch", "--model", "random:tiny", *PATCH_PAIR, "--answer", "xy", "--out", "{out}"],
        "answer 'xy' is 2 tokens",
    ),
    (
        ["patch", "--model", "random:tiny", *PATCH_PAIR, "--over", "neurons", "--out", "{out}"],
        "invalid choice: 'neurons'",
    ),
    (
        ["dla", "--model", "random:tiny", "--prompt", "abc", "--answer", "", "--out", "{out}"],
        "the answer is empty",
    ),
    (
        ["tune-lens", "--model", "random:tiny", "--tokens", "100000000000000", "--out", "{out}"],
        "more than the training texts hold: 2,156,544",
    ),
    (
        ["tune-lens", "--model", "random:tiny", "--eval-tokens", "1000000000", "--out", "{out}"],
        "more than the held-out texts hold: 371,584",
    ),
    (
        [
            "dla",
            "--model",
            "random:tiny",
            "--prompt",
            "abc",
            "--answer",
            "a",
            "--wrong",
            "a",
            "--out",
            "{out}",
        ],
        "the answer and the wrong answer are the same token",
    ),
    (
        ["attribute", "--model", "random:tiny", "--prompt", " ", "--answer", "a", "--out", "{out}"],
        "prompt is empty",
    ),
    (
        [*ATTRIBUTE, "--answer", "ab", "--out", "{out}"],
        "answer 'ab' is 2 tokens",
    ),
    (
        [*ATTRIBUTE, "--answer", "a", "--method", "gradcam", "--out", "{out}"],
        "invalid choice: 'gradcam'",
    ),
    ([*ATTRIBUTE, "--answer", "a", "--steps", "0", "--out", "{out}"], "must be at least 1"),
    ([*ATTRIBUTE, "--answer", "a", "--steps", "99999", "--out", "{out}"], "at most 1024"),
    ([*ATTRIBUTE, "--answer", "a", "--max-steps", "9999999", "--out", "{out}"], "at most 65536"),
    (
        [*ATTRIBUTE, "--answer", "a", "--steps", "64", "--max-steps", "32", "--out", "{out}"],
        "max_steps must be a whole number from steps (64)",
    ),
    ([*ATTRIBUTE, "--answer", "a", "--layer", "2", "--out", "{out}"], "layer 2 is out of range"),
    ([*ATTRIBUTE, "--answer", "a", "--baseline", "xy", "--out", "{out}"], "baseline 'xy' is 2"),
    ([*ATTRIBUTE, "--answer", "a", "--baseline", "", "--out", "{out}"], "must not be empty"),
    (
        [*ATTRIBUTE[:4], "x" * 300, "--answer", "a", "--out", "{out}"],
        "context window of 256",
    ),
    (
        ["heads", "--model", "random:tiny", "--ablate", "0", "--out", "{out}"],
        "argument --ablate: must be at least 1",
    ),
    (
        ["heads", "--model", "random:tiny", "--seq-len", "5", "--ablate", "9", "--out", "{out}"],
        "cannot ablate 9 heads",
    ),
    (
        [
            "lens",
            "--model",
            "random:tiny",
            "--prompt",
            "hi",
            "--train-if-missing",
            "--out",
            "{out}",
        ],
        "--train-if-missing trains the lens cached for the model: use it with --tuned auto",
    ),
    (
        ["dla", "--model", "random:tiny", "--prompt", "hi", "--answer", "id:999", "--out", "{out}"],
        "answer token id 999 is outside the vocabulary",
    ),
    (["circuits", "--model", "random:tiny", "--top", "0", "--out", "{out}"], "at least 1"),
    (["circuits", "--model", "random:nope", "--out", "{out}"], "unknown random preset 'nope'"),
    (["circuits", "--model", "random:tiny"], "the following arguments are required: --out"),
]


@pytest.mark.parametrize(
    "args,message", BAD_INPUT, ids=[" ".join(a[:1] + a[3:5]) for a, _ in BAD_INPUT]
)
def test_bad_input_is_one_line_status_2_and_no_files(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    code, stdout, stderr = run_cli(capsys, *[a.replace("{out}", str(out)) for a in args])
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], stderr
    assert "Traceback" not in stderr and not stdout.strip()
    assert not out.exists()


def test_a_directory_in_the_way_stops_the_command_before_any_file(tmp_path, capsys):
    out = tmp_path / "out"
    (out / "lens_kl.png").mkdir(parents=True)  # one of the names lens writes, taken by a directory
    code, _, stderr = run_cli(
        capsys, "lens", "--model", "random:tiny", "--prompt", "hi", "--out", str(out)
    )
    assert (
        code == 2 and "lens_kl.png" in stderr and "a directory of that name is in the way" in stderr
    )
    assert [p.name for p in out.iterdir()] == ["lens_kl.png"]


def test_a_directory_in_the_way_of_the_json_names_the_json_flag(tmp_path, capsys):
    (tmp_path / "v.json").mkdir()
    code, _, stderr = run_cli(
        capsys, "verify", "--model", "random:tiny", "--json", str(tmp_path / "v.json")
    )
    assert code == 2 and stderr.strip().endswith("Remove it or choose another --json."), stderr


def test_a_token_id_is_given_as_id_n_and_digits_stay_text(tmp_path, capsys):
    """--answer id:N is token id N (the error hints say so); '5' alone is the text '5'."""
    by_id, by_text = tmp_path / "id", tmp_path / "text"
    model = ["dla", "--model", "random:tiny", "--prompt", "abc"]
    assert run_cli(capsys, *model, "--answer", f"id:{ord('5')}", "--out", str(by_id))[0] == 0
    assert run_cli(capsys, *model, "--answer", "5", "--out", str(by_text))[0] == 0
    first, second = (json.loads((d / "dla.json").read_text()) for d in (by_id, by_text))
    assert first["answer"] == second["answer"] == "5" and first["total"] == second["total"]


def test_a_directory_in_the_way_of_a_late_name_is_found_before_writing(tmp_path, capsys):
    """attention_L1.png is known only once the model is loaded: still nothing is written."""
    out = tmp_path / "out"
    (out / "attention_L1.png").mkdir(parents=True)
    code, _, stderr = run_cli(
        capsys, "attention", "--model", "random:tiny", "--prompt", "hi", "--out", str(out)
    )
    assert code == 2 and "attention_L1.png" in stderr
    assert [p.name for p in out.iterdir()] == ["attention_L1.png"]


HOSTILE_MARKUP = "[/x] [link=https://evil.invalid]click[/link] [blink]blink[/blink] [bold red]loud"


def test_hostile_markup_in_a_prompt_is_printed_as_text(capsys):
    code, stdout, stderr = run_cli(
        capsys, "predict", "--model", "random:tiny", "--prompt", HOSTILE_MARKUP
    )
    assert code == 0, stderr
    flat = "".join(stdout.split())
    assert (
        "".join(HOSTILE_MARKUP.split()) in flat
    )  # every bracket survived: nothing was read as markup


def test_hostile_markup_in_a_model_name_and_path(tmp_path, capsys, hf_gpt2_dir):
    import shutil

    directory = tmp_path / "[bold]mo$del$[red]"
    shutil.copytree(hf_gpt2_dir, directory)
    out = tmp_path / "[link=x]out"
    code, stdout, stderr = run_cli(
        capsys,
        "heads",
        "--model",
        str(directory),
        "--seq-len",
        "4",
        "--batch",
        "1",
        "--out",
        str(out),
    )
    assert code == 0, stderr
    flat = "".join(stdout.split())  # rich wraps long titles
    assert "[bold]mo$del$[red]:topheads" in flat and "[link=x]out" in flat
    assert (out / "heads_induction.png").stat().st_size > 0  # '$...$' in the title drew as text


CONTROL_SEQUENCES = {
    "window title": "\x1b]0;pwned\x07",
    "colour": "\x1b[31m",
    "hyperlink": "\x1b]8;;https://evil.invalid\x1b\\",
    "carriage return": "\r",
    "C1 CSI": "\x9b31m",
    "bidi override": "\u202e",
}


def raw_controls(text: str) -> list[str]:
    from mechlab.terminal import CONTROL

    return CONTROL.findall(text)


@pytest.mark.parametrize("name", list(CONTROL_SEQUENCES))
def test_control_characters_reach_the_terminal_escaped(name, tmp_path, capsys, hf_gpt2_dir):
    """In tables, one-line errors and messages alike, on stdout and stderr."""
    import shutil

    sequence = CONTROL_SEQUENCES[name]
    # how each may be shown: \x1b, \x0d, \u202e (or Python's repr: \r, where it is a repr)
    shown = [
        {ascii(c)[1:-1], f"\\x{ord(c):02x}" if ord(c) <= 0xFF else f"\\u{ord(c):04x}"}
        for c in raw_controls(sequence)
    ]
    runs = [  # (argv, expected exit status)
        (["predict", "--model", "random:tiny", "--prompt", f"ab{sequence}c"], 0),  # a table
        (["dla", "--model", "random:tiny", "--prompt", "abc", "--answer", f"x{sequence}"], 2),
        (["predict", "--model", str(tmp_path / f"model{sequence}x"), "--prompt", "hi"], 2),
    ]
    directory = tmp_path / f"checkpoint{sequence}x"
    shutil.copytree(hf_gpt2_dir, directory)
    heads = ["heads", "--model", str(directory), "--seq-len", "4", "--batch", "1"]
    runs.append(([*heads, "--out", str(tmp_path / f"out{sequence}")], 0))
    for argv, status in runs:
        if argv[0] == "dla":
            argv = [*argv, "--out", str(tmp_path / "dla")]
        code, stdout, stderr = run_cli(capsys, *argv)
        assert code == status, stderr
        bars_redrawn = stderr.replace("\r", "")  # progress bars redraw their line with \r
        assert raw_controls(stdout) == [] and raw_controls(bars_redrawn) == [], (
            argv,
            stdout,
            stderr,
        )
        flat = "".join((stdout + stderr).split())  # rich wraps long titles
        assert all(any(form in flat for form in forms) for forms in shown), (argv, stdout, stderr)
        if status == 2:
            assert len(stderr.strip().splitlines()) == 1, stderr
        else:  # no library warnings (matplotlib's missing glyphs) on the user's stderr
            assert "Warning" not in stderr, stderr


def test_a_long_pasted_input_is_shortened_in_a_one_line_error(capsys):
    answer = "x" * 5000
    code, _, stderr = run_cli(
        capsys,
        "dla",
        "--model",
        "random:tiny",
        "--prompt",
        "abc",
        "--answer",
        answer,
        "--out",
        "/nonexistent-never-written",
    )
    assert code == 2 and "more characters" in stderr and len(stderr) < 600, len(stderr)


def test_prompts_file_lines_end_only_at_newline(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_bytes("one\u2028still one\ntwo\r\n\x0cthree\x1cfour\n\n  \nfive".encode())
    assert read_prompts(str(path)) == ["one\u2028still one", "two", "\x0cthree\x1cfour", "five"]


def test_prompts_file_errors(tmp_path):
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(InputError, match="not UTF-8"):
        read_prompts(str(binary))
    many = tmp_path / "many"
    many.write_text("p\n" * 10_001)
    with pytest.raises(InputError, match="10,001 prompts, more than 10,000"):
        read_prompts(str(many))


def test_many_prompts_say_their_count_and_time_up_front(tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"prompt number {i}\n" for i in range(12)))
    out = tmp_path / "out"
    code, _, stderr = run_cli(
        capsys, "lens", "--model", "random:tiny", "--prompts-file", str(prompts), "--out", str(out)
    )
    assert code == 0
    assert "12 prompts; the first took" in stderr and "min in all" in stderr
    assert json.loads((out / "lens.json").read_text())["curves"]["n_prompts"] == 12


def test_lens_over_many_prompts_keeps_memory_flat():
    """Curves over 400 prompts peak no higher than over 40 (plus noise): results are not kept. The
    list that keeps every result, as the command used to, grows well past that margin."""
    from mechlab.memory import peak_memory_increase

    setup = (
        "import torch\nfrom mechlab.models.loading import load_model\n"
        "from mechlab.analysis.lens import lens_curves, logit_lens\n"
        "model = load_model('random:tiny')\nprompts = [f'prompt number {i} ' * 4 for i in "
        "range(400)]\n"
        "lens_curves(logit_lens(model, p) for p in prompts[:5])"
    )
    streamed = {
        n: peak_memory_increase(setup, f"lens_curves(logit_lens(model, p) for p in prompts[:{n}])")
        for n in (40, 400)
    }
    kept = peak_memory_increase(
        setup, "results = [logit_lens(model, p) for p in prompts]; lens_curves(results)"
    )
    margin = 8 << 20
    assert streamed[400] < streamed[40] + margin, streamed
    assert kept > streamed[40] + margin, (kept, streamed)


def test_causal_commands_write_their_files_with_the_fixed_keys(tmp_path, capsys):
    out = tmp_path / "patch"
    args = ["patch", "--model", "random:tiny", *PATCH_PAIR, "--over", "layers", "--out", str(out)]
    assert run_cli(capsys, *args)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["patch.html", "patch.json", "patch_layers.png"]
    report = json.loads((out / "patch.json").read_text())
    assert set(report) >= {
        "model",
        "clean",
        "corrupted",
        "answer",
        "wrong",
        "over",
        "clean_logit_diff",
        "corrupted_logit_diff",
        "grid",
        "row_labels",
        "col_labels",
    }
    assert len(report["grid"]) == len(report["row_labels"]) == 4  # 2 layers x (attn, mlp)
    assert len(report["grid"][0]) == len(report["col_labels"]) == 6  # BOS + 5 bytes

    out = tmp_path / "dla"
    args = ["dla", "--model", "random:tiny", "--prompt", "abc", "--answer", "d", "--out", str(out)]
    assert run_cli(capsys, *args)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "dla.html",
        "dla.json",
        "dla_heads.png",
        "dla_layers.png",
    ]
    dla = json.loads((out / "dla.json").read_text())
    assert dla["total"] == pytest.approx(dla["sum_of_parts"], abs=1e-4)

    out = tmp_path / "heads"
    args = ["heads", "--model", "random:tiny", "--seq-len", "8", "--batch", "3", "--ablate", "2"]
    assert run_cli(capsys, *args, "--out", str(out))[0] == 0
    ablation = json.loads((out / "heads.json").read_text())["ablation"]
    assert [row["kind"] for row in ablation] == ["single", "single", "joint", "control"]
    assert all({"heads", "loss_second_half", "delta"} <= set(row) for row in ablation)
    assert (out / "ablation.png").exists()


# --------------------------------------------------------------------------------------------------
# Every command, probed with the same bad inputs: a command added later is held to it too


def command_paths(parser=None, prefix=()) -> list[tuple[str, ...]]:
    """Every runnable command as its words: ('lens',), ('sae', 'train'), ..."""
    import argparse

    from mechlab.cli import build_parser

    parser = parser or build_parser()
    paths = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                nested = command_paths(sub, (*prefix, name))
                if sub.get_default("run") is not None:
                    paths.append((*prefix, name))
                paths += [p for p in nested if p not in paths]
    return paths


# the least each command needs to run on a tiny model (the output path is added by the probe)
MINIMAL = {
    ("models",): None,  # writes nothing, takes no input
    ("predict",): ["--model", "random:tiny"],
    ("verify",): ["--model", "random:tiny", "--json", "{file}"],
    ("attention",): ["--model", "random:tiny", "--prompt", "ab", "--out", "{out}"],
    ("heads",): ["--model", "random:tiny", "--out", "{out}"],
    ("patch",): ["--model", "random:tiny", *PATCH_PAIR, "--out", "{out}"],
    ("train-induction",): ["--steps", "1", "--out", "{out}"],
    ("train-grokking",): ["--p", "5", "--steps", "1", "--out", "{out}"],
    ("dla",): ["--model", "random:tiny", "--prompt", "ab", "--answer", "c", "--out", "{out}"],
    ("attribute",): [*ATTRIBUTE, "--answer", "c", "--out", "{out}"],
    ("circuits",): ["--model", "random:tiny", "--out", "{out}"],
    ("neurons",): ["--model", "random:tiny", "--layer", "0", "--out", "{out}"],
    ("neurons", "show"): ["{missing}", "--layer", "0", "--neuron", "0", "--out", "{out}"],
    ("sae", "train"): ["--model", "random:tiny", "--layer", "0", "--out", "{out}"],
    ("sae", "show"): ["{missing}", "--out", "{out}"],
    ("lens",): ["--model", "random:tiny", "--prompt", "ab", "--out", "{out}"],
    ("tune-lens",): ["--model", "random:tiny", "--out", "{out}"],
    ("report",): ["--model", "random:tiny", "--out", "{out}"],
}


def test_every_command_is_in_the_probe():
    assert sorted(command_paths()) == sorted(MINIMAL)


@pytest.mark.parametrize("path", sorted(MINIMAL), ids=lambda p: " ".join(p))
def test_probe_every_command_with_bad_input(path, tmp_path, capsys):
    """An unknown option; an output path that is a file; a model spec that is no model: each one
    line on stderr, exit status 2, nothing written, the file in the way untouched."""
    args = MINIMAL[path]
    blocker = tmp_path / "blocker"
    blocker.write_text("mine")
    fill = {"{out}": str(blocker), "{file}": str(tmp_path / "dir"), "{missing}": "/no/such/dir"}
    probes = [[*path, "--no-such-option"]]
    if args is not None and "{out}" in args:
        probes.append([*path, *[fill.get(a, a) for a in args]])
    if args is not None and "--model" in args:
        bad_model = [*path, *[fill.get(a, a) for a in args]]
        bad_model[bad_model.index("random:tiny")] = "random:no-such-preset"
        bad_model = [str(tmp_path / "out") if a == str(blocker) else a for a in bad_model]
        probes.append(bad_model)
    if args is not None and "{file}" in args:  # verify --json: a directory in the way
        (tmp_path / "dir").mkdir()
        probes.append([*path, *[fill.get(a, a) for a in args]])
    for probe in probes:
        before = sorted(p.name for p in tmp_path.iterdir())
        code = main(probe)
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1, (probe, err)
        assert "Traceback" not in err[0]
        assert sorted(p.name for p in tmp_path.iterdir()) == before, probe
        assert blocker.read_text() == "mine"
