"""Turning user input into checked token ids, and token ids back into readable strings."""

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from mechlab.errors import InputError

PromptOrTokens = str | list[int] | Tensor


def check_model(model: object) -> None:
    """What a public function taking a model checks first: that it was given a loaded one (a spec
    string or a Hugging Face model would fail deep inside with an AttributeError)."""
    if not isinstance(model, HookedTransformer):
        shown = f"the string {model!r}" if isinstance(model, str) else type(model).__name__
        example = repr(model) if isinstance(model, str) and len(model) < 60 else "'smollm2-135m'"
        raise InputError(
            f"expected a model loaded by mechlab.load_model, got {shown}: load it first, e.g. "
            f"model = mechlab.load_model({example})"
        )


def check_one_prompt(prompt_or_tokens: object) -> None:
    """One prompt where one goes: a list of prompts is a batch the function does not take."""
    if isinstance(prompt_or_tokens, (list, tuple)) and any(
        isinstance(item, str) for item in prompt_or_tokens
    ):
        raise InputError(
            f"one prompt at a time, got a list of {len(prompt_or_tokens)}: call once per prompt "
            "(or give token ids)"
        )


def to_tokens(
    model: HookedTransformer, prompt_or_tokens: PromptOrTokens
) -> Int[Tensor, "batch pos"]:
    """Tokenize a prompt (with the model's BOS in front, as TransformerLens does), or check given
    ids.

    Raises InputError for an empty prompt, ids outside the vocabulary, or more positions than the
    model's context window.
    """
    check_model(model)
    check_one_prompt(prompt_or_tokens)
    if isinstance(prompt_or_tokens, str):
        if not prompt_or_tokens.strip():
            raise InputError(
                "the prompt is empty: pass some text, e.g. --prompt 'The capital of France is'"
            )
        if model.tokenizer is None:
            raise InputError(
                f"{model.cfg.model_name} has no tokenizer: pass token ids instead of text"
            )
        tokens = model.to_tokens(prompt_or_tokens, truncate=False)
    else:
        tokens = torch.as_tensor(prompt_or_tokens)
        if tokens.ndim == 1:
            tokens = tokens.unsqueeze(0)
        if tokens.ndim != 2 or tokens.is_floating_point() or tokens.is_complex():
            raise InputError(
                f"token ids must be a [batch, pos] integer tensor, got {tuple(tokens.shape)} "
                f"{tokens.dtype}"
            )
        if tokens.numel() == 0:
            raise InputError("no tokens given: pass at least one token id")
    check_tokens(model, tokens)
    return tokens.to(model.cfg.device)


def check_tokens(model: HookedTransformer, tokens: Tensor) -> None:
    """Raise InputError unless every id is in the vocabulary and the sequence fits the context."""
    d_vocab, n_ctx = model.cfg.d_vocab, model.cfg.n_ctx
    if tokens.shape[-1] > n_ctx:
        raise InputError(
            f"the input is {tokens.shape[-1]} tokens long but {model.cfg.model_name} has a context "
            f"window of {n_ctx}: shorten the prompt to at most {n_ctx} tokens (BOS included)."
        )
    low, high = int(tokens.min()), int(tokens.max())
    if low < 0 or high >= d_vocab:
        bad = low if low < 0 else high
        raise InputError(
            f"token id {bad} is outside the vocabulary [0, {d_vocab}) of {model.cfg.model_name}"
        )


def token_strings(model: HookedTransformer, tokens: Tensor | list[int]) -> list[str]:
    """One readable string per token id; ids the tokenizer cannot decode show as <id>."""
    ids = torch.as_tensor(tokens).flatten().tolist()
    if model.tokenizer is None:
        return [f"<{i}>" for i in ids]
    known = len(model.tokenizer)
    return [str(model.tokenizer.decode([i])) if i < known else f"<{i}>" for i in ids]


def single_token(model: HookedTransformer, text: str | int, what: str, example: str) -> int:
    """A token given as text must be exactly one token; as an int, a valid token id. `what` names
    it in errors ("target", "answer"), and `example` shows how to pass one ("--target ' Paris'")."""
    if isinstance(text, bool) or not isinstance(text, (str, int)):
        raise InputError(f"{what} must be text or a token id, got {text!r}")
    if isinstance(text, int):
        if not 0 <= text < model.cfg.d_vocab:
            raise InputError(
                f"{what} token id {text} is outside the vocabulary [0, {model.cfg.d_vocab})"
            )
        return text
    if not text:
        raise InputError(f"the {what} is empty: pass one token, e.g. {example}")
    if model.tokenizer is None:
        raise InputError(f"{model.cfg.model_name} has no tokenizer: pass the {what} as a token id")
    ids = model.to_tokens(text, prepend_bos=False, truncate=False)[0].tolist()
    if len(ids) != 1:
        pieces = token_strings(model, ids[:9])
        shown = str(pieces[:8])[:-1] + (", ...]" if len(ids) > 8 else "]")
        quoted = (
            repr(text)
            if len(text) <= 60
            else f"{text[:40]!r}... ({len(text) - 40:,} more characters)"
        )
        raise InputError(
            f"{what} {quoted} is {len(ids):,} tokens {shown}, not one: pass a single token, e.g. "
            f"{pieces[0]!r} (mind the leading space), or a token id (id:N on the command line)"
        )
    return ids[0]


def one_prompt(model: HookedTransformer, prompt: PromptOrTokens, what: str) -> Int[Tensor, "1 pos"]:
    """The prompt's token ids, refused when they are a batch (`what` names the function: "token
    attribution takes one prompt, ...")."""
    tokens = to_tokens(model, prompt)
    if tokens.shape[0] != 1:
        raise InputError(
            f"{what} takes one prompt, got a batch of {tokens.shape[0]}: call it once per prompt"
        )
    return tokens


def answer_ids(
    model: HookedTransformer, answer: str | int, wrong: str | int | None
) -> tuple[int, int | None]:
    """The answer's token id, and the wrong answer's (None: the answer's logit alone), each one
    token; the two must differ, or their logit difference is zero by definition."""
    answer_id = single_token(model, answer, "answer", "--answer ' Paris'")
    if wrong is None:
        return answer_id, None
    wrong_id = single_token(model, wrong, "wrong answer", "--wrong ' London'")
    if wrong_id == answer_id:
        raise InputError(
            f"the answer and the wrong answer are the same token "
            f"{token_strings(model, [answer_id])[0]!r}: their difference is zero by "
            "definition; pass a different --wrong, or none to attribute the answer's logit"
        )
    return answer_id, wrong_id


@dataclass
class Prediction:
    """A model's most likely next tokens after a prompt (`mechlab predict`)."""

    model: str
    prompt: str
    tokens: list[str]
    probabilities: list[float]


def next_tokens(model: HookedTransformer, prompt: str, *, top_k: int = 10) -> Prediction:
    """The `top_k` most likely next tokens after `prompt`, with their probabilities."""
    check_model(model)
    if top_k > model.cfg.d_vocab:
        raise InputError(
            f"--top-k {top_k} is more than the {model.cfg.d_vocab} tokens of "
            f"{model.cfg.model_name}'s vocabulary"
        )
    tokens = to_tokens(model, prompt)
    with torch.inference_mode():
        top = model(tokens)[0, -1].float().softmax(-1).topk(top_k)
    return Prediction(
        model.cfg.model_name, prompt, token_strings(model, top.indices), top.values.tolist()
    )


# --------------------------------------------------------------------------------------------------
# Indices into the model: layers and heads


def check_layer(model: HookedTransformer, layer: int) -> None:
    """The one check of a layer index (every function taking a layer calls it)."""
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < model.cfg.n_layers:
        raise InputError(
            f"layer {layer!r} is out of range: {model.cfg.model_name} has layers 0 .. "
            f"{model.cfg.n_layers - 1}"
        )


def check_head(model: HookedTransformer, layer: int, head: int) -> None:
    if isinstance(head, bool) or not isinstance(head, int) or not 0 <= head < model.cfg.n_heads:
        raise InputError(
            f"head {layer}.{head} is out of range: {model.cfg.model_name} has heads 0 .. "
            f"{model.cfg.n_heads - 1}"
        )


def check_heads(model: HookedTransformer, heads: list[tuple[int, int]]) -> None:
    """Every (layer, head) pair must exist; an empty selection is an error too."""
    if not heads:
        raise InputError("no heads selected: name at least one head, e.g. --heads 5.1,5.5")
    for layer, head in heads:
        check_layer(model, layer)
        check_head(model, layer, head)


# --------------------------------------------------------------------------------------------------
# Token sequences and the next-token loss


def ordinary_token_ids(model: HookedTransformer) -> Int[Tensor, " token"]:
    """Token ids a random sequence may use: the tokenizer's vocabulary without special or added
    (control) tokens, and only ids the model can embed. Sorted, so the draw is
    machine-independent."""
    tokenizer = model.tokenizer
    if tokenizer is None:
        return torch.arange(1, model.cfg.d_vocab)
    excluded = set(tokenizer.all_special_ids) | set(tokenizer.get_added_vocab().values())
    limit = min(len(tokenizer), model.cfg.d_vocab)
    return torch.tensor([i for i in range(limit) if i not in excluded])


def bos_token_id(model: HookedTransformer) -> int:
    """The BOS id; a tokenizer without one gets its EOS id (as TransformerLens does), and a model
    without a tokenizer gets id 0, which ordinary_token_ids then never draws."""
    tokenizer = model.tokenizer
    if tokenizer is None:
        return 0
    for candidate in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return candidate
    return 0


# Texts of at least this many bytes have their token sequences cached (smaller ones tokenise in a
# moment): keyed by the SHA-256 of the texts, the tokenizer and the sequence length.
TOKEN_CACHE_BYTES = 1 << 20
TOKENIZE_BAR_DELAY_S = 10


def token_sequences(
    model: HookedTransformer, texts: list[str], seq_len: int = 128, *, progress: bool = False
) -> Int[Tensor, "batch pos"]:
    """Every text tokenised, cut into sequences of seq_len - 1 tokens, each with BOS in front (a
    document's tail shorter than that is dropped).

    For a large corpus (TOKEN_CACHE_BYTES of text or more) the result is cached under the SHA-256 of
    (the texts, the tokenizer, seq_len), so that a second run on the same text starts at once; a
    cached file that fails its hash check is tokenised again."""
    if sum(len(text) for text in texts) < TOKEN_CACHE_BYTES:
        return tokenize(model, texts, seq_len, progress)
    from mechlab.cache import (
        build_lock,
        cache_dir,
        read_verified_safetensors,
        write_verified_safetensors,
    )

    path = cache_dir() / "tokens" / f"{token_cache_key(model, texts, seq_len)}.safetensors"
    with build_lock(path):
        cached = read_verified_safetensors(path)
        if cached is not None:
            return cached["sequences"]
        sequences = tokenize(model, texts, seq_len, progress)
        write_verified_safetensors(path, {"sequences": sequences.contiguous()})
    return sequences


def tokenize(
    model: HookedTransformer, texts: list[str], seq_len: int, progress: bool
) -> Int[Tensor, "batch pos"]:
    from mechlab.progress import progress_bar

    bos, pieces = bos_token_id(model), []
    # shown only once tokenising has taken TOKENIZE_BAR_DELAY_S: a corpus of a few MB is done
    # before that, and an error found right after it (a budget too large) stays one line
    with progress_bar(
        desc="tokenizing",
        unit=" tokens",
        unit_scale=True,
        delay=TOKENIZE_BAR_DELAY_S,
        disable=not progress,
    ) as bar:
        for text in texts:
            ids = model.to_tokens(text, prepend_bos=False, truncate=False)[0]
            for start in range(0, len(ids) - (seq_len - 1) + 1, seq_len - 1):
                pieces.append(torch.cat([ids.new_tensor([bos]), ids[start : start + seq_len - 1]]))
            bar.update(len(ids))
    if not pieces:
        raise InputError(f"the texts hold no sequence of {seq_len - 1} tokens")
    return torch.stack(pieces)


def token_cache_key(model: HookedTransformer, texts: list[str], seq_len: int) -> str:
    """SHA-256 of the texts (each length-prefixed, so that no two lists collide), the tokenizer's
    full definition (vocabulary, merges, normalisation) and the sequence length."""
    import hashlib

    digest = hashlib.sha256(f"seq_len={seq_len};bos={bos_token_id(model)};".encode())
    tokenizer = model.tokenizer
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        digest.update(backend.to_str().encode())
    else:  # a slow tokenizer: its vocabulary and class
        vocabulary = sorted(tokenizer.get_vocab().items()) if tokenizer is not None else []
        digest.update(f"{type(tokenizer).__name__}{vocabulary}".encode())
    for text in texts:
        encoded = text.encode()
        digest.update(len(encoded).to_bytes(8, "little") + encoded)
    return digest.hexdigest()


LOSS_ROWS = 16  # logsumexp's temporaries: 3 MB for GPT-2's vocabulary (64 rows: 13 MB, in the peak)


def next_token_loss(
    logits: Float[Tensor, "batch pos d_vocab"], tokens: Int[Tensor, "batch pos"]
) -> Float[Tensor, "batch pos-1"]:
    """Cross-entropy of predicting token p+1 at each position p, as logsumexp(logits) - logit of the
    target, LOSS_ROWS rows at a time: a log_softmax of everything would copy all the logits.
    Computed in float32 whatever the model's dtype."""
    losses = []
    for sequence_logits, sequence in zip(
        logits, tokens, strict=True
    ):  # logits[b, :-1] is contiguous; logits[:, :-1] is not
        rows, targets = sequence_logits[:-1], sequence[1:]
        losses.append(
            torch.cat(
                [
                    block.float().logsumexp(-1) - block.gather(-1, target[:, None])[:, 0].float()
                    for block, target in zip(
                        rows.split(LOSS_ROWS), targets.split(LOSS_ROWS), strict=True
                    )
                ]
            )
        )
    return torch.stack(losses)
