"""What single neurons respond to, Neuroscope-style: the dataset tokens that most excite (and most
inhibit) each MLP neuron, with the context around them, found in one streamed pass over a corpus.

Each text is one sequence, BOS first (truncated at MAX_SEQUENCE tokens); the BOS position is never
recorded (it is an outlier in every model). Texts go through the model in batches, padded on the
right (a causal model's earlier positions never see the padding), and the forward pass stops after
the last requested layer. For every neuron the pass keeps a running top-k and bottom-k (a sort of
the previous k and the batch's candidates), never the whole activation tensor: memory stays flat in
the number of tokens. Ties are ordered by position in the corpus (earlier text first, then earlier
position), so the result equals sorting every activation at once with a stable sort.
"""

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from jaxtyping import Float, Int, Shaped
from torch import Tensor
from transformer_lens import HookedTransformer

from mechlab.analysis.tokens import bos_token_id, check_layer, check_model
from mechlab.checks import check_seed, other_weights
from mechlab.defaults import NEURON_TOKENS
from mechlab.errors import DataError, InputError, MechlabWarning
from mechlab.memory import check_fits
from mechlab.models.loading import model_spec

BATCH_TOKENS = 4096  # tokens per forward pass, padding included
MAX_SEQUENCE = 512  # a text's tokens after BOS at most
BINS = 40  # histogram bins per neuron, over the range of the first batch widened by half
LOGIT_EFFECTS = 10  # tokens each neuron's output most promotes and suppresses, kept
FORMAT = 1


@dataclass
class NeuronRecords:
    """For each neuron of the chosen layers, its k highest and k lowest activations over the
    corpus (value, where: [document, position], and the activations of the context around it),
    summary statistics, a histogram, and the tokens its output most promotes and suppresses
    directly through the unembedding."""

    model: str
    hook: str
    layers: list[int]
    top_values: Float[Tensor, "layer neuron k"]  # highest first
    bottom_values: Float[Tensor, "layer neuron k"]  # lowest first
    top_where: Int[Tensor, "layer neuron k 2"]  # [document, position]
    bottom_where: Int[Tensor, "layer neuron k 2"]
    top_contexts: Float[Tensor, "layer neuron k window"]  # activations at position - c .. + c
    bottom_contexts: Float[Tensor, "layer neuron k window"]
    mean: Float[Tensor, "layer neuron"]
    std: Float[Tensor, "layer neuron"]
    frac_positive: Float[Tensor, "layer neuron"]
    histogram: Float[Tensor, "layer neuron bin"]
    bin_edges: Float[Tensor, "layer neuron edge"]
    tokens_seen: int
    context: int
    documents: list[Tensor] = field(repr=False)  # token ids of each sequence, BOS first
    # direct effect on the logits, W_out[n] @ W_U (mlp.hook_post only; None otherwise)
    promoted: Tensor | None = None  # [layer, neuron, LOGIT_EFFECTS] token ids
    promoted_values: Tensor | None = None
    suppressed: Tensor | None = None
    suppressed_values: Tensor | None = None
    weights_sha256: str = ""
    corpus: dict = field(default_factory=dict)
    spec: str = ""  # what load_model loads the model from again (models.loading.model_spec)
    # a uniform sample of each unit's activations above zero (where [-1, -1]: fewer than asked)
    sample_values: Tensor | None = None  # [layer, neuron, samples]
    sample_where: Tensor | None = None
    sample_contexts: Tensor | None = None

    @property
    def k(self) -> int:
        return self.top_values.shape[-1]

    def layer_index(self, layer: int) -> int:
        if layer not in self.layers:
            raise InputError(
                f"layer {layer} was not recorded: these records hold layers {self.layers}"
            )
        return self.layers.index(layer)

    def check_neuron(self, neuron: int) -> None:
        d_mlp = self.top_values.shape[1]
        if isinstance(neuron, bool) or not isinstance(neuron, int) or not 0 <= neuron < d_mlp:
            raise InputError(f"neuron {neuron!r} is out of range: choose 0 .. {d_mlp - 1}")

    def window_tokens(self, document: int, position: int) -> list[int | None]:
        """The token ids at position - context .. position + context of a document (None outside
        it)."""
        ids = self.documents[document]
        start, stop = position - self.context, position + self.context + 1
        # one slice, not an int() per element: a notebook asks for hundreds of thousands of windows
        inside: list[int | None] = ids[max(start, 0) : max(stop, 0)].tolist()
        before = min(max(-start, 0), stop - start)
        return [None] * before + inside + [None] * (stop - start - before - len(inside))

    def __repr__(self) -> str:
        return (
            f"NeuronRecords({self.model}: layers {self.layers}, {self.top_values.shape[1]} "
            f"neurons each, top/bottom {self.k} of {self.tokens_seen:,} tokens, hook {self.hook})"
        )

    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "model": self.model,
            "spec": self.spec or self.model,
            "weights_sha256": self.weights_sha256,
            "hook": self.hook,
            "layers": self.layers,
            "d_mlp": self.top_values.shape[1],
            "k": self.k,
            "context": self.context,
            "tokens_seen": self.tokens_seen,
            "documents": len(self.documents),
            "corpus": self.corpus,
            "logit_effects": self.promoted is not None,
            "samples": 0 if self.sample_values is None else self.sample_values.shape[-1],
        }

    # ---------------------------------------------------------------------------------------------
    # Saving and loading: safetensors and JSON, nothing pickled

    def tensors(self) -> dict[str, Tensor]:
        lengths = torch.tensor([len(d) for d in self.documents], dtype=torch.long)
        tensors = {
            "top_values": self.top_values,
            "bottom_values": self.bottom_values,
            "top_where": self.top_where,
            "bottom_where": self.bottom_where,
            "top_contexts": self.top_contexts,
            "bottom_contexts": self.bottom_contexts,
            "mean": self.mean,
            "std": self.std,
            "frac_positive": self.frac_positive,
            "histogram": self.histogram,
            "bin_edges": self.bin_edges,
            "document_tokens": torch.cat(self.documents) if self.documents else lengths,
            "document_lengths": lengths,
        }
        optional = {
            "sample_values": self.sample_values,
            "sample_where": self.sample_where,
            "sample_contexts": self.sample_contexts,
            "promoted": self.promoted,
            "promoted_values": self.promoted_values,
            "suppressed": self.suppressed,
            "suppressed_values": self.suppressed_values,
        }
        tensors.update({name: value for name, value in optional.items() if value is not None})
        return {name: value.contiguous() for name, value in tensors.items()}

    @classmethod
    def load(cls, directory: str | Path, model: HookedTransformer | None = None) -> "NeuronRecords":
        """The records saved in `directory` (neurons.safetensors and neurons.json), refused when
        unreadable, malformed, or (with `model`) recorded for another model."""
        from mechlab.io import Fields, read_json_object, read_safetensors

        directory = Path(directory)
        json_path, tensor_path = directory / "neurons.json", directory / "neurons.safetensors"
        if not json_path.is_file() or not tensor_path.is_file():
            raise DataError(
                f"no neuron records in {str(directory)!r} (it needs neurons.safetensors and "
                "neurons.json): make them with `mechlab neurons --out DIR`"
            )
        fix = f"make them again with `mechlab neurons --out {directory}`"
        record = read_json_object(json_path, fix=fix)
        fields = Fields(record, json_path, fix)
        if fields.integer("format") != FORMAT:
            raise DataError(f"{json_path} is not in a format this mechlab reads; {fix}")
        layers = record.get("layers")
        if not isinstance(layers, list) or not all(
            isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in layers
        ):
            raise DataError(f"{json_path}: 'layers' should be a list of layer indices; {fix}")
        d_mlp, k, context = (
            fields.integer("d_mlp", 1),
            fields.integer("k", 1),
            fields.integer("context", 0),
        )
        n, window = len(layers), 2 * context + 1
        shapes = {
            "top_values": (n, d_mlp, k),
            "bottom_values": (n, d_mlp, k),
            "top_where": (n, d_mlp, k, 2),
            "bottom_where": (n, d_mlp, k, 2),
            "top_contexts": (n, d_mlp, k, window),
            "bottom_contexts": (n, d_mlp, k, window),
            "mean": (n, d_mlp),
            "std": (n, d_mlp),
            "frac_positive": (n, d_mlp),
            "histogram": (n, d_mlp, BINS),
            "bin_edges": (n, d_mlp, BINS + 1),
        }
        tensors, _ = read_safetensors(tensor_path, fix=fix)
        effects = ("promoted", "promoted_values", "suppressed", "suppressed_values")
        if record.get("logit_effects"):
            shapes.update({name: (n, d_mlp, LOGIT_EFFECTS) for name in effects})
        samples = fields.integer("samples", 0)
        if samples:
            shapes.update(
                sample_values=(n, d_mlp, samples),
                sample_where=(n, d_mlp, samples, 2),
                sample_contexts=(n, d_mlp, samples, window),
            )
        found = {name: tuple(tensors[name].shape) for name in shapes if name in tensors}
        if found != shapes:
            raise DataError(f"{tensor_path} does not hold the tensors {json_path} describes; {fix}")
        lengths, ids = tensors.get("document_lengths"), tensors.get("document_tokens")
        if lengths is None or ids is None or int(lengths.sum()) != len(ids):
            raise DataError(f"{tensor_path}: the documents' tokens do not add up; {fix}")
        documents = list(ids.split(lengths.tolist())) if len(lengths) else []
        for name in ("top_where", "bottom_where", "sample_where"):
            where = tensors.get(name) if name in shapes else None
            if where is None or not len(where):
                continue
            where = where[where[..., 0] >= 0] if name == "sample_where" else where.flatten(0, -2)
            lengths_at = lengths[where[:, 0].clamp(0, len(lengths) - 1)] if len(lengths) else None
            if len(where) and (
                where[:, 0].min() < 0
                or where[:, 0].max() >= len(documents)
                or where[:, 1].min() < 1
                or (where[:, 1] >= lengths_at).any()
            ):
                raise DataError(f"{tensor_path}: {name!r} points outside the documents; {fix}")
        records = cls(
            model=fields.text("model"),
            spec=spec if isinstance(spec := record.get("spec"), str) and spec else "",
            hook=fields.text("hook"),
            layers=layers,
            tokens_seen=fields.integer("tokens_seen", 0),
            context=context,
            documents=documents,
            weights_sha256=fields.text("weights_sha256"),
            corpus=corpus if isinstance(corpus := record.get("corpus"), dict) else {},
            **{name: tensors[name] for name in shapes},
        )
        if model is not None:
            records.check_model(model, directory)
        return records

    def check_model(self, model: HookedTransformer, directory: str | Path) -> None:
        """Refuse records (loaded from `directory`) made with other weights than `model`'s, or
        whose documents hold token ids outside its vocabulary."""
        from mechlab.analysis.weights import weights_sha256

        ids = torch.cat(self.documents) if self.documents else torch.zeros(0, dtype=torch.long)
        if len(ids) and not (ids.min() >= 0 and ids.max() < model.cfg.d_vocab):
            raise DataError(
                f"{Path(directory) / 'neurons.safetensors'}: the documents hold token ids outside "
                f"{model.cfg.model_name}'s vocabulary [0, {model.cfg.d_vocab}) (from "
                f"{int(ids.min())} to {int(ids.max())}); make them again with `mechlab neurons "
                f"--out {directory}`"
            )
        if self.weights_sha256 != weights_sha256(model):
            raise DataError(
                f"the neuron records in {str(directory)!r} belong to "
                + other_weights(self.model, model.cfg.model_name, "to")
                + ": record this model's with `mechlab neurons`"
            )


# --------------------------------------------------------------------------------------------------
# The pass


def check_records_fit(layers: int, units: int, k: int, samples: int, context: int) -> None:
    """Refuse, at the first batch, records that cannot fit: each unit keeps its 2k + samples records
    with a window of 2 * context + 1 activations and token ids (float32 and int64), and merging a
    batch into them holds about as much again."""
    window = 2 * context + 1
    needed = 2 * layers * units * (2 * k + samples) * (window * (4 + 8) + 4 + 16)
    check_fits(
        needed,
        what=f"records of {layers * units:,} units, {2 * k + samples} each with {window} tokens",
        fix="record fewer layers, a lower k or samples, or a shorter context.",
    )


def sequences(model: HookedTransformer, texts: list[str], tokens: int) -> list[Tensor]:
    """Each text as BOS + its tokens (at most MAX_SEQUENCE), in order, until `tokens` non-BOS
    tokens are reached (the last text cut to fit)."""
    bos, out, seen = bos_token_id(model), [], 0
    limit = min(MAX_SEQUENCE, model.cfg.n_ctx - 1)
    for text in texts:
        if seen >= tokens:
            break
        if not isinstance(text, str):
            raise InputError(f"texts must be strings, got {type(text).__name__}")
        ids = model.to_tokens(text, prepend_bos=False, truncate=False)[0][:limit]
        ids = ids[: tokens - seen]
        if len(ids):
            out.append(torch.cat([ids.new_tensor([bos]), ids]).cpu())
            seen += len(ids)
    if not out:
        raise InputError("the texts hold no tokens: pass some text")
    return out


def batches(documents: list[Tensor]) -> list[tuple[int, list[Tensor]]]:
    """Consecutive documents, about BATCH_TOKENS tokens (padding included) per batch: (index of
    the first document, the documents)."""
    out, start = [], 0
    while start < len(documents):
        end, longest = start, 0
        while end < len(documents):
            longest_next = max(longest, len(documents[end]))
            if end > start and longest_next * (end - start + 1) > BATCH_TOKENS:
                break
            longest, end = longest_next, end + 1
        out.append((start, documents[start:end]))
        start = end
    return out


def merge(kept: list[Tensor], new: list[Tensor], k: int, top: bool) -> list[Tensor]:
    """The k best by the first tensor (the sort key) of the running records (key, values, where,
    windows) and a batch's candidates, the running ones first, so that a stable sort keeps
    earlier positions first among equal keys."""
    joined = [torch.cat([old, fresh], dim=1) for old, fresh in zip(kept, new, strict=True)]
    order = joined[0].sort(dim=1, descending=top, stable=True).indices[:, :k]
    return [gather_rows(tensor, order) for tensor in joined]


def gather_rows(
    tensor: Shaped[Tensor, "neuron candidate *rest"], order: Int[Tensor, "neuron k"]
) -> Shaped[Tensor, "neuron k *rest"]:
    """tensor[n, order[n, i], ...] for every neuron n."""
    index = order.reshape(*order.shape, *[1] * (tensor.dim() - 2))
    return tensor.gather(1, index.expand(-1, -1, *tensor.shape[2:]))


@dataclass
class _Batch:
    """Where a batch's recorded positions are: their rows and positions in the padded batch, their
    [document, position] in the corpus, and which cells hold a document's tokens."""

    rows: Tensor
    positions: Tensor
    where: Tensor
    inside: Tensor


@dataclass
class _Running:
    """One layer's running records during the pass."""

    top: list[Tensor]  # sort key, values, where, windows
    bottom: list[Tensor]
    sample: list[Tensor]  # key: a random number for an activation above zero, -1 otherwise
    total: Tensor
    total_squares: Tensor
    positive: Tensor
    histogram: Tensor
    edges: Tensor


def top_activations(
    model: HookedTransformer,
    texts: list[str],
    *,
    layers: list[int] | None = None,
    k: int = 20,
    context: int = 12,
    tokens: int | None = None,
    hook: str = "mlp.hook_post",
    progress: bool = False,
    transform: Callable[[Tensor], Tensor] | None = None,
    samples: int = 0,
    seed: int = 0,
) -> NeuronRecords:
    """The k highest and k lowest activations of every neuron at `hook` (default: the MLP's
    hidden layer, what W_out reads) of `layers` (default: every layer), over the first `tokens`
    tokens of `texts` (default: NEURON_TOKENS, or all the texts hold; asked for explicitly, a
    warning says when the texts hold fewer), with `context` tokens of context on each side. See the
    module docstring.

    `transform` maps the hook's activations [..., d] to the units recorded (an SAE's encoder: its
    latents); `samples` more activations above zero are kept per unit, drawn uniformly (seeded by
    `seed`), for pages that show every level of activation, not only the top."""
    check_model(model)
    from mechlab.analysis.weights import weights_sha256
    from mechlab.progress import progress_bar

    cfg = model.cfg
    if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
        raise InputError(
            f"texts must be a list of strings, got {type(texts).__name__}: pass [text] for one text"
        )
    layers = list(range(cfg.n_layers)) if layers is None else list(layers)
    if not layers or len(set(layers)) != len(layers):
        raise InputError(f"layers must be distinct layer indices, got {layers}")
    for layer in layers:
        check_layer(model, layer)
    check_seed(seed)
    asked, tokens = tokens, NEURON_TOKENS if tokens is None else tokens
    checks = [("k", k, 1), ("context", context, 0), ("tokens", tokens, 1), ("samples", samples, 0)]
    for name, value, low in checks:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InputError(f"{name} must be an integer >= {low}, got {value!r}")
    if context > MAX_SEQUENCE:
        raise InputError(
            f"context must be at most {MAX_SEQUENCE} tokens (the longest text recorded), got "
            f"{context:,}"
        )
    if not isinstance(hook, str) or not hook:
        raise InputError(f"hook must be a block's hook name such as 'mlp.hook_post', got {hook!r}")
    names = {f"blocks.{layer}.{hook}": index for index, layer in enumerate(layers)}
    missing = [name for name in names if name not in model.hook_dict]
    if missing:
        raise InputError(
            f"{cfg.model_name} has no hook {missing[0]!r}: use a block's hook such as "
            "mlp.hook_post (what W_out reads) or mlp.hook_pre"
        )
    documents = sequences(model, texts, tokens)
    seen = sum(len(d) - 1 for d in documents)
    if asked is not None and seen < asked:
        warnings.warn(
            f"the texts hold {seen:,} tokens, fewer than the {tokens:,} asked for: all of them "
            "are recorded",
            MechlabWarning,
            stacklevel=2,
        )
    generator = torch.Generator().manual_seed(seed)
    running: list[_Running | None] = [None] * len(layers)
    if sum(len(d) - 1 for d in documents) < k:
        raise InputError(f"the texts hold fewer than k = {k} tokens: pass more text or a lower k")

    for first, batch in progress_bar(
        batches(documents),
        desc=f"{'neurons' if transform is None else 'latents'} of {cfg.model_name}",
        disable=not progress,
        leave=False,
    ):
        length = max(len(d) for d in batch)
        ids = torch.zeros(len(batch), length, dtype=torch.long)
        inside = torch.zeros(len(batch), length, dtype=torch.bool)
        for row, document in enumerate(batch):
            ids[row, : len(document)] = document
            inside[row, : len(document)] = True
        recorded = inside.clone()
        recorded[:, 0] = False  # never BOS
        rows, positions = recorded.nonzero(as_tuple=True)  # in document, then position, order
        where = torch.stack([rows + first, positions], dim=1)  # [candidate, 2]

        batch_info = _Batch(rows, positions, where, inside)

        def record(acts: Tensor, hook, batch_info: _Batch = batch_info) -> None:
            index = names[hook.name]
            if running[index] is None:
                first_values = acts[batch_info.rows, batch_info.positions].float().cpu()
                if transform is not None:
                    first_values = transform(first_values)
                if index == 0:  # the units are known now: refuse records that cannot fit
                    check_records_fit(len(layers), first_values.shape[1], k, samples, context)
                running[index] = start_running(first_values, 2 * context + 1)
            values = acts.detach().float().cpu()
            if transform is not None:
                values = transform(values)
            state = running[index]
            assert state is not None  # made just above for the layer's first batch
            update_layer(state, values, batch_info, k, context, samples, generator)

        with torch.inference_mode():
            model.run_with_hooks(
                ids.to(cfg.device),
                fwd_hooks=[(name, record) for name in names],
                stop_at_layer=max(layers) + 1,
            )

    n = sum(len(d) - 1 for d in documents)

    def stacked(part) -> Tensor:
        return torch.stack([part(state) for state in running])

    mean = stacked(lambda s: s.total / n)
    variance = stacked(lambda s: s.total_squares / n) - mean.double() ** 2
    result = NeuronRecords(
        model=cfg.model_name,
        spec=model_spec(model),
        hook=hook,
        layers=layers,
        top_values=stacked(lambda s: s.top[1]),
        bottom_values=stacked(lambda s: s.bottom[1]),
        top_where=stacked(lambda s: s.top[2]),
        bottom_where=stacked(lambda s: s.bottom[2]),
        top_contexts=stacked(lambda s: s.top[3]),
        bottom_contexts=stacked(lambda s: s.bottom[3]),
        mean=mean.float(),
        std=variance.clamp_min(0).sqrt().float(),
        frac_positive=stacked(lambda s: s.positive / n).float(),
        histogram=stacked(lambda s: s.histogram),
        bin_edges=stacked(lambda s: s.edges),
        tokens_seen=n,
        context=context,
        documents=documents,
        weights_sha256=weights_sha256(model),
    )
    if samples:
        result.sample_values = stacked(lambda s: s.sample[1])
        result.sample_where = torch.where(  # filler (nothing above zero left to draw): [-1, -1]
            stacked(lambda s: s.sample[0])[..., None] >= 0, stacked(lambda s: s.sample[2]), -1
        )
        result.sample_contexts = stacked(lambda s: s.sample[3])
    if hook == "mlp.hook_post" and transform is None:
        add_logit_effects(model, result)
    return result


def update_layer(
    state: _Running,
    acts: Float[Tensor, "batch pos neuron"],
    batch: _Batch,
    k: int,
    context: int,
    samples: int,
    generator: torch.Generator,
) -> None:
    """Fold one batch's activations of one layer ([batch, pos, neuron]) into its records."""
    values = acts[batch.rows, batch.positions]  # [candidate, neuron], in corpus order
    update_stats(state, values)
    padded = torch.nn.functional.pad(acts * batch.inside[..., None], (0, 0, context, context))
    padded[:, context, :] = 0.0  # BOS is shown in a context, never recorded
    offsets = torch.arange(-context, context + 1)
    neuron = torch.arange(values.shape[1])[:, None, None]
    kinds = [(True, state.top, values.T, k), (False, state.bottom, values.T, k)]
    if samples:  # a uniform sample of the activations above zero: the largest random keys
        keys = torch.rand(values.T.shape, generator=generator)
        kinds.append((True, state.sample, torch.where(values.T > 0, keys, -1.0), samples))
    for top, kept, key, count in kinds:
        order = best(key, count, top)
        windows = padded[  # [neuron, candidate, window]
            batch.rows[order][..., None],
            batch.positions[order][..., None] + context + offsets,
            neuron,
        ]
        new = [key.gather(1, order), values.T.gather(1, order), batch.where[order], windows]
        kept[:] = merge(kept, new, count, top)


def best(key: Float[Tensor, "row candidate"], count: int, top: bool) -> Int[Tensor, "row c"]:
    """Per row, the indices of the `count` largest keys (smallest if not `top`) in the order a
    stable sort of the whole row gives: best first, equal keys in candidate order. A partial
    `topk` finds each row's count-th best key; only the candidates at least as good (count of
    them, more where keys tie) are sorted, not the thousands of others."""
    count = min(count, key.shape[1])
    threshold = key.topk(count, dim=1, largest=top).values[:, -1:]
    chosen = key >= threshold if top else key <= threshold
    counts = chosen.sum(1)
    width = int(counts.max())
    # the chosen candidates' indices, in candidate order, packed to the left of each row; the
    # others go to a spare last column, dropped
    slot = torch.where(chosen, chosen.cumsum(1) - 1, width)
    candidates = torch.arange(key.shape[1]).expand_as(key)
    packed = torch.zeros(key.shape[0], width + 1, dtype=torch.long).scatter_(1, slot, candidates)
    packed = packed[:, :width]
    filler = torch.arange(width) >= counts[:, None]  # rows with fewer chosen than the widest
    worst = float("-inf") if top else float("inf")
    packed_key = key.gather(1, packed).masked_fill(filler, worst)
    order = packed_key.sort(dim=1, descending=top, stable=True).indices[:, :count]
    return packed.gather(1, order)


def start_running(values: Float[Tensor, "candidate neuron"], window: int) -> _Running:
    n_neurons = values.shape[1]

    def empty() -> list[Tensor]:
        return [
            torch.empty(n_neurons, 0),
            torch.empty(n_neurons, 0),
            torch.empty(n_neurons, 0, 2, dtype=torch.long),
            torch.empty(n_neurons, 0, window),
        ]

    low, high = values.min(0).values, values.max(0).values
    spread = (high - low).clamp_min(1e-6)
    edges = torch.stack(
        [
            torch.linspace(0, 1, BINS + 1) * 2 * s + (lo - s / 2)
            for lo, s in zip(low, spread, strict=True)
        ]
    )  # the first batch's range, widened by half of it on each side
    return _Running(
        top=empty(),
        bottom=empty(),
        sample=empty(),
        total=torch.zeros(n_neurons, dtype=torch.float64),
        total_squares=torch.zeros(n_neurons, dtype=torch.float64),
        positive=torch.zeros(n_neurons, dtype=torch.float64),
        histogram=torch.zeros(n_neurons, BINS),
        edges=edges,
    )


def update_stats(state: _Running, values: Float[Tensor, "candidate neuron"]) -> None:
    doubles = values.double()
    state.total += doubles.sum(0)
    state.total_squares += doubles.pow(2).sum(0)
    state.positive += (values > 0).sum(0).double()
    # bin i holds edges[i] <= x < edges[i+1]; values beyond the ends go to the end bins
    bins = torch.searchsorted(state.edges.contiguous(), values.T.contiguous(), right=True) - 1
    bins = bins.clamp(0, BINS - 1)  # [neuron, candidate]
    state.histogram.scatter_add_(1, bins, torch.ones_like(bins, dtype=torch.float32))


def add_logit_effects(model: HookedTransformer, records: NeuronRecords) -> None:
    """Each neuron's direct effect on the logits, W_out[n] @ W_U (through the final norm's folded
    weight, not its per-position scale): the LOGIT_EFFECTS tokens it most promotes and
    suppresses."""
    promoted, promoted_values, suppressed, suppressed_values = [], [], [], []
    with torch.inference_mode():
        W_U = model.W_U.float()
        for layer in records.layers:
            W_out = model.blocks[layer].mlp.W_out.float()
            tops, bottoms = [], []
            for chunk in W_out.split(256):
                effects = chunk @ W_U
                tops.append(effects.topk(LOGIT_EFFECTS, dim=-1))
                bottoms.append(effects.topk(LOGIT_EFFECTS, dim=-1, largest=False))
            promoted.append(torch.cat([t.indices for t in tops]).cpu())
            promoted_values.append(torch.cat([t.values for t in tops]).cpu())
            suppressed.append(torch.cat([b.indices for b in bottoms]).cpu())
            suppressed_values.append(torch.cat([b.values for b in bottoms]).cpu())
    records.promoted = torch.stack(promoted)
    records.promoted_values = torch.stack(promoted_values)
    records.suppressed = torch.stack(suppressed)
    records.suppressed_values = torch.stack(suppressed_values)
