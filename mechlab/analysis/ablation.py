"""Head ablation: does the model *need* a head? Replace the head's output and measure the loss.

A head's output here is its ``hook_z`` (the attention-weighted values, [batch, pos, head, d_head],
one per query head, so grouped-query models like SmolLM2 are ablated per query head); what it
writes to the residual stream is ``z @ W_O``, so replacing ``z`` replaces exactly that head's
contribution and leaves the layer's output bias alone. Three replacements:

- ``"zero"``: z = 0 (the head writes nothing; off-distribution, see Wang et al. 2022);
- ``"mean"``: z = its mean over the batch and positions of the clean run (the head writes its
  average output: what it says regardless of the input);
- ``"resample"``: z = the head's clean output on the next sequence of the batch (sequence b gets
  sequence b+1's, the last gets the first's), same positions: a plausible output for a different
  input (Chan et al. 2022, causal scrubbing).

The loss is measured on ``[BOS] + r + r`` batches (see mechlab.analysis.heads), where induction
heads are what make the second copy predictable; ``loss_second_half`` averages the second copy's
predictions as `HeadScan.loss_second_half` does.
"""

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from mechlab.analysis.heads import check_repeated
from mechlab.analysis.tokens import check_heads, check_model, next_token_loss
from mechlab.errors import InputError
from mechlab.labels import heads_label

METHODS = ("zero", "mean", "resample")
Head = tuple[int, int]


@dataclass
class AblationResult:
    """The loss along ``[BOS] + r + r`` with `heads` ablated by `method`, next to the clean loss.
    Losses are in nats, per position p predicting token p+1, averaged over the batch."""

    model: str
    heads: list[Head]
    method: str
    seq_len: int
    loss_by_position: Float[Tensor, " prediction"]
    clean_loss_by_position: Float[Tensor, " prediction"]

    @property
    def loss_second_half(self) -> float:
        return self.loss_by_position[self.seq_len :].mean().item()

    @property
    def clean_loss_second_half(self) -> float:
        return self.clean_loss_by_position[self.seq_len :].mean().item()

    @property
    def delta_second_half(self) -> float:
        """How much the ablation raises the loss on the repeat (nats; positive = worse)."""
        return self.loss_second_half - self.clean_loss_second_half

    def __repr__(self) -> str:
        return (
            f"AblationResult({self.model}: {self.method}-ablating {heads_label(self.heads)}; "
            f"second-half loss {self.clean_loss_second_half:.3f} -> {self.loss_second_half:.3f} "
            f"nats, delta {self.delta_second_half:+.3f})"
        )

    def _repr_html_(self) -> str:
        import html

        return f"<p>{html.escape(repr(self))}</p>"

    def to_json(self) -> dict:
        return {
            "heads": [list(head) for head in self.heads],
            "method": self.method,
            "loss_second_half": self.loss_second_half,
            "clean_loss_second_half": self.clean_loss_second_half,
            "delta": self.delta_second_half,
            "loss_by_position": self.loss_by_position.tolist(),
        }


def ablate_heads(
    model: HookedTransformer,
    heads: list[Head],
    tokens: Int[Tensor, "batch pos"],
    *,
    method: str = "mean",
) -> AblationResult:
    """Ablate `heads` (a list of (layer, head)) together on `tokens` (a ``[BOS] + r + r`` batch,
    e.g. `repeated_tokens(model)` or `scan.tokens`) and return the loss with and without them."""
    check_model(model)
    return Ablator(model, tokens, method).ablate(heads)


class Ablator:
    """Several ablations of one batch share one clean run: its loss, and each layer's clean z (for
    the mean and resample replacements), taken when first needed."""

    def __init__(self, model: HookedTransformer, tokens: Tensor, method: str = "mean"):
        if method not in METHODS:
            raise InputError(f"unknown ablation method {method!r}: choose one of {METHODS}")
        self.seq_len = check_repeated(model, tokens)
        if method == "resample" and len(tokens) < 2:
            raise InputError("resample ablation needs a batch of at least 2 sequences")
        self.model, self.method = model, method
        self.tokens = tokens.to(model.cfg.device)
        self._clean_z: dict[int, Tensor] = {}
        self._clean_loss: Tensor | None = None

    def clean_loss(self) -> Float[Tensor, " prediction"]:
        if self._clean_loss is None:
            self._clean_loss = self._loss([])
        return self._clean_loss

    def replacement(self, layer: int) -> Float[Tensor, "batch pos n_heads d_head"] | None:
        """What every head of `layer` is replaced with, [batch, pos, n_heads, d_head]; None for
        zero ablation."""
        if self.method == "zero":
            return None
        if layer not in self._clean_z:
            self._cache_clean_z()
        z = self._clean_z[layer]
        if self.method == "mean":
            return z.mean((0, 1), keepdim=True).expand_as(z)
        return z.roll(-1, dims=0)  # sequence b gets sequence b+1's output

    def _cache_clean_z(self) -> None:
        def keep(z: Tensor, hook) -> None:
            self._clean_z[hook.layer()] = z.detach().clone()

        with torch.inference_mode():
            logits = self.model.run_with_hooks(
                self.tokens, fwd_hooks=[(lambda name: name.endswith("attn.hook_z"), keep)]
            )
            if self._clean_loss is None:
                self._clean_loss = next_token_loss(logits, self.tokens).mean(0).float().cpu()

    def ablate(self, heads: list[Head]) -> AblationResult:
        check_heads(self.model, heads)
        heads = [(int(layer), int(head)) for layer, head in heads]
        return AblationResult(
            model=self.model.cfg.model_name,
            heads=heads,
            method=self.method,
            seq_len=self.seq_len,
            loss_by_position=self._loss(heads),
            clean_loss_by_position=self.clean_loss(),
        )

    def _loss(self, heads: list[Head]) -> Float[Tensor, " prediction"]:
        by_layer: dict[int, list[int]] = {}
        for layer, head in heads:
            by_layer.setdefault(layer, []).append(head)
        replacements = {layer: self.replacement(layer) for layer in by_layer}

        def replace(z: Tensor, hook) -> Tensor:
            layer = hook.layer()
            index = by_layer[layer]
            value = replacements[layer]
            z[:, :, index] = 0.0 if value is None else value[:, :, index]
            return z

        hooks: list = [(f"blocks.{layer}.attn.hook_z", replace) for layer in by_layer]
        with torch.inference_mode():
            logits = self.model.run_with_hooks(self.tokens, fwd_hooks=hooks)
            return next_token_loss(logits, self.tokens).mean(0).float().cpu()


@dataclass
class AblationStudy:
    """The top-K induction heads ablated one at a time and together, and a control: K heads of the
    same layers that are not induction heads (drawn at random), ablated together."""

    singles: list[AblationResult]
    joint: AblationResult
    control: AblationResult

    @property
    def results(self) -> list[AblationResult]:
        return [*self.singles, self.joint, self.control]

    def __repr__(self) -> str:
        return (
            f"AblationStudy({self.joint.model}: {self.joint.method}-ablating "
            f"{heads_label(self.joint.heads)} raises the second-half loss by "
            f"{self.joint.delta_second_half:+.3f} nats; the control "
            f"({heads_label(self.control.heads)}) by {self.control.delta_second_half:+.3f})"
        )

    def _repr_html_(self) -> str:
        from mechlab.present.heads import ablation_html

        return ablation_html(self)

    def to_json(self) -> list[dict]:
        """heads.json's "ablation" list: singles, then the joint ablation, then the control."""
        rows = []
        for kind, result in [("single", r) for r in self.singles] + [
            ("joint", self.joint),
            ("control", self.control),
        ]:
            rows.append(
                {
                    "heads": [list(head) for head in result.heads],
                    "kind": kind,
                    "method": result.method,
                    "loss_second_half": result.loss_second_half,
                    "clean_loss_second_half": result.clean_loss_second_half,
                    "delta": result.delta_second_half,
                }
            )
        return rows


def control_heads(scan, heads: list[Head], threshold: float, seed: int = 0) -> list[Head]:
    """For each head, a random head of the same layer whose induction score is at most
    `threshold`, none chosen twice and none among `heads`."""
    generator = torch.Generator().manual_seed(seed)
    induction = scan.score("induction")
    chosen: list[Head] = []
    for layer, _ in heads:
        candidates = [
            (layer, head)
            for head in range(scan.n_heads)
            if induction[layer, head] <= threshold
            and (layer, head) not in heads
            and (layer, head) not in chosen
        ]
        if not candidates:
            raise InputError(
                f"layer {layer} has no non-induction head left for the control: ablate fewer heads"
            )
        chosen.append(candidates[torch.randint(len(candidates), (), generator=generator)])
    return chosen


def check_ablation_count(model: HookedTransformer, k: int) -> None:
    """An ablation study of the top k heads needs k heads, and k more for the control."""
    cfg = model.cfg
    if not 1 <= k <= cfg.n_layers * cfg.n_heads // 2:
        raise InputError(
            f"cannot ablate {k} heads: {cfg.model_name} has {cfg.n_layers * cfg.n_heads} heads, "
            f"so the top k and a control of k others allow k <= {cfg.n_layers * cfg.n_heads // 2}"
        )


def ablation_study(
    model: HookedTransformer,
    scan,
    k: int,
    *,
    method: str = "mean",
    threshold: float | None = None,
    seed: int = 0,
) -> AblationStudy:
    """Ablate the `k` heads with the highest induction scores in `scan` one by one and together,
    and `k` non-induction heads of the same layers as a control, on the scan's own tokens."""
    check_model(model)
    from mechlab.defaults import INDUCTION_THRESHOLD

    threshold = INDUCTION_THRESHOLD if threshold is None else threshold
    check_ablation_count(model, k)
    top = [(layer, head) for layer, head, _ in scan.top("induction", k)]
    ablator = Ablator(model, scan.tokens, method)
    return AblationStudy(
        singles=[ablator.ablate([head]) for head in top],
        joint=ablator.ablate(top),
        control=ablator.ablate(control_heads(scan, top, threshold, seed)),
    )
