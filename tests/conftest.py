"""Shared fixtures: tiny random models (fast), locally built Hugging Face checkpoints, and the real
SmolLM2-135M and Gemma 3 270M loaded once per test session."""

import warnings
from pathlib import Path

import pytest
import torch

from mechlab.models.gguf import gemma3_directory, smollm2_directory
from mechlab.models.huggingface import load_hf_model
from mechlab.models.loading import load_model
from mechlab.models.random_presets import save_byte_tokenizer

# The fixtures that load a real pretrained model (and test_precision's smollm2_bf16): any test that
# uses one is marked slow automatically, so `make test-fast` (-m "not slow ...") never builds them.
REAL_MODEL_FIXTURES = {
    "smollm2", "smollm2_raw", "smollm2_hf", "gemma3", "gemma3_hf", "smollm2_bf16"
}  # fmt: skip


# The longest test files (minutes each, measured in CI), run first: `make test` gives each worker
# whole files in collection order, so a long file collected last leaves the other worker idle at
# the end (longest-first scheduling; about 45 s of idle worker at the end, alphabetically).
LONGEST_FIRST = (
    "test_notebooks.py",
    "test_report.py",
    "test_cache.py",
    "test_ray.py",
    "test_tuned_lens.py",
    "test_training.py",
    "test_grokking.py",
)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if REAL_MODEL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)

    def rank(item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: within a file, and among the rest, the order is unchanged


@pytest.fixture(scope="session")
def smollm2():
    """The real pretrained SmolLM2-135M-Instruct as a (processed) HookedTransformer."""
    return load_model("smollm2-135m")


@pytest.fixture(scope="session")
def smollm2_raw():
    """SmolLM2 with TransformerLens's weight processing switched off."""
    return load_model(
        "smollm2-135m", fold_ln=False, center_writing_weights=False, center_unembed=False
    )


@pytest.fixture(scope="session")
def smollm2_hf():
    """The dequantized SmolLM2 as a Hugging Face LlamaForCausalLM: the independent reference."""
    return load_hf_model(smollm2_directory())


@pytest.fixture(scope="session")
def gemma3():
    """The real pretrained Gemma 3 270M (base model) as a (processed) HookedTransformer."""
    return load_model("gemma3-270m")


@pytest.fixture(scope="session")
def gemma3_hf():
    """The dequantized Gemma 3 270M as a Hugging Face Gemma3ForCausalLM: the reference."""
    return load_hf_model(gemma3_directory())


def build_hf_gpt2(directory: Path, seed: int = 0, **overrides) -> Path:
    """Save a small random GPT2LMHeadModel with a byte-level tokenizer into `directory`."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(
        **{
            **dict(
                vocab_size=257,
                n_positions=64,
                n_embd=48,
                n_layer=2,
                n_head=3,
                bos_token_id=256,
                eos_token_id=256,
            ),
            **overrides,
        }
    )
    return save_with_perturbed_norms(GPT2LMHeadModel(config).eval(), "ln", directory)


def build_hf_llama(directory: Path, seed: int = 0, **overrides) -> Path:
    """Save a small random LlamaForCausalLM (grouped-query attention) with a byte-level
    tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        **{
            **dict(
                vocab_size=257,
                hidden_size=48,
                intermediate_size=96,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                max_position_embeddings=64,
                rms_norm_eps=1e-5,
                bos_token_id=256,
                eos_token_id=256,
                pad_token_id=256,
                tie_word_embeddings=False,
            ),
            **overrides,
        }
    )
    return save_with_perturbed_norms(LlamaForCausalLM(config).eval(), "norm", directory)


def build_hf_gemma3(directory: Path, seed: int = 0, **overrides) -> Path:
    """Save a small random Gemma3ForCausalLM: two local layers (a window of 4 positions) around a
    global one, each kind with its own rotary base, and a query scalar unlike d_head."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(seed)
    config = Gemma3TextConfig(
        **{
            **dict(
                vocab_size=257,
                hidden_size=48,
                intermediate_size=96,
                num_hidden_layers=3,
                num_attention_heads=4,
                num_key_value_heads=2,
                head_dim=16,
                query_pre_attn_scalar=24,
                max_position_embeddings=64,
                sliding_window=4,
                layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                rope_parameters={
                    "full_attention": {"rope_type": "default", "rope_theta": 1_000_000.0},
                    "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
                },
                bos_token_id=256,
                eos_token_id=256,
                pad_token_id=256,
            ),
            **overrides,
        }
    )
    return save_with_perturbed_norms(Gemma3ForCausalLM(config).eval(), "norm", directory)


def save_with_perturbed_norms(model, norm_key: str, directory: Path) -> Path:
    """Give the norms non-trivial parameters (so a bug that ignores them shows), then save the model
    and the byte-level tokenizer as a Hugging Face checkpoint directory."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if norm_key in name:
                param.add_(0.1 * torch.randn_like(param))
    model.save_pretrained(directory)
    save_byte_tokenizer(directory)
    return directory


@pytest.fixture(scope="session")
def hf_gpt2_dir(tmp_path_factory) -> Path:
    return build_hf_gpt2(tmp_path_factory.mktemp("hf-gpt2"))


@pytest.fixture(scope="session")
def hf_llama_dir(tmp_path_factory) -> Path:
    return build_hf_llama(tmp_path_factory.mktemp("hf-llama"))


@pytest.fixture(scope="session")
def hf_gemma3_dir(tmp_path_factory) -> Path:
    return build_hf_gemma3(tmp_path_factory.mktemp("hf-gemma3"))


@pytest.fixture
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
