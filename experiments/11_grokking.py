# %% [markdown]
# # Grokking: a network memorises, then generalises, and you can read the algorithm it found
# Train a one-layer Transformer (mechlab.scratch.model) on (a + b) mod p with part of the pairs.
# It fits the training pairs early, while the held-out loss *rises*; thousands of steps later, with
# nothing new to learn from the training set, the held-out accuracy jumps to 100% (Power et al.
# 2022). Nanda et al. (2023) found what it learnt: each number x is embedded as waves
# cos(w x), sin(w x) at a few key frequencies w = 2 pi k / p; the MLP multiplies them into
# cos(w (a + b)) and sin(w (a + b)); the unembedding reads out c with
# cos(w (a + b - c)), largest exactly at c = (a + b) mod p. Their progress measures show the
# algorithm forming long before the test accuracy moves.

# %%
import math

import matplotlib.figure
import torch
from _common import parse

from mechlab.analysis.fourier import fourier_basis, frequency_norms
from mechlab.io import ensure_writable_dir, save_figure, write_json
from mechlab.present.grokking import plot_grokking
from mechlab.scratch.grokking import all_pairs, train_grokking

args = parse(
    __doc__ or "grokking",
    p=(int, 113, "the prime modulus", 23),
    fraction=(float, 0.5, "share of the pairs trained on"),
    steps=(int, 3000, "full-batch training steps", 200),
    seed=(int, 0, "seed of the weights and the split"),
)
out = ensure_writable_dir(args.out)

# %% [markdown]
# ## The run (a few minutes on a 2-core CPU; Ctrl-C keeps what was recorded)
# Losses on a log scale: the training loss falls to almost nothing within a few hundred steps,
# the test loss climbs, then collapses. The restricted loss (only the key frequencies' part of the
# logits) falls before the test loss does; the excluded loss (the training logits without it)
# rises as the training fit comes to rest on the algorithm. The weight norm falls throughout the
# "clean-up": weight decay removes the memorisation once the algorithm can do its job.

# %%
run = train_grokking(p=args.p, fraction=args.fraction, steps=args.steps, seed=args.seed)
print(run)
save_figure(plot_grokking(run), out / "grokking.png")
write_json(out / "grokking.json", run.to_json())
plot_grokking(run)

# %% [markdown]
# ## The Fourier basis
# Functions on 0..p-1 written in the basis of the constant and cos(2 pi k x / p),
# sin(2 pi k x / p) for k = 1 .. (p - 1) / 2. The trained embedding, in this basis, is
# concentrated on a few frequencies: the key frequencies.

# %%
basis, names = fourier_basis(args.p)
figure = matplotlib.figure.Figure(figsize=(10, 3.5))
left, right = figure.subplots(1, 2)
for row in (1, 2, 3, 4):
    left.plot(basis[row], label=names[row])
left.set_title("the first Fourier basis vectors")
left.legend(fontsize=7)
embedding = run.model.embed.W_E.detach()[: args.p]
right.bar(range(1, (args.p - 1) // 2 + 1), frequency_norms(embedding))
right.set_title(f"the trained embedding per frequency; key: {run.key_frequencies}")
right.set_xlabel("frequency k")
figure.tight_layout()
save_figure(figure, out / "fourier_embedding.png")
figure  # noqa: B018 (a notebook cell shows its last value)

# %% [markdown]
# ## The clock
# A neuron of the MLP, as a function of the two inputs a (rows) and b (columns), at the last
# position. After grokking most neurons are periodic along a + b at one key frequency: stripes
# along the anti-diagonals, repeating p / k times.

# %%
tokens, _ = all_pairs(args.p)
with torch.no_grad():
    _, activations = run.model(tokens, return_activations=True)
    resid_mid = activations["blocks.0.resid_mid"][:, -1]
    mlp = run.model.blocks[0].mlp
    neurons = torch.relu(resid_mid @ mlp.W_in + mlp.b_in)  # [pair, d_mlp]
grid = neurons.reshape(args.p, args.p, -1)
loudest = grid.flatten(0, 1).std(0).argsort(descending=True)[:4].tolist()
figure = matplotlib.figure.Figure(figsize=(12, 3.2))
for ax, neuron in zip(figure.subplots(1, 4), loudest, strict=True):
    ax.imshow(grid[:, :, neuron], cmap="viridis")
    spectrum = torch.fft.fft2(grid[:, :, neuron] - grid[:, :, neuron].mean()).abs()
    ka, kb = divmod(int(spectrum.argmax()), args.p)
    k = min(ka, args.p - ka) if ka else min(kb, args.p - kb)
    ax.set_title(f"neuron {neuron}: frequency {k}", fontsize=9)
    ax.set_xlabel("b")
    ax.set_ylabel("a")
figure.tight_layout()
save_figure(figure, out / "clock_neurons.png")
figure  # noqa: B018 (a notebook cell shows its last value)

# %% [markdown]
# ## The readout: cos(w (a + b - c))
# For one input pair, the logits over c against the sum of cos(w (a + b - c)) over the key
# frequencies, scaled to the same range: the model's answer curve is that wave.

# %%
a, b = 17 % args.p, 40 % args.p
with torch.no_grad():
    logits = run.model(tokens[a * args.p + b : a * args.p + b + 1])[0, -1, : args.p]
c = torch.arange(args.p, dtype=torch.float32)
wave = sum(torch.cos(2 * math.pi * k / args.p * (a + b - c)) for k in run.key_frequencies)
figure = matplotlib.figure.Figure(figsize=(8, 3))
ax = figure.subplots()
ax.plot(c, (logits - logits.mean()) / logits.std(), label="logits (standardised)")
ax.plot(c, (wave - wave.mean()) / wave.std(), label="sum of cos(w (a + b - c))", alpha=0.7)
ax.axvline((a + b) % args.p, color="gray", linestyle=":")
ax.set_xlabel("c")
ax.set_title(f"a = {a}, b = {b}: the answer {(a + b) % args.p} is where every wave peaks")
ax.legend(fontsize=7)
figure.tight_layout()
save_figure(figure, out / "readout.png")
figure  # noqa: B018 (a notebook cell shows its last value)
