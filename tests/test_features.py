"""Features: neuron records against a brute-force pass over every activation, and sparse
autoencoders trained with SAELens and measured with mechlab's own metrics, checked against hand
computations and hand-written hooks; the files, the pages and bad input."""

import json

import pytest
import torch
import torch.nn.functional as F

from mechlab.analysis.neurons import NeuronRecords, batches, best, sequences, top_activations
from mechlab.analysis.sae import (
    SAE,
    final_norm_scale,
    inference_tensors,
    spliced_losses,
    train_sae,
    variance_explained,
)
from mechlab.cli import main
from mechlab.errors import DataError, InputError
from mechlab.models.loading import load_model

TEXTS = [
    f"Paragraph {i}: the quick brown fox {'jumps over ' * (i % 4 + 1)}the lazy dog {i * 7}."
    for i in range(60)
]


@pytest.fixture(scope="module")
def tiny():
    return load_model("random:tiny")


# --------------------------------------------------------------------------------------------------
# Neurons


def brute_force(model, texts, tokens, layer, hook="mlp.hook_post", transform=None):
    """Every recorded activation, in corpus order (text, then position; BOS left out).

    The forward passes take the documents in the batches top_activations takes them in (padded
    alike), so that both see the same activations bit for bit on any CPU: what is checked is the
    streaming selection, ties included, not the rounding of two differently shaped matmuls (which
    would break ties between equal contexts one way here and another way there)."""
    values, where = [], []
    documents = sequences(model, texts, tokens)
    for first, batch in batches(documents):
        ids = torch.zeros(len(batch), max(len(d) for d in batch), dtype=torch.long)
        for row, document in enumerate(batch):
            ids[row, : len(document)] = document
        _, cache = model.run_with_cache(ids)
        acts = cache[f"blocks.{layer}.{hook}"].float()
        if transform is not None:
            acts = transform(acts)
        for row, document in enumerate(batch):
            for position in range(1, len(document)):
                values.append(acts[row, position])
                where.append((first + row, position))
    return torch.stack(values).detach(), torch.tensor(where)


@pytest.mark.numerics
@pytest.mark.parametrize("rounded", [False, True])
def test_top_activations_equal_sorting_every_activation(tiny, rounded):
    """The streamed top-k and bottom-k equal a stable sort of all activations at once, ties
    included (rounding to quarters makes many): earlier text, then earlier position, first."""
    transform = (lambda a: (a * 4).round() / 4) if rounded else None
    records = top_activations(
        tiny, TEXTS, layers=[0, 1], k=6, context=3, tokens=900, transform=transform
    )
    for index, layer in enumerate([0, 1]):
        values, where = brute_force(tiny, TEXTS, 900, layer, transform=transform)
        top = values.T.sort(dim=1, descending=True, stable=True).indices[:, :6]
        bottom = values.T.sort(dim=1, stable=True).indices[:, :6]
        torch.testing.assert_close(records.top_values[index], values.T.gather(1, top))
        torch.testing.assert_close(records.bottom_values[index], values.T.gather(1, bottom))
        assert torch.equal(records.top_where[index], where[top])
        assert torch.equal(records.bottom_where[index], where[bottom])
        torch.testing.assert_close(records.mean[index], values.mean(0), atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(
            records.std[index], values.std(0, unbiased=False), atol=1e-5, rtol=1e-4
        )
        torch.testing.assert_close(records.frac_positive[index], (values > 0).float().mean(0))
        assert (records.histogram[index].sum(-1) == len(values)).all()
    assert records.tokens_seen == 900


@pytest.mark.parametrize("top", [True, False])
def test_best_is_the_head_of_a_stable_sort(top):
    """The partial selection equals a full stable sort, with rows of many ties (integer keys),
    rows where every key ties, and a count above the row's length."""
    generator = torch.Generator().manual_seed(0)
    key = torch.randint(0, 5, (300, 200), generator=generator).float()
    key[7] = 2.0
    for count in (1, 6, 150, 200, 500):
        expected = key.sort(dim=1, descending=top, stable=True).indices[:, :count]
        assert torch.equal(best(key, count, top), expected)


def test_contexts_hold_the_activations_around_each_record(tiny):
    records = top_activations(tiny, TEXTS, layers=[1], k=3, context=4, tokens=500)
    documents = sequences(tiny, TEXTS, 500)
    for neuron in (0, 17, 200):
        document, position = records.top_where[0, neuron, 0].tolist()
        _, cache = tiny.run_with_cache(documents[document][None])
        acts = cache["blocks.1.mlp.hook_post"][0, :, neuron]
        for offset, value in zip(range(-4, 5), records.top_contexts[0, neuron, 0], strict=True):
            p = position + offset
            expected = acts[p] if 1 <= p < len(acts) else 0.0  # outside or BOS: 0
            assert float(value) == pytest.approx(float(expected), abs=1e-6)
        tokens = records.window_tokens(document, position)
        assert tokens[4] == int(documents[document][position])
    # every window, at both ends of a document too: the ids there, None outside it
    ids = records.documents[0].tolist()
    for position in range(-6, len(ids) + 6):
        expected = [
            ids[p] if 0 <= p < len(ids) else None for p in range(position - 4, position + 5)
        ]
        assert records.window_tokens(0, position) == expected, position


@pytest.mark.parametrize("spec", ["random:tiny", "random:llama-tiny"])
def test_final_norm_scale_is_the_mean_of_the_hooked_scale(spec):
    """Blocks, then the final norm alone: the same mean as a full run's ln_final.hook_scale."""
    model = load_model(spec)
    documents = [d for d in sequences(model, TEXTS, 300) if len(d) > 1]
    scales = []
    for tokens in documents:
        _, cache = model.run_with_cache(tokens[None], names_filter="ln_final.hook_scale")
        scales.append(cache["ln_final.hook_scale"][0, 1:].flatten())
    assert final_norm_scale(model, documents) == pytest.approx(torch.cat(scales).mean().item())


def test_logit_effects_are_w_out_times_w_u(tiny):
    records = top_activations(tiny, TEXTS, layers=[1], k=2, tokens=200)
    effects = tiny.blocks[1].mlp.W_out.detach() @ tiny.W_U.detach()
    top = effects.topk(10, dim=-1)
    assert torch.equal(records.promoted[0], top.indices)
    torch.testing.assert_close(records.promoted_values[0], top.values)


def test_records_round_trip_and_refuse_other_models_and_corrupt_files(tiny, tmp_path):
    from mechlab.io import write_files
    from mechlab.present.features import neuron_files

    records = top_activations(tiny, TEXTS, layers=[0], k=3, tokens=300, samples=4)
    write_files(tmp_path / "n", neuron_files(records))
    again = NeuronRecords.load(tmp_path / "n", tiny)
    for name, tensor in records.tensors().items():
        assert torch.equal(again.tensors()[name], tensor), name
    with pytest.raises(DataError, match="belong to 'random:tiny', not to 'random:llama-tiny'"):
        NeuronRecords.load(tmp_path / "n", load_model("random:llama-tiny"))
    (tmp_path / "n" / "neurons.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(DataError, match=r"cannot read .* as safetensors") as error:
        NeuronRecords.load(tmp_path / "n")
    assert "\n" not in str(error.value)


def test_memory_stays_flat_as_tokens_grow():
    """A running top-k per neuron, not the activations: 8x the tokens, about the same peak."""
    from mechlab.memory import peak_memory_increase

    setup = (
        "from mechlab.models.loading import load_model\n"
        "from mechlab.analysis.neurons import top_activations\n"
        "model = load_model('random:tiny')\n"
        "texts = [('abcdefghij ' * 40)] * 400"
    )
    peaks = {
        tokens: peak_memory_increase(
            setup, f"top_activations(model, texts, layers=[0, 1], k=20, tokens={tokens})"
        )
        for tokens in (8192, 65536)
    }
    assert peaks[65536] < 1.5 * peaks[8192] + (16 << 20), peaks


def test_neurons_command_and_page(tmp_path, capsys):
    out = tmp_path / "records"
    args = ["neurons", "--model", "random:tiny", "--layer", "1", "--tokens", "2000"]
    assert main([*args, "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {"neurons.safetensors", "neurons.json"}
    page = tmp_path / "page.html"
    show = ["neurons", "show", str(out), "--layer", "1"]
    assert main([*show, "--neuron", "7", "--out", str(page)]) == 0
    text = page.read_text()
    assert "L1N7" in text and "highest activations" in text and "W_out[n] @ W_U" in text
    assert 'title="+' in text or 'title="-' in text  # hover values on the tokens
    pages = tmp_path / "pages"
    assert main([*show, "--neuron", "1", "--neuron", "2", "--out", str(pages)]) == 0
    assert sorted(p.name for p in pages.iterdir()) == ["neuron_L1N1.html", "neuron_L1N2.html"]
    capsys.readouterr()


# --------------------------------------------------------------------------------------------------
# The SAE's metrics


def test_variance_explained_of_perfect_and_mean_reconstructions():
    x = torch.randn(500, 16) * torch.linspace(0.1, 3, 16) + 2.0
    assert variance_explained(x, x) == pytest.approx(1.0)
    assert variance_explained(x, x.mean(0).expand_as(x)) == pytest.approx(0.0, abs=1e-9)
    noisy = x + 0.1 * torch.randn_like(x)
    assert 0.9 < variance_explained(x, noisy) < 1.0


def hand_loss(model, tokens, name, replacement):
    """The next-token loss (predictions from positions 1 .. pos-2) with the activation at `name`
    replaced at every position but BOS: a hook written here."""

    def hook(activation, hook):
        activation = activation.clone()
        activation[:, 1:] = replacement(activation[:, 1:])
        return activation

    logits = model.run_with_hooks(tokens, fwd_hooks=[(name, hook)])
    return F.cross_entropy(logits[:, 1:-1].flatten(0, 1), tokens[:, 2:].flatten()).item()


@pytest.mark.numerics
def test_spliced_losses_against_hand_written_hooks(tiny):
    tokens = torch.randint(0, 256, (4, 24), generator=torch.Generator().manual_seed(0))
    tokens[:, 0] = 256
    name, mean = "blocks.1.hook_resid_post", torch.randn(64)
    identity = spliced_losses(tiny, tokens, name, lambda a: a, mean)
    clean = F.cross_entropy(tiny(tokens)[:, 1:-1].flatten(0, 1), tokens[:, 2:].flatten()).item()
    assert identity.spliced == pytest.approx(clean, abs=1e-5)
    assert identity.clean == pytest.approx(clean, abs=1e-5) and identity.kl < 1e-6
    zero = spliced_losses(tiny, tokens, name, lambda a: torch.zeros_like(a), mean)
    assert zero.spliced == pytest.approx(zero.zero, abs=1e-5)
    assert zero.zero == pytest.approx(hand_loss(tiny, tokens, name, torch.zeros_like), abs=1e-5)
    assert zero.mean == pytest.approx(
        hand_loss(tiny, tokens, name, lambda a: mean.expand_as(a)), abs=1e-5
    )
    halve = spliced_losses(tiny, tokens, name, lambda a: a / 2, mean)
    assert halve.spliced == pytest.approx(hand_loss(tiny, tokens, name, lambda a: a / 2), abs=1e-5)
    # massive activations (norm above the limit) pass through, under every replacement
    _, cache = tiny.run_with_cache(tokens, names_filter=name)
    limit = cache[name][:, 1:].norm(dim=-1).median().item()

    def below(fn):
        return lambda a: torch.where(a.norm(dim=-1, keepdim=True) > limit, a, fn(a))

    passed = spliced_losses(tiny, tokens, name, lambda a: a / 2, mean, limit=limit)
    assert passed.spliced == pytest.approx(
        hand_loss(tiny, tokens, name, below(lambda a: a / 2)), abs=1e-5
    )
    assert passed.zero == pytest.approx(hand_loss(tiny, tokens, name, below(torch.zeros_like)))
    assert abs(passed.zero - zero.zero) > 1e-2  # about half the positions kept their own
    # a planted bug: splicing at the wrong layer gives another loss than the hand-written hook
    wrong = spliced_losses(tiny, tokens, "blocks.0.hook_resid_post", lambda a: a / 2, mean)
    assert abs(wrong.spliced - hand_loss(tiny, tokens, name, lambda a: a / 2)) > 1e-3


def test_the_inference_sae_is_the_trained_one_on_unscaled_inputs():
    """SAELens's decoder-norm folding and mechlab's input scale folded into the saved weights:
    the saved SAE on x equals the training SAE on x * scale, divided by scale."""
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig

    training = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=16, d_sae=64, k=4, device="cpu"))
    with torch.no_grad():
        for param in training.parameters():
            param.add_(0.3 * torch.randn(param.shape, generator=torch.Generator().manual_seed(1)))
    x, scale = 5 * torch.randn(10, 16, generator=torch.Generator().manual_seed(2)), 0.37
    sae = SAE.from_tensors(
        inference_tensors(training, scale), 4, {"layer": 0, "site": "resid_post"}
    )
    torch.testing.assert_close(
        sae.reconstruct(x), (training(x * scale) / scale).detach(), atol=1e-4, rtol=1e-4
    )
    assert (sae.encode(x) > 0).sum(-1).max() <= 4


# --------------------------------------------------------------------------------------------------
# Training, saving, resuming


def corpus_texts():
    from mechlab.corpus import load_corpus

    corpus = load_corpus("wikipedia")
    return corpus.train[:4], corpus.held_out[:1]


@pytest.mark.numerics
def test_a_short_training_learns_and_the_files_round_trip(tiny, tmp_path):
    from mechlab.io import write_files
    from mechlab.present.features import sae_files

    train, held_out = corpus_texts()
    sae = train_sae(tiny, train, layer=1, expansion=4, k=8, tokens=16384, held_out=held_out,
                    epochs=2, eval_tokens=2048, batch=256)  # fmt: skip
    losses = sae.manifest["loss"]
    assert len(losses) == 128 and sum(losses[-8:]) < 0.7 * sum(losses[:8])
    m = sae.metrics
    assert 0 < m.l0 <= 8 and 0 <= m.dead_fraction < 1 and m.tokens + m.massive_tokens >= 2048
    # massive activations: none above 10x the median in this model, and none encoded if there were
    assert sae.manifest["massive_tokens_left_out"] == m.massive_tokens == 0
    x = torch.randn(3, 64)
    x[1] *= 2 * sae.norm_limit / x[1].norm()
    features = sae.features(x)
    assert (features[1] == 0).all() and (features[[0, 2]] == sae.encode(x)[[0, 2]]).all()
    for value in (m.variance_explained, m.clean_loss, m.spliced_loss, m.kl):
        assert torch.isfinite(torch.tensor(value))
    write_files(tmp_path / "sae", sae_files(sae))
    again = SAE.load(tmp_path / "sae", tiny)
    x = torch.randn(5, 64)
    torch.testing.assert_close(again.reconstruct(x), sae.reconstruct(x))
    assert again.metrics.variance_explained == pytest.approx(m.variance_explained)
    with pytest.raises(DataError, match="was trained for 'random:tiny', not for"):
        SAE.load(tmp_path / "sae", load_model("random:llama-tiny"))
    data = json.loads((tmp_path / "sae" / "sae.json").read_text())
    data["k"] = 10**6
    (tmp_path / "sae" / "sae.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match="is not below the width"):
        SAE.load(tmp_path / "sae", tiny)
    data["k"], data["norm_limit"] = 8, -1.0
    (tmp_path / "sae" / "sae.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match="norm_limit must be positive"):
        SAE.load(tmp_path / "sae", tiny)


@pytest.mark.numerics
def test_ctrl_c_keeps_a_checkpoint_the_same_run_continues_from(tiny, tmp_path, monkeypatch):
    from sae_lens.training.sae_trainer import SAETrainer

    train, held_out = corpus_texts()
    options = dict(layer=1, expansion=2, k=4, tokens=12288, held_out=held_out, epochs=2,
                   eval_tokens=1024, checkpoint=tmp_path)  # fmt: skip
    whole = train_sae(tiny, train, **{**options, "checkpoint": None})
    step, calls = SAETrainer.step, {"n": 0}

    def interrupt_at_4(self, batch):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return step(self, batch)

    monkeypatch.setattr(SAETrainer, "step", interrupt_at_4)
    stopped = train_sae(tiny, train, **options)
    assert stopped.manifest["interrupted"] and stopped.manifest["steps"] == 3
    assert (tmp_path / "checkpoint.safetensors").exists()
    monkeypatch.setattr(SAETrainer, "step", step)
    resumed = train_sae(tiny, train, **options)
    assert resumed.manifest["steps"] == whole.manifest["steps"] == 6
    torch.testing.assert_close(resumed.manifest["loss"], whole.manifest["loss"])
    for name, tensor in whole.tensors().items():
        torch.testing.assert_close(resumed.tensors()[name], tensor, atol=1e-5, rtol=1e-5)
    # another run's checkpoint is refused, not reused
    with pytest.raises(DataError, match="belongs to another training run"):
        train_sae(tiny, train, **{**options, "k": 5})


def test_bad_sae_arguments(tiny):
    train, _ = corpus_texts()
    for kwargs, message in [
        (dict(layer=2), "layer 2 is out of range"),
        (dict(layer=0, site="nowhere"), "unknown site 'nowhere'"),
        (dict(layer=0, k=256), r"k must be an integer from 1 to the width - 1 \(255"),
        (dict(layer=0, tokens=10**9), "is more than the texts hold"),
    ]:
        with pytest.raises(InputError, match=message):
            train_sae(tiny, train, **{"expansion": 4, **kwargs})


SAE_BAD = [
    (["sae", "train", "--model", "random:tiny", "--layer", "5", "--out", "{out}"], "out of range"),
    (
        ["sae", "train", "--model", "random:tiny", "--layer", "0", "--site", "x", "--out", "{out}"],
        "invalid choice: 'x'",
    ),
    (
        ["sae", "train", "--model", "random:tiny", "--layer", "0", "--k", "512", "--out", "{out}"],
        "k must be an integer from 1 to the width - 1",
    ),
    (["sae", "show", "/nonexistent", "--out", "{out}"], "no SAE in '/nonexistent'"),
    (["sae"], "the following arguments are required"),
    (["neurons", "--model", "random:tiny", "--layer", "9", "--out", "{out}"], "out of range"),
    (["neurons", "--model", "random:tiny", "--layer", "1"], "required: --out"),
    (
        ["neurons", "show", "/nonexistent", "--layer", "0", "--neuron", "1", "--out", "{out}"],
        "no neuron records in '/nonexistent'",
    ),
]


@pytest.mark.parametrize("args,message", SAE_BAD, ids=[" ".join(a[:4]) for a, _ in SAE_BAD])
def test_bad_input_is_one_line_status_2_and_no_files(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    code = main([a.replace("{out}", str(out)) for a in args])
    stderr = capsys.readouterr().err.strip()
    assert code == 2 and len(stderr.splitlines()) == 1 and message in stderr, stderr
    assert not out.exists()


def test_show_refuses_a_neuron_out_of_range_and_a_layer_not_recorded(tmp_path, capsys):
    out = tmp_path / "records"
    main(
        ["neurons", "--model", "random:tiny", "--layer", "1", "--tokens", "600", "--out", str(out)]
    )
    for extra, message in [
        (["--layer", "1", "--neuron", "999"], "neuron 999 is out of range: choose 0 .. 255"),
        (["--layer", "0", "--neuron", "1"], "layer 0 was not recorded"),
    ]:
        page = tmp_path / "page.html"
        capsys.readouterr()
        assert main(["neurons", "show", str(out), *extra, "--out", str(page)]) == 2
        assert message in capsys.readouterr().err and not page.exists()


def test_sae_show_writes_dashboards(tmp_path, capsys):
    sae_dir = tmp_path / "sae"
    train = ["sae", "train", "--model", "random:tiny", "--layer", "1", "--expansion", "2"]
    assert (
        main([*train, "--k", "4", "--tokens", "8192", "--epochs", "1", "--out", str(sae_dir)]) == 0
    )
    assert {p.name for p in sae_dir.iterdir()} == {"sae.safetensors", "sae.json"}
    pages = tmp_path / "pages"
    assert (
        main(["sae", "show", str(sae_dir), "--top", "2", "--tokens", "3000", "--out", str(pages)])
        == 0
    )
    names = {p.name for p in pages.iterdir()}
    assert "index.html" in names and "features.json" in names and len(names) == 4
    feature_page = next(pages.glob("feature_*.html")).read_text()
    assert "A uniform sample of the activations above zero" in feature_page
    assert "W_dec[f] @ W_U" in feature_page
    capsys.readouterr()
