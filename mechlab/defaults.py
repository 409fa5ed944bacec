"""Defaults and limits shared by the library and the CLI.

This module imports nothing heavy (no torch, TransformerLens or matplotlib), so the CLI can show
these values in ``--help`` and check arguments against them before anything slow is loaded.
"""

DEFAULT_MODEL = "smollm2-135m"

# Where and in what precision a model runs (`load_model(device=..., dtype=...)`, --device/--dtype).
DEVICES = ("auto", "cpu", "cuda", "mps")  # auto: cuda if this torch sees a GPU, else cpu
DTYPES = ("float32", "bfloat16", "float16")

# A head whose induction score is above this counts as an induction head (Olsson et al. 2022 use
# 0.4 in their induction-head mosaic; so does ARENA).
INDUCTION_THRESHOLD = 0.4
# A head whose previous-token score is above this counts as a previous-token head (the same bar, so
# "the induction head's strongest K-composer is a previous-token head" means the same in every
# model).
PREVIOUS_TOKEN_THRESHOLD = 0.4

# Grokking (mechlab.scratch.grokking): the modulus, the share of pairs trained on and the steps of
# the default run, chosen from the measured table in the README (benchmarks/bench_grokking.py).
GROKKING_P = 113
GROKKING_FRACTION = 0.5
GROKKING_STEPS = 3000
# The largest modulus even considered (memory decides below it: a run holds p^3 logits several
# times over): checked before the memory estimate or the primality test, whose cost grows with p.
MAX_GROKKING_P = 1_000_000

# Neuron records (mechlab neurons): tokens of Wikipedia text gone through by default.
NEURON_TOKENS = 65536

# Where an SAE can be trained (mechlab.analysis.sae.SITES maps them to hooks).
SAE_SITES = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out")

# What `mechlab lens --prompts-file` reads at most: a bigger file is refused, not half-read.
MAX_PROMPTS_FILE_BYTES = 4 << 20  # 4 MiB
MAX_PROMPTS = 10_000

# random:<preset> shapes; `mechlab.models.random_presets` builds the models. SmolLM2's context is
# capped at 2048, the length it was pre-trained with: HookedTransformer builds an n_ctx x n_ctx mask
# per layer.
SMOLLM2_N_CTX = 2048
# Gemma 3 270M was trained on 32k tokens; 2048 keeps its 18 masks small (override with n_ctx).
GEMMA3_N_CTX = 2048
# Gemma 3's layers: five local (sliding-window) layers, then one global, three times over.
GEMMA3_ATTN_TYPES = (["local"] * 5 + ["global"]) * 3
# the 256 bytes plus <|endoftext|>, see mechlab.models.random_presets.byte_tokenizer()
BYTE_VOCAB = 257
RANDOM_PRESETS: dict[str, dict] = {
    "tiny": dict(
        n_layers=2,
        d_model=64,
        n_heads=4,
        d_head=16,
        d_mlp=256,
        n_ctx=256,
        d_vocab=BYTE_VOCAB,
        act_fn="gelu_new",
        normalization_type="LN",
    ),
    "llama-tiny": dict(
        n_layers=2,
        d_model=64,
        n_heads=4,
        n_key_value_heads=2,
        d_head=16,
        d_mlp=128,
        n_ctx=256,
        d_vocab=BYTE_VOCAB,
        act_fn="silu",
        normalization_type="RMS",
        positional_embedding_type="rotary",
        rotary_dim=16,
        rotary_base=10000,
        rotary_adjacent_pairs=False,
        gated_mlp=True,
        final_rms=True,
        eps=1e-5,
        original_architecture="LlamaForCausalLM",
    ),
    "gpt2-small": dict(
        n_layers=12,
        d_model=768,
        n_heads=12,
        d_head=64,
        d_mlp=3072,
        n_ctx=1024,
        d_vocab=50257,
        act_fn="gelu_new",
        normalization_type="LN",
        original_architecture="GPT2LMHeadModel",
    ),
    "smollm2-135m": dict(
        n_layers=30,
        d_model=576,
        n_heads=9,
        n_key_value_heads=3,
        d_head=64,
        d_mlp=1536,
        n_ctx=SMOLLM2_N_CTX,
        d_vocab=49152,
        act_fn="silu",
        normalization_type="RMS",
        positional_embedding_type="rotary",
        rotary_dim=64,
        rotary_base=100000,
        rotary_adjacent_pairs=False,
        gated_mlp=True,
        final_rms=True,
        eps=1e-5,
        original_architecture="LlamaForCausalLM",
    ),
    "gemma3-270m": dict(
        n_layers=18,
        d_model=640,
        n_heads=4,
        n_key_value_heads=1,
        d_head=256,
        d_mlp=2048,
        n_ctx=GEMMA3_N_CTX,
        d_vocab=262144,
        act_fn="gelu_pytorch_tanh",
        normalization_type="RMS",
        positional_embedding_type="rotary",
        rotary_dim=256,
        rotary_base=1_000_000,
        rotary_base_local=10_000,
        rotary_adjacent_pairs=False,
        gated_mlp=True,
        final_rms=True,
        use_normalization_before_and_after=True,
        use_qk_norm=True,
        use_local_attn=True,
        window_size=512,
        attn_types=GEMMA3_ATTN_TYPES,
        eps=1e-6,
        original_architecture="Gemma3ForCausalLM",
    ),
}

ACCEPTED_FORMS = (
    "Accepted forms: 'smollm2-135m' (offline default), 'gemma3-270m' (offline), a TransformerLens "
    "official name such as 'gpt2' or 'EleutherAI/pythia-70m', a path to a local Hugging Face "
    "checkpoint directory, or "
    f"'random:<preset>[@seed]' with a preset in {', '.join(RANDOM_PRESETS)}."
)


def parse_random_spec(spec: str) -> tuple[str, int]:
    """``random:tiny@3`` -> ("tiny", 3); the seed defaults to 0."""
    from mechlab.errors import ModelSpecError

    body = spec.removeprefix("random:")
    preset, _, seed_text = body.partition("@")
    if preset not in RANDOM_PRESETS:
        raise ModelSpecError(
            f"unknown random preset {preset!r} in {spec!r}: choose one of "
            f"{', '.join(RANDOM_PRESETS)} (optionally with @seed, e.g. 'random:tiny@1')."
        )
    try:
        seed = int(seed_text) if seed_text else 0
    except ValueError:
        raise ModelSpecError(
            f"the seed in {spec!r} must be an integer, e.g. 'random:{preset}@1'."
        ) from None
    return preset, seed


def known_n_layers(spec: str) -> int | None:
    """The layers of a model whose shape is known without loading it (the random presets, and
    the offline models, whose presets share their shape), so that the CLI can refuse a layer out
    of range before a load of seconds; None for any other spec."""
    spec = spec.strip()
    name = spec.removeprefix("random:").partition("@")[0] if spec.startswith("random:") else spec
    preset = RANDOM_PRESETS.get(name.lower())
    return preset["n_layers"] if preset is not None else None


# Tokens a tuned lens trains on by default (mechlab.analysis.tuned_lens): 128 steps of 8 x 128
# tokens.
TUNED_LENS_TOKENS = 131_072
# The files of a tuned lens, and of the checkpoint written as it trains
# (mechlab.analysis.tuned_lens)
TUNED_LENS_FILES = ("lens.safetensors", "manifest.json")
TUNED_LENS_CHECKPOINT_FILES = ("checkpoint.safetensors",)

# Token attribution (mechlab.analysis.attribution): the methods, integrated gradients' most first
# quadrature nodes (beyond this one Gauss-Legendre rule's weights fall below float32's
# resolution), and the adaptive rule's budget of nodes: its default (SmolLM2: from ' the' a few
# hundred nodes reach completeness, from the zero embedding about 2,000; benchmarks/
# bench_attribution.py) and its most.
ATTRIBUTION_METHODS = (
    "saliency",
    "gradient_x_input",
    "integrated_gradients",
    "layer_gradient_x_activation",
    "attention_rollout",
    "attention_x_gradient",
    "occlusion",
)
ATTRIBUTION_MAX_STEPS = 1024
ATTRIBUTION_STEP_BUDGET = 4096
ATTRIBUTION_MAX_BUDGET = 1 << 16
