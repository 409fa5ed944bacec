"""The tuned lens: identity at the start (exactly the logit lens), trained by a loss on the final
distribution's support that approximates the exact KL as stated, saved without pickles and refused
for another model; the corpus it trains on is checked by hash; on SmolLM2 a short training beats
the logit lens at every layer on held-out text."""

import json

import pytest
import torch

from mechlab import load_model, logit_lens
from mechlab.analysis.tokens import token_sequences
from mechlab.analysis.tuned_lens import (
    BATCH,
    REST_SAMPLE,
    SEQ_LEN,
    TunedLens,
    evaluate,
    layer_inputs_and_final,
    support_kl,
    train_tuned_lens,
)
from mechlab.cli import main
from mechlab.corpus import load_corpus
from mechlab.errors import DataError, InputError

TEXT = (
    "The quick brown fox jumps over the lazy dog while the cat watches from the warm windowsill. "
) * 40


@pytest.fixture(scope="module")
def tiny():
    return load_model("random:tiny")


@pytest.mark.numerics
def test_an_untrained_lens_is_exactly_the_logit_lens(tiny):
    prompt = "Hello there, general Kenobi"
    plain = logit_lens(tiny, prompt, target=" ")
    tuned = logit_lens(tiny, prompt, target=" ", lens=TunedLens.for_model(tiny))
    assert plain.lens == "logit" and tuned.lens == "tuned"
    for name in ["top_ids", "top_probs", "kl_to_final", "entropy", "next_token_log_prob"]:
        torch.testing.assert_close(
            getattr(tuned, name), getattr(plain, name), rtol=0, atol=0, equal_nan=True
        )


def test_the_restricted_loss_is_the_exact_kl_minus_the_kl_inside_the_rest(tiny):
    """Chain rule: KL(p || q) = KL over (support, rest) + p_rest * KL(p | rest || q | rest). With
    the rest's mass computed exactly, the restricted loss is that first term, to float precision."""
    tokens = token_sequences(tiny, [TEXT])[:2]
    residuals, final = layer_inputs_and_final(tiny, tokens)
    with torch.no_grad():
        translated = residuals + 0.3 * torch.randn_like(residuals)  # some lens far from identity
        restricted = support_kl(tiny, translated, final, support=32, rest_sample=None)
        log_q = tiny.unembed(tiny.ln_final(translated)).log_softmax(-1)
        p = final.exp()
        exact = (p * (final - log_q)).sum(-1).mean()
        top = final.topk(32, dim=-1).indices
        rest = torch.ones_like(final, dtype=torch.bool).scatter(-1, top, False)
        p_rest = (p * rest).sum(-1)
        q_rest = (log_q.exp() * rest).sum(-1)
        inside = (
            (p * rest * (final - p_rest.log()[..., None] - log_q + q_rest.log()[..., None]))
            .sum(-1)
            .mean()
        )
    assert restricted <= exact
    torch.testing.assert_close(restricted + inside, exact, atol=1e-5, rtol=1e-4)


def test_the_sampled_rest_estimate_is_within_its_stated_bound(tiny):
    """The rest bucket's mass estimated from REST_SAMPLE sampled tokens, as in training (of 257
    here, drawn with repeats): within 5% of the loss with the rest computed exactly, averaged over
    20 draws."""
    tokens = token_sequences(tiny, [TEXT])[:2]
    residuals, final = layer_inputs_and_final(tiny, tokens)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        translated = residuals + 0.3 * torch.randn_like(residuals)
        exact_rest = support_kl(tiny, translated, final, rest_sample=None)
        sampled = torch.stack(
            [
                support_kl(
                    tiny,
                    translated,
                    final,
                    rest_sample=torch.randint(
                        0, tiny.cfg.d_vocab, (REST_SAMPLE,), generator=generator
                    ),
                )
                for _ in range(20)
            ]
        )
    assert abs(sampled.mean() - exact_rest) <= 0.05 * exact_rest


@pytest.mark.numerics
def test_one_training_step_lowers_the_held_out_kl_of_a_random_model(tiny):
    lens = train_tuned_lens(tiny, [TEXT], tokens=BATCH * SEQ_LEN, seed=0)
    assert lens.manifest["steps"] == 1 and lens.manifest["tokens_seen"] == BATCH * SEQ_LEN
    before = evaluate(tiny, TunedLens.for_model(tiny), [TEXT], tokens=2 * SEQ_LEN)
    after = evaluate(tiny, lens, [TEXT], tokens=2 * SEQ_LEN)
    assert before.tuned_kl == before.logit_kl  # the identity lens
    assert sum(after.tuned_kl) < sum(before.tuned_kl)


@pytest.mark.numerics
def test_save_and_load_round_trip_bit_identical_and_refuse_another_model(tiny, tmp_path):
    lens = train_tuned_lens(tiny, [TEXT], tokens=BATCH * SEQ_LEN, seed=0)
    lens.save(tmp_path / "lens")
    assert sorted(p.name for p in (tmp_path / "lens").iterdir()) == [
        "lens.safetensors",
        "manifest.json",
    ]
    again = TunedLens.load(tmp_path / "lens", tiny)
    assert torch.equal(again.weight, lens.weight) and torch.equal(again.bias, lens.bias)
    manifest = json.loads((tmp_path / "lens" / "manifest.json").read_text())
    assert manifest["model"] == "random:tiny" and len(manifest["weights_sha256"]) == 64
    other = load_model("random:tiny@1")
    with pytest.raises(DataError, match=r"was trained for 'random:tiny'.*not for 'random:tiny@1'"):
        TunedLens.load(tmp_path / "lens", other)
    with pytest.raises(DataError, match="no tuned lens in"):
        TunedLens.load(tmp_path, tiny)


def test_the_lens_refuses_mid_rows(tiny):
    with pytest.raises(InputError, match="include_mid is not supported"):
        logit_lens(tiny, "Hello", include_mid=True, lens=TunedLens.for_model(tiny))


# --------------------------------------------------------------------------------------------------
# On SmolLM2, and the commands


@pytest.mark.numerics
@pytest.mark.slow
def test_a_short_training_beats_the_logit_lens_at_every_layer_on_smollm2(smollm2):
    corpus = load_corpus()
    lens = train_tuned_lens(smollm2, corpus.train, tokens=8 * BATCH * SEQ_LEN, seed=0)
    evaluation = evaluate(smollm2, lens, corpus.held_out, tokens=2 * SEQ_LEN)
    assert evaluation.tuned_better_everywhere, (evaluation.logit_kl, evaluation.tuned_kl)
    assert evaluation.tuned_kl[-1] == evaluation.logit_kl[-1] == 0.0  # the output row


def test_cli_tune_lens_then_lens_through_it(tmp_path, capsys):
    out = tmp_path / "lens"
    assert (
        main(
            [
                "tune-lens",
                "--model",
                "random:tiny",
                "--tokens",
                "1024",
                "--eval-tokens",
                "256",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert {p.name for p in out.iterdir()} == {
        "lens.safetensors",
        "manifest.json",
        "eval.json",
        "tuned_vs_logit.png",
    }
    report = json.loads((out / "eval.json").read_text())
    assert set(report) == {"model", "tokens", "layers", "logit", "tuned"}
    assert set(report["tuned"]) == {"kl", "cross_entropy"} and len(report["layers"]) == 3
    assert (
        json.loads((out / "manifest.json").read_text())["held_out_kl"]["tuned"]
        == (report["tuned"]["kl"])
    )
    assert (
        main(
            [
                "tune-lens",
                "--model",
                "random:tiny",
                "--eval-only",
                "--eval-tokens",
                "256",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    view = tmp_path / "view"
    assert (
        main(
            [
                "lens",
                "--model",
                "random:tiny",
                "--prompt",
                "Hello",
                "--tuned",
                str(out),
                "--out",
                str(view),
            ]
        )
        == 0
    )
    assert json.loads((view / "lens.json").read_text())["lens"] == "tuned"


def test_cli_lens_with_a_missing_or_foreign_lens_is_one_line(tmp_path, capsys):
    for tuned, message in [
        (str(tmp_path / "nothing"), "no tuned lens in"),
        ("auto", "no tuned lens cached for random:tiny@3: add --train-if-missing"),
    ]:
        code = main(
            [
                "lens",
                "--model",
                "random:tiny@3",
                "--prompt",
                "Hi",
                "--tuned",
                tuned,
                "--out",
                str(tmp_path / "out"),
            ]
        )
        err = capsys.readouterr().err.strip()
        assert code == 2 and message in err and len(err.splitlines()) == 1, err
        assert not (tmp_path / "out").exists()


@pytest.mark.numerics
def test_an_interrupted_run_continues_from_its_checkpoint_to_the_same_lens(
    tiny, tmp_path, monkeypatch
):
    budget = 3 * BATCH * SEQ_LEN
    straight = train_tuned_lens(tiny, [TEXT], tokens=budget, seed=0)
    calls = {"n": 0}
    step = torch.optim.Adam.step

    def interrupt_at_the_second_step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", interrupt_at_the_second_step)
    first = train_tuned_lens(tiny, [TEXT], tokens=budget, seed=0, checkpoint=tmp_path)
    assert first.manifest["interrupted"] and first.manifest["steps"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.safetensors"]
    monkeypatch.setattr(torch.optim.Adam, "step", step)
    resumed = train_tuned_lens(tiny, [TEXT], tokens=budget, seed=0, checkpoint=tmp_path)
    assert resumed.manifest["steps"] == 3 and not resumed.manifest["interrupted"]
    assert resumed.manifest["loss"][0] == first.manifest["loss"][0]
    torch.testing.assert_close(resumed.weight, straight.weight, atol=1e-7, rtol=1e-6)
    torch.testing.assert_close(resumed.bias, straight.bias, atol=1e-7, rtol=1e-6)
    with pytest.raises(DataError, match="belongs to another training run"):
        train_tuned_lens(tiny, [TEXT], tokens=budget, seed=1, checkpoint=tmp_path)


def test_cli_tune_lens_interrupted_writes_only_its_checkpoint(tmp_path, monkeypatch, capsys):
    def interrupt(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch.optim.Adam, "step", interrupt)
    out = tmp_path / "lens"
    code = main(["tune-lens", "--model", "random:tiny", "--tokens", "2048", "--out", str(out)])
    assert code == 130 and "interrupted after step 0 of 2" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())  # nothing was learnt: nothing saved


def test_the_report_shows_the_cached_tuned_lens_beside_the_logit_lens(tmp_path, monkeypatch):
    from mechlab.analysis.tuned_lens import cached_lens_directory
    from mechlab.workflows.report import build_report

    monkeypatch.setenv("MECHLAB_CACHE", str(tmp_path / "cache"))
    without = build_report("random:tiny", seq_len=10, batch=2)
    assert without.tuned_lens is None
    assert any(reason.startswith("the tuned lens: none is cached") for reason in without.skipped)
    model = load_model("random:tiny")
    train_tuned_lens(model, [TEXT], tokens=BATCH * SEQ_LEN).save(cached_lens_directory(model))
    report = build_report("random:tiny", seq_len=10, batch=2)
    assert report.tuned_lens.lens == "tuned" and "lens_tuned_top1.png" in report.figures
    assert report.tuned_lens.prompt == report.lenses[0].prompt
    assert json.loads(report.files()["lens.json"])[-1]["lens"] == "tuned"


def test_the_fixed_entry_points_are_public():
    import mechlab

    assert mechlab.train_tuned_lens is train_tuned_lens and mechlab.TunedLens is TunedLens
    assert mechlab.load_corpus is load_corpus


def test_cli_tune_lens_refuses_less_than_one_step_before_loading(tmp_path, capsys):
    code = main(["tune-lens", "--tokens", "5", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "must be at least 1024" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------------
# Corrupt or foreign files: one reader per format, one line for the user


def huge_header(path):
    path.write_bytes((2**40).to_bytes(8, "little") + b"{}")


def bad_header(path):
    path.write_bytes((12).to_bytes(8, "little") + b"not json!!!!" + b"\0" * 64)


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def rewrite_manifest(directory, **changes):
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest.update(changes)
    (directory / "manifest.json").write_text(json.dumps(manifest))


def nan_weights(directory):
    """NaN in the weights, with the manifest's hash updated to match: only the values are bad."""
    from safetensors.torch import save_file

    from mechlab.analysis.tuned_lens import file_sha256

    path = directory / "lens.safetensors"
    lens = TunedLens.for_model(load_model("random:tiny"))
    weight = lens.weight.detach().fill_(float("nan"))
    save_file({"weight": weight, "bias": lens.bias.detach()}, path)
    rewrite_manifest(directory, lens_sha256=file_sha256(path))


def wrong_shapes(directory):
    from safetensors.torch import save_file

    from mechlab.analysis.tuned_lens import file_sha256

    path = directory / "lens.safetensors"
    save_file({"weight": torch.zeros(1, 2, 2), "bias": torch.zeros(1, 2)}, path)
    rewrite_manifest(directory, lens_sha256=file_sha256(path))


LENS_CORRUPTIONS = {
    "weights truncated": (lambda d: truncate(d / "lens.safetensors"), "lens.safetensors"),
    "weights header too large": (
        lambda d: huge_header(d / "lens.safetensors"),
        "lens.safetensors",
    ),
    "weights header invalid": (lambda d: bad_header(d / "lens.safetensors"), "lens.safetensors"),
    "weights NaN": (nan_weights, "NaN or infinite"),
    "weights of another shape": (wrong_shapes, "not the expected"),
    "weights swapped": (
        lambda d: (d / "lens.safetensors").write_bytes(b"x" * 100),
        "is not the file",
    ),
    "manifest a list": (lambda d: (d / "manifest.json").write_text("[1, 2]"), "not an object"),
    "manifest truncated": (lambda d: truncate(d / "manifest.json"), "not valid JSON"),
    "manifest NaN": (
        lambda d: (d / "manifest.json").write_text('{"n_layers": NaN}'),
        "not valid JSON",
    ),
    "manifest layers not a number": (
        lambda d: rewrite_manifest(d, n_layers="two"),
        "'n_layers' should be an integer",
    ),
    "manifest hash missing": (
        lambda d: rewrite_manifest(d, weights_sha256=None),
        "'weights_sha256' should be a string",
    ),
}


@pytest.fixture(scope="module")
def saved_lens(tmp_path_factory):
    directory = tmp_path_factory.mktemp("saved-lens")
    lens = train_tuned_lens(load_model("random:tiny"), [TEXT], tokens=BATCH * SEQ_LEN)
    lens.save(directory)
    return directory


@pytest.mark.parametrize("case", list(LENS_CORRUPTIONS))
def test_a_corrupt_lens_is_one_line_in_every_reader(case, saved_lens, tiny, tmp_path, capsys):
    import shutil

    corrupt, message = LENS_CORRUPTIONS[case]
    directory = tmp_path / "lens"
    shutil.copytree(saved_lens, directory)
    TunedLens.load(directory, tiny)  # the copy is good
    corrupt(directory)
    with pytest.raises(DataError, match=message):
        TunedLens.load(directory, tiny)
    for argv in [
        [
            "lens",
            "--model",
            "random:tiny",
            "--prompt",
            "Hi",
            "--tuned",
            str(directory),
            "--out",
            str(tmp_path / "view"),
        ],
        [
            "tune-lens",
            "--model",
            "random:tiny",
            "--eval-only",
            "--eval-tokens",
            "256",
            "--out",
            str(directory),
        ],
    ]:
        before = sorted(p.name for p in directory.iterdir())
        code = main(argv)
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1, err
        assert message in err and str(directory) in err, err
        assert not (tmp_path / "view").exists()
        assert sorted(p.name for p in directory.iterdir()) == before  # nothing written


def interrupted_checkpoint(tiny, directory, monkeypatch):
    """A real checkpoint: a 3-step run interrupted after its first step."""
    step = torch.optim.Adam.step
    calls = {"n": 0}

    def interrupt_at_the_second_step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return step(self, *args, **kwargs)

    with monkeypatch.context() as patched:
        patched.setattr(torch.optim.Adam, "step", interrupt_at_the_second_step)
        train_tuned_lens(tiny, [TEXT], tokens=3 * BATCH * SEQ_LEN, checkpoint=directory)
    return directory / "checkpoint.safetensors"


def rewrite_record(path, change):
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as file:
        tensors = {name: file.get_tensor(name) for name in file.keys()}  # noqa: SIM118 (safe_open is not iterable)
        metadata = file.metadata()
    metadata["record"] = change(metadata["record"])
    save_file(tensors, str(path), metadata=metadata)


CHECKPOINT_CORRUPTIONS = {
    "truncated": (truncate, "cannot read"),
    "header invalid": (bad_header, "cannot read"),
    "record not JSON": (
        lambda p: rewrite_record(p, lambda r: r[:10]),
        "not a tuned-lens checkpoint",
    ),
    "record a list": (lambda p: rewrite_record(p, lambda r: "[]"), "not a tuned-lens checkpoint"),
    "record with NaN": (
        lambda p: rewrite_record(p, lambda r: r.replace('"seconds": ', '"seconds": NaN, "x": ')),
        "'seconds' should be a finite number",
    ),
    "record step a string": (
        lambda p: rewrite_record(p, lambda r: r.replace('"step": 1', '"step": "1"')),
        "'step' should be an integer",
    ),
}


@pytest.fixture(scope="module")
def saved_checkpoint(tiny, tmp_path_factory):
    with pytest.MonkeyPatch.context() as monkeypatch:
        return interrupted_checkpoint(tiny, tmp_path_factory.mktemp("checkpoint"), monkeypatch)


@pytest.mark.parametrize("case", list(CHECKPOINT_CORRUPTIONS))
def test_a_corrupt_checkpoint_is_never_reused_and_says_how_to_start_over(
    case, saved_checkpoint, tiny, tmp_path, capsys
):
    path = tmp_path / saved_checkpoint.name
    path.write_bytes(saved_checkpoint.read_bytes())
    corrupt, message = CHECKPOINT_CORRUPTIONS[case]
    corrupt(path)
    start_over = "remove .*checkpoint.safetensors to start over"
    with pytest.raises(DataError, match=f"{message}.*{start_over}"):
        train_tuned_lens(tiny, [TEXT], tokens=3 * BATCH * SEQ_LEN, checkpoint=tmp_path)
    damaged = path.read_bytes()
    code = main(
        [
            "tune-lens",
            "--model",
            "random:tiny",
            "--tokens",
            str(3 * BATCH * SEQ_LEN),
            "--out",
            str(tmp_path),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "start over" in err, err
    assert path.read_bytes() == damaged  # neither reused nor replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.safetensors"]


def test_the_checkpoint_is_one_file_so_a_kill_leaves_old_or_new(tiny, tmp_path, monkeypatch):
    """The record travels inside the safetensors file: there is no pair to be caught half
    renamed. A second save replaces it whole; the resumed run continues from what it says."""
    path = interrupted_checkpoint(tiny, tmp_path, monkeypatch)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as file:
        record = json.loads(file.metadata()["record"])
    assert record["step"] == 1 and len(record["losses"]) == 1
    resumed = train_tuned_lens(tiny, [TEXT], tokens=3 * BATCH * SEQ_LEN, checkpoint=tmp_path)
    assert resumed.manifest["steps"] == 3


@pytest.mark.parametrize("taken", ["manifest.json", "checkpoint.safetensors"])
def test_tune_lens_checks_every_target_before_training(taken, tmp_path, capsys):
    out = tmp_path / "lens"
    (out / taken).mkdir(parents=True)
    code = main(["tune-lens", "--model", "random:tiny", "--tokens", "1024", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "a directory of that name is in the way" in err and taken in err, err
    assert sorted(p.name for p in out.iterdir()) == [taken]
