"""Activation patching and attribution patching: which activations carry the answer?

Run the model on a clean prompt (e.g. "When Mary and John went to the store, John gave a drink to",
answer " Mary") and on a corrupted one that changes the answer (the names swapped: answer " John").
Patching one activation from the clean run into the corrupted run and watching the logit difference
``logit(answer) - logit(wrong)`` at the last position come back says how much of the answer that
activation carries (Meng et al. 2022; Wang et al. 2022; Heimersheim and Nanda 2024).

Every grid is normalised so that 0 = the corrupted run and 1 = the clean run:
``(patched - corrupted) / (clean - corrupted)`` of the logit differences.

Exact patching runs the model once per patched activation, but a patch at layer l cannot change
anything below l: each patched run starts from the corrupted run's cached residual stream at l,
the runs for one layer go through the model together as one batch, and only the last position is
unembedded, and only along ``W_U[:, answer] - W_U[:, wrong]``.

Attribution patching (Nanda 2023; Kramár et al. 2024, "AtP*") estimates every cell at once to
first order, from one clean forward, one corrupted forward and one backward pass:
``(clean_act - corrupted_act) . d logit_diff / d act`` at the corrupted run.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from mechlab.analysis.tokens import (
    PromptOrTokens,
    check_model,
    single_token,
    to_tokens,
    token_strings,
)
from mechlab.errors import InputError

OVER = ("heads", "resid", "layers")
PATCH_METHODS = ("exact", "attribution")
TOKENS_PER_RUN = 4096  # patched copies of the prompt that go through the model together


@dataclass
class PatchResult:
    """A patching grid: `grid[row, col]` is the normalised logit difference with that one
    activation patched from the clean run into the corrupted run (0 = corrupted, 1 = clean)."""

    model: str
    clean: str
    corrupted: str
    answer: str
    wrong: str
    over: str
    method: str
    clean_logit_diff: float
    corrupted_logit_diff: float
    grid: Float[Tensor, "row col"]
    row_labels: list[str]
    col_labels: list[str]

    def __repr__(self) -> str:
        row, col = divmod(int(self.grid.abs().argmax()), self.grid.shape[1])
        return (
            f"PatchResult({self.model}: {self.method} patching over {self.over}, grid "
            f"{self.grid.shape[0]}x{self.grid.shape[1]}; logit diff clean "
            f"{self.clean_logit_diff:.2f}, corrupted {self.corrupted_logit_diff:.2f}; largest "
            f"{self.row_labels[row]} / {self.col_labels[col]} = {self.grid[row, col]:.2f})"
        )

    def _repr_html_(self) -> str:
        from mechlab.present.patching import patch_grid_html

        return patch_grid_html(self)

    def top(self, k: int = 10) -> list[tuple[str, str, float]]:
        """The k cells with the largest |value| as (row label, column label, value)."""
        order = self.grid.flatten().abs().argsort(descending=True)[:k].tolist()
        n_cols, values = self.grid.shape[1], self.grid.flatten()
        return [
            (self.row_labels[i // n_cols], self.col_labels[i % n_cols], values[i].item())
            for i in order
        ]

    def to_json(self) -> dict:
        return {
            "model": self.model,
            "clean": self.clean,
            "corrupted": self.corrupted,
            "answer": self.answer,
            "wrong": self.wrong,
            "over": self.over,
            "method": self.method,
            "clean_logit_diff": self.clean_logit_diff,
            "corrupted_logit_diff": self.corrupted_logit_diff,
            "grid": self.grid.tolist(),
            "row_labels": self.row_labels,
            "col_labels": self.col_labels,
        }


def agreement(exact: PatchResult, estimate: PatchResult, k: int = 10) -> dict:
    """How well attribution patching ranks the cells that exact patching finds: the Pearson
    correlation of the two grids and the overlap of their top-k cells by |value|."""
    x, y = exact.grid.flatten().double(), estimate.grid.flatten().double()
    pearson = torch.corrcoef(torch.stack([x, y]))[0, 1].item()
    top_x = set(x.abs().argsort(descending=True)[:k].tolist())
    top_y = set(y.abs().argsort(descending=True)[:k].tolist())
    return {"pearson": pearson, f"top{k}_overlap": len(top_x & top_y) / k}


# --------------------------------------------------------------------------------------------------
# What is patched, per `over`: the hooks to read, the grid's labels, and the patched runs


def hook_names(model: HookedTransformer, over: str) -> list[str]:
    """The activations a grid patches, one name per row group."""
    layers = range(model.cfg.n_layers)
    if over == "heads":
        return [f"blocks.{layer}.attn.hook_z" for layer in layers]
    if over == "resid":
        return [f"blocks.{layer}.hook_resid_pre" for layer in layers]
    return [f"blocks.{layer}.hook_{part}_out" for layer in layers for part in parts(model)]


def parts(model: HookedTransformer) -> tuple[str, ...]:
    return ("attn",) if model.cfg.attn_only else ("attn", "mlp")


def labels(
    model: HookedTransformer, over: str, tokens: Int[Tensor, "batch pos"]
) -> tuple[list[str], list[str]]:
    n_layers = model.cfg.n_layers
    if over == "heads":
        heads = [f"H{head}" for head in range(model.cfg.n_heads)]
        return [f"L{layer}" for layer in range(n_layers)], heads
    columns = [f"{p}: {token!r}" for p, token in enumerate(token_strings(model, tokens[0]))]
    if over == "resid":
        return [f"L{layer} resid_pre" for layer in range(n_layers)], columns
    return [f"L{layer} {part}" for layer in range(n_layers) for part in parts(model)], columns


def check_over(over: str, method: str) -> None:
    if over not in OVER:
        raise InputError(f"cannot patch over {over!r}: choose one of {', '.join(OVER)}")
    if method not in PATCH_METHODS:
        raise InputError(f"unknown patching method {method!r}: choose one of {PATCH_METHODS}")


def check_same_length(model: HookedTransformer, clean: Tensor, corrupted: Tensor) -> None:
    if clean.shape != corrupted.shape or clean.shape[0] != 1:
        raise InputError(
            f"the clean and corrupted prompts must be one sequence each of the same number of "
            f"tokens: clean is {clean.shape[-1]} tokens {token_strings(model, clean[0])}, "
            f"corrupted is {corrupted.shape[-1]} tokens {token_strings(model, corrupted[0])}"
        )


class LogitDiff:
    """logit(answer) - logit(wrong) at the last position, from the final residual stream."""

    def __init__(self, model: HookedTransformer, answer: int, wrong: int):
        self.model = model
        self.direction = (model.W_U[:, answer] - model.W_U[:, wrong]).detach()  # [d_model]
        self.bias = (model.b_U[answer] - model.b_U[wrong]).detach()

    def __call__(self, final_resid: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, " batch"]:
        last = final_resid[:, -1:]
        if self.model.cfg.normalization_type is not None:
            last = self.model.ln_final(last)
        return last[:, 0] @ self.direction + self.bias

    def run_from(
        self, residual: Float[Tensor, "batch pos d_model"], layer: int, hooks=()
    ) -> Float[Tensor, " batch"]:
        """The logit difference of each sequence, running the blocks from `layer` on
        `residual` (the stream before that layer) with `hooks`."""
        model = self.model
        with model.hooks(fwd_hooks=list(hooks)):
            final = model(residual, start_at_layer=layer, stop_at_layer=model.cfg.n_layers)
        return self(final)


def run_with_cache(model: HookedTransformer, tokens: Int[Tensor, "batch pos"], names: set[str]):
    """A run caching `names` and every layer's resid_pre (where patched runs start from)."""
    wanted = names | {f"blocks.{layer}.hook_resid_pre" for layer in range(model.cfg.n_layers)}
    wanted.add(f"blocks.{model.cfg.n_layers - 1}.hook_resid_post")
    _, cache = model.run_with_cache(
        tokens, names_filter=lambda name: name in wanted, return_type=None
    )
    return cache


def exact_grid(
    model: HookedTransformer,
    over: str,
    clean_cache,
    corrupted_cache,
    metric: LogitDiff,
    progress: Callable | None = None,
) -> Float[Tensor, "row col"]:
    """The raw logit difference (not normalised) with each activation patched, [rows, cols]."""
    cfg = model.cfg
    pos = corrupted_cache["blocks.0.hook_resid_pre"].shape[1]
    per_run = max(1, TOKENS_PER_RUN // pos)
    rows = []
    for name in hook_names(model, over):
        layer = int(name.split(".")[1])
        start = corrupted_cache[f"blocks.{layer}.hook_resid_pre"]  # [1, pos, d_model]
        clean = clean_cache[name]
        n_cells = cfg.n_heads if over == "heads" else pos
        row = []
        for first in range(0, n_cells, per_run):
            cells = list(range(first, min(first + per_run, n_cells)))
            residual = start.expand(len(cells), -1, -1).clone()
            hooks = []
            if over == "resid":
                residual[range(len(cells)), cells] = clean[0, cells]
            else:

                def patch(activation: Tensor, hook, cells=cells, clean=clean) -> Tensor:
                    # copy i gets cell i patched: head i at every position, or position i
                    if over == "heads":
                        activation[range(len(cells)), :, cells] = clean[0, :, cells].transpose(0, 1)
                    else:
                        activation[range(len(cells)), cells] = clean[0, cells]
                    return activation

                hooks = [(name, patch)]
            row.append(metric.run_from(residual, layer, hooks))
        rows.append(torch.cat(row))
        if progress is not None:
            progress(1)
    return torch.stack(rows)


def attribution_grid(
    model: HookedTransformer,
    over: str,
    tokens: Int[Tensor, "batch pos"],
    clean_cache,
    metric: LogitDiff,
) -> tuple[Float[Tensor, "row col"], float]:
    """First-order estimates of the raw change in logit difference for each patch, [rows, cols],
    and the corrupted logit difference; one corrupted forward and one backward pass."""
    names = hook_names(model, over)
    activations: dict[str, Tensor] = {}

    def keep(activation: Tensor, hook) -> None:
        activations[hook.name] = activation

    with torch.enable_grad():
        final = model.run_with_hooks(
            tokens,
            fwd_hooks=[(name, keep) for name in names],
            stop_at_layer=model.cfg.n_layers,
        )
        logit_diff = metric(final)[0]
        grads = torch.autograd.grad(logit_diff, [activations[name] for name in names])
    rows = []
    for name, grad in zip(names, grads, strict=True):
        change = (clean_cache[name] - activations[name].detach()) * grad
        # heads: [1, pos, head, d_head] -> per head; the rest: [1, pos, d_model] -> per position
        rows.append(change[0].sum((0, 2)) if over == "heads" else change[0].sum(-1))
    return torch.stack(rows), logit_diff.item()


def patch(
    model: HookedTransformer,
    clean: PromptOrTokens,
    corrupted: PromptOrTokens,
    *,
    answer: str | int,
    wrong: str | int,
    over: str = "heads",
    method: str = "exact",
    progress: bool = False,
) -> PatchResult:
    """Patch activations from the clean run into the corrupted run, one at a time, and measure the
    logit difference ``logit(answer) - logit(wrong)`` at the last position, normalised so that
    0 = the corrupted run and 1 = the clean run: ``(patched - corrupted) / (clean - corrupted)``.

    `over`: ``"heads"`` patches each head's output ``hook_z`` at every position (per query head, so
    a grouped-query model has n_heads per layer, not n_key_value_heads), a [n_layers, n_heads]
    grid; ``"resid"`` the residual stream before each layer at each position, [n_layers, pos];
    ``"layers"`` each layer's attention and MLP outputs at each position, [2 * n_layers, pos]
    (attention only in an attention-only model).
    `method`: ``"exact"`` (one patched run per cell) or ``"attribution"`` (the first-order
    estimate of every cell from one forward and backward pass; see the module docstring).
    The prompts must tokenize to the same length; `answer` and `wrong` must be one token each.
    """
    check_model(model)
    check_over(over, method)
    clean_tokens, corrupted_tokens = to_tokens(model, clean), to_tokens(model, corrupted)
    check_same_length(model, clean_tokens, corrupted_tokens)
    answer_id = single_token(model, answer, "answer", "--answer ' Mary'")
    wrong_id = single_token(model, wrong, "wrong answer", "--wrong ' John'")
    if answer_id == wrong_id:
        raise InputError("the answer and the wrong answer are the same token: pass two different")
    metric = LogitDiff(model, answer_id, wrong_id)
    names = set(hook_names(model, over))
    last_resid = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    with torch.inference_mode():
        clean_cache = run_with_cache(model, clean_tokens, names)
        clean_diff = metric(clean_cache[last_resid]).item()
    if method == "attribution":
        raw, corrupted_diff = attribution_grid(model, over, corrupted_tokens, clean_cache, metric)
        change = raw
    else:
        from mechlab.progress import progress_bar

        with torch.inference_mode():
            corrupted_cache = run_with_cache(model, corrupted_tokens, names)
            corrupted_diff = metric(corrupted_cache[last_resid]).item()
            rows = len(hook_names(model, over))
            with progress_bar(
                total=rows, desc=f"patching {over}", disable=not progress, leave=False
            ) as bar:
                raw = exact_grid(model, over, clean_cache, corrupted_cache, metric, bar.update)
        change = raw - corrupted_diff
    span = clean_diff - corrupted_diff
    if abs(span) < 1e-6:
        raise InputError(
            f"the clean and corrupted prompts give the same logit difference ({clean_diff:.4f}): "
            "nothing to restore; choose a corruption that changes the answer"
        )
    row_labels, col_labels = labels(model, over, clean_tokens)

    def text(prompt, tokens) -> str:
        return prompt if isinstance(prompt, str) else "".join(token_strings(model, tokens[0]))

    return PatchResult(
        model=model.cfg.model_name,
        clean=text(clean, clean_tokens),
        corrupted=text(corrupted, corrupted_tokens),
        answer=token_strings(model, [answer_id])[0],
        wrong=token_strings(model, [wrong_id])[0],
        over=over,
        method=method,
        clean_logit_diff=clean_diff,
        corrupted_logit_diff=corrupted_diff,
        grid=(change / span).float().cpu(),
        row_labels=row_labels,
        col_labels=col_labels,
    )
