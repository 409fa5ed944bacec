# %% [markdown]
# # Features: why one neuron is not one concept, and what a sparse autoencoder finds instead
# The "grandmother neuron" reading says each unit stands for one thing. Look at what excites an MLP
# neuron of a language model over real text and it rarely holds: the contexts where it fires
# hardest share no single meaning. Elhage et al. (2022) explain why: a model represents many more
# features than it has neurons, in *superposition*, so features share neurons and neurons mix
# features. A sparse autoencoder (Bricken et al. 2023, Cunningham et al. 2023) rewrites a layer's
# activation as a sparse combination of many more directions; those directions are much more often
# about one thing. This notebook puts the two side by side on the same layer.

# %%
from collections import Counter

from _common import parse

from mechlab import load_corpus, load_model, top_activations, train_sae
from mechlab.analysis.sae import feature_records
from mechlab.analysis.tokens import token_strings
from mechlab.io import ensure_writable_dir, write_json, write_text
from mechlab.present.features import unit_page, unit_token_ids

args = parse(
    __doc__ or "features",
    layer=(int, 15, "the layer: its MLP neurons and its residual stream's SAE", 3),
    tokens=(int, 65536, "tokens of Wikipedia text for the neurons and the features", 4096),
    sae_tokens=(int, 200_000, "training tokens for the SAE", 8192),
    loss_tokens=(int, 2048, "held-out tokens for the SAE's spliced next-token loss", 256),
)
out = ensure_writable_dir(args.out)
model = load_model(args.model[0])
corpus = load_corpus("wikipedia")
paragraphs = [p for document in corpus.held_out for p in document.split("\n\n")]

# %% [markdown]
# ## The neurons of one layer's MLP
# For every neuron, the 20 tokens (with context) where it is most active. How many *different*
# tokens are at the centre of those 20 is a crude measure of how mixed a neuron is.

# %%
neurons = top_activations(model, paragraphs, layers=[args.layer], tokens=args.tokens)
print(neurons)


def centres(records, unit: int) -> list[int]:
    where = records.top_where[0, unit].tolist()
    return [records.window_tokens(*w)[records.context] for w in where]


def spread(records, unit: int) -> int:
    return len(set(centres(records, unit)))


def show(records, unit: int, n: int = 8) -> None:
    for rank in range(n):
        document, position = records.top_where[0, unit, rank].tolist()
        window = [t for t in records.window_tokens(document, position) if t is not None]
        text = "".join(token_strings(model, window)).replace("\n", " ")
        value = float(records.top_values[0, unit, rank])
        print(f"  {value:7.2f}  ...{text}...")


mixed = max(range(neurons.top_values.shape[1]), key=lambda n: spread(neurons, n))
print(f"neuron {mixed}: {spread(neurons, mixed)} different tokens among its top 20")
show(neurons, mixed)

# %% [markdown]
# ## A sparse autoencoder on the same layer's residual stream
# Trained here from the model's own activations (SAELens's TopK SAE, 8 latents per dimension, 32
# active per token), then the same records for each latent on held-out text.

# %%
sae = train_sae(
    model,
    corpus.train,
    layer=args.layer,
    tokens=min(args.sae_tokens, 400_000),
    epochs=3,
    progress=True,
    eval_tokens=min(8192, args.tokens),
    loss_tokens=args.loss_tokens,
)
print(sae)
features = feature_records(model, sae, paragraphs, tokens=args.tokens)
alive = [f for f in range(sae.width) if features.frac_positive[0, f] > 0]
focused = sorted(alive, key=lambda f: (spread(features, f), -features.frac_positive[0, f]))[:3]
for feature in focused:
    print(f"feature {feature}: {spread(features, feature)} different tokens among its top 20")
    show(features, feature)

# %% [markdown]
# ## Side by side
# Across the layer: how many different tokens sit at the centre of each unit's top 20 contexts.
# Fewer means more focused; the SAE's latents are focused far more often than the neurons.

# %%
neuron_spread = Counter(spread(neurons, n) for n in range(neurons.top_values.shape[1]))
feature_spread = Counter(spread(features, f) for f in alive)
for name, counts in [("neurons", neuron_spread), ("SAE latents", feature_spread)]:
    total = sum(counts.values())
    few = sum(c for s, c in counts.items() if s <= 3) / total
    print(f"{name}: {few:.0%} have at most 3 different tokens at the centre of their top 20")
write_json(
    out / "features_vs_neurons.json",
    {
        "layer": args.layer,
        "sae": sae.to_json(),
        "neuron_spread": dict(neuron_spread),
        "feature_spread": dict(feature_spread),
        "mixed_neuron": mixed,
        "focused_features": focused,
    },
)
for records, unit, kind in [(neurons, mixed, "neuron")] + [
    (features, f, "feature") for f in focused
]:
    ids = sorted(unit_token_ids(records, args.layer, unit))
    text = dict(zip(ids, token_strings(model, ids), strict=True))
    write_text(out / f"{kind}_{unit}.html", unit_page(records, args.layer, unit, text, kind=kind))
