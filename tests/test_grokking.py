"""Grokking: the data and its split, the Fourier machinery against planted embeddings and
readouts and hand computations, a short run that memorises before it generalises, and bad input
refused before training."""

import json
import math

import pytest
import torch

from mechlab.analysis.fourier import (
    accuracy,
    excluded_logits,
    fourier_basis,
    frequency_norms,
    key_frequencies,
    mean_loss,
    restricted_logits,
)
from mechlab.cli import main
from mechlab.errors import InputError
from mechlab.scratch.grokking import all_pairs, grokking_config, train_grokking, train_mask
from mechlab.scratch.model import Transformer

# --------------------------------------------------------------------------------------------------
# The data


def test_pairs_and_answers_are_what_they_say():
    tokens, labels = all_pairs(5)
    assert tokens.shape == (25, 3) and labels.shape == (25,)
    assert tokens[7].tolist() == [1, 2, 5] and labels[7] == 3  # 1 + 2, "=" is token 5
    assert tokens[24].tolist() == [4, 4, 5] and labels[24] == 3  # 8 mod 5
    assert sorted(map(tuple, tokens[:, :2].tolist())) == [
        (a, b) for a in range(5) for b in range(5)
    ]


def test_the_split_is_seeded_disjoint_and_covers_every_pair():
    mask = train_mask(23, 0.3, seed=4)
    assert mask.sum() == round(0.3 * 23 * 23)
    assert torch.equal(mask, train_mask(23, 0.3, seed=4))  # the same for a seed
    assert not torch.equal(mask, train_mask(23, 0.3, seed=5))
    train, test = mask.nonzero()[:, 0], (~mask).nonzero()[:, 0]
    assert set(train.tolist()).isdisjoint(test.tolist())
    assert sorted(train.tolist() + test.tolist()) == list(range(23 * 23))


def test_loss_and_accuracy_against_hand_computations():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 3.0], [1.0, 1.0, 0.0]])
    labels = torch.tensor([0, 1, 2])
    by_hand = [
        -(2 - math.log(math.exp(2) + 2)),
        -(1 - math.log(1 + math.e + math.exp(3))),
        -(0 - math.log(2 * math.e + 1)),
    ]
    assert mean_loss(logits, labels) == pytest.approx(sum(by_hand) / 3, rel=1e-6)
    assert accuracy(logits, labels) == pytest.approx(1 / 3)
    rows = torch.tensor([True, False, True])
    assert mean_loss(logits, labels, rows) == pytest.approx((by_hand[0] + by_hand[2]) / 2)


# --------------------------------------------------------------------------------------------------
# The Fourier machinery


def test_the_fourier_basis_is_orthonormal_and_complete():
    basis, names = fourier_basis(13)
    assert basis.shape == (13, 13) and names[:3] == ["const", "cos 1", "sin 1"]
    torch.testing.assert_close(basis @ basis.T, torch.eye(13), atol=1e-5, rtol=0)
    with pytest.raises(InputError):
        fourier_basis(12)


def planted_embedding(p: int, frequencies: list[int], d_model: int = 32, noise: float = 0.0):
    """Each frequency's cos and sin written into its own pair of random directions."""
    generator = torch.Generator().manual_seed(0)
    x = torch.arange(p, dtype=torch.float32)
    embedding = noise * torch.randn(p, d_model, generator=generator)
    for k in frequencies:
        directions = torch.randn(2, d_model, generator=generator)
        waves = torch.stack(
            [torch.cos(2 * math.pi * k * x / p), torch.sin(2 * math.pi * k * x / p)], dim=1
        )
        embedding += waves @ directions
    return embedding


def test_a_planted_embedding_gives_exactly_its_frequencies():
    p = 113
    for frequencies in ([14], [14, 35, 41], [3, 7, 52, 56]):
        embedding = planted_embedding(p, frequencies, noise=0.05)
        assert key_frequencies(embedding) == sorted(frequencies)
        shares = frequency_norms(embedding)
        assert shares.shape == (56,) and shares.sum() == pytest.approx(1.0, abs=1e-5)
    # noise alone has no key frequency standing out: many pass the relative bar, none dominates
    noise_only = planted_embedding(p, [], noise=1.0)
    assert len(key_frequencies(noise_only)) > 10


def planted_readout(p: int, frequencies: list[int], scale: float = 8.0) -> torch.Tensor:
    """logits[(a, b), c] = scale * sum over k of cos(w_k (a + b - c)): Nanda et al.'s algorithm."""
    a = torch.arange(p).repeat_interleave(p).double()
    b = torch.arange(p).repeat(p).double()
    c = torch.arange(p).double()
    logits = torch.zeros(p * p, p, dtype=torch.float64)
    for k in frequencies:
        logits += torch.cos(2 * math.pi * k / p * ((a + b)[:, None] - c[None, :]))
    return (scale * logits).float()


@pytest.mark.numerics
def test_restricted_loss_of_the_algorithm_is_low_and_excluded_loss_high():
    p, keys = 31, [4, 9, 13]
    _, labels = all_pairs(p)
    logits = planted_readout(p, keys) + 0.5 * torch.randn(
        p * p, p, generator=torch.Generator().manual_seed(1)
    )
    full = mean_loss(logits, labels)
    restricted = mean_loss(restricted_logits(logits, keys), labels)
    excluded = mean_loss(excluded_logits(logits, keys), labels)
    assert restricted < full < 0.5  # the noise is removed, the algorithm kept
    assert excluded > math.log(p) - 0.5  # no better than guessing
    # the wrong frequencies keep nothing useful
    assert mean_loss(restricted_logits(logits, [1, 2, 3]), labels) > math.log(p) - 0.5
    # removing and keeping split the logits exactly
    torch.testing.assert_close(
        restricted_logits(logits, keys) + excluded_logits(logits, keys) - logits.mean(0),
        logits,
        atol=1e-4,
        rtol=0,
    )


# --------------------------------------------------------------------------------------------------
# Training


def test_the_model_is_nandas_and_the_switch_it_needs_works():
    cfg = grokking_config(113)
    assert (cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_mlp, cfg.n_layers) == (128, 4, 32, 512, 1)
    assert cfg.normalization is None and cfg.act_fn == "relu" and cfg.d_vocab == 114
    model = Transformer(cfg, seed=0)
    assert not [name for name, _ in model.named_parameters() if name.endswith((".w", ".b"))]
    tokens, _ = all_pairs(113)
    assert model(tokens[:4]).shape == (4, 3, 114)  # 'a b =' fills the context of 3


@pytest.mark.numerics
@pytest.mark.slow
def test_a_short_run_memorises_before_it_generalises():
    """CI's version of the default run: p = 53 with 70% of the pairs, 1,300 full-batch steps (it
    memorises at step 150 and groks at 800 here; with half the pairs it took 3,000 steps, 100 s).
    Training accuracy reaches 100% well before the
    held-out accuracy reaches 99%, the key frequencies explain the final logits (restricted loss
    near the test loss), and removing them from the training logits destroys the fit."""
    run = train_grokking(p=53, fraction=0.7, steps=1300, seed=0, progress=False, checkpoint=50)
    assert run.memorise_step is not None and run.grok_step is not None
    assert run.memorise_step < run.grok_step
    assert run.grok_step - run.memorise_step >= 300  # a clear gap, in steps
    assert 1 <= len(run.key_frequencies) <= 8
    final = run.steps.index(run.steps[-1])
    assert run.restricted_loss[final] < 0.5
    assert run.excluded_loss[final] > 2.0
    assert run.weight_norm[-1] < max(run.weight_norm)  # weight decay wins in the end
    data = json.loads(json.dumps(run.to_json()))
    assert data["grok_step"] == run.grok_step and len(data["restricted_loss"]) == len(run.steps)


BAD = [
    (["--p", "4"], "must be a prime, got 4"),
    (["--p", "2"], "must be at least 3, got 2"),
    (["--fraction", "0"], "strictly between 0 and 1"),
    (["--fraction", "1"], "strictly between 0 and 1"),
    (["--fraction", "1.5"], "strictly between 0 and 1"),
    (["--fraction", "x"], "expected a number"),
    (["--steps", "0"], "must be at least 1"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_arguments_are_one_line_before_training(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    assert main(["train-grokking", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not out.exists()


def test_the_library_refuses_the_same_before_building_anything():
    for kwargs, message in [
        (dict(p=9), "prime"),
        (dict(p=1), "prime"),
        (dict(fraction=0.0), "strictly between"),
        (dict(steps=0), "positive integer"),
        (dict(p=3, fraction=0.01), "leaves no training"),
        (dict(checkpoint=0), "checkpoint"),
    ]:
        with pytest.raises(InputError, match=message):
            train_grokking(progress=False, **kwargs)


def test_ctrl_c_writes_what_was_recorded(tmp_path, monkeypatch, capsys):
    calls = {"n": 0}
    step = torch.optim.AdamW.step

    def interrupt_at_step_25(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 25:
            raise KeyboardInterrupt
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", interrupt_at_step_25)
    out = tmp_path / "out"
    code = main(["train-grokking", "--p", "23", "--steps", "1000", "--out", str(out)])
    assert code == 130 and "interrupted; wrote what was recorded" in capsys.readouterr().err
    data = json.loads((out / "grokking.json").read_text())
    assert data["interrupted"] and data["steps"] == [0, 5, 10, 15, 20]  # every 1000 // 200
    assert len(data["restricted_loss"]) == 5 and data["key_frequencies"]
    assert {p.name for p in out.iterdir()} == {"grokking.json", "grokking.png", "grokking.html"}


def test_the_command_writes_its_files(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["train-grokking", "--p", "11", "--steps", "40", "--out", str(out)]) == 0
    data = json.loads((out / "grokking.json").read_text())
    for key in [
        "steps", "train_loss", "test_loss", "train_accuracy", "test_accuracy", "weight_norm",
        "key_frequencies", "restricted_loss", "excluded_loss", "grok_step", "memorise_step",
    ]:  # fmt: skip
        assert key in data, key
    assert len(data["frequency_shares"][0]) == 5  # (11 - 1) / 2 frequencies
    assert "GrokkingRun(p=11" in capsys.readouterr().out
    assert len(data["train_loss"]) == len(data["test_loss"]) == len(data["steps"])
