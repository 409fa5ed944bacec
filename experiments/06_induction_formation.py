# %% [markdown]
# # Induction heads forming in a model you train
# Train a two-layer attention-only Transformer from scratch (mechlab.scratch.model, GPT-2's
# initialisation) on random tokens where one segment of each sequence repeats, beside a one-layer
# control that cannot build an induction head (Olsson et al. 2022). Watch the phase change: the loss
# on the repeats drops, and a head's induction score jumps, at the same step; read from the weights
# alone, the induction head's keys come to read what the previous-token head writes
# (K-composition). Then hand the trained model to the library (`to_hooked`) and use the ordinary
# tools on it.

# %%
from _common import parse

from mechlab import (
    ablate_heads,
    circuits,
    induction_circuit,
    scan_heads,
    to_hooked,
    train_induction,
)
from mechlab.io import ensure_writable_dir, save_figure, write_json
from mechlab.present.circuits import plot_composition, plot_induction_circuit
from mechlab.present.heads import plot_head_scores
from mechlab.present.training import plot_formation

args = parse(
    __doc__ or "induction formation",
    steps=(int, 1000, "training steps per model", 60),
    seed=(int, 0, "seed of the weights and the data"),
    eval_every=(int, 25, "steps between checkpoints", 20),
)
out = ensure_writable_dir(args.out)

# %% [markdown]
# ## Train both models (about three minutes on a 2-core CPU; Ctrl-C keeps what was recorded)

# %%
formation = train_induction(
    layers=2, steps=args.steps, seed=args.seed, eval_every=args.eval_every, progress=True
)
print(formation)
save_figure(plot_formation(formation), out / "formation.png")
write_json(out / "formation.json", formation.to_json())

# %% [markdown]
# ## The trained model in the library: which heads, and does the model need them?
# A previous-token head in layer 0 and induction heads in layer 1. Ablating the top induction head
# (its output replaced by its mean) should cost the loss on the repeat.

# %%
trained = to_hooked(formation.runs[0].model, name="2-layer (trained)")
scan = scan_heads(trained, seq_len=20, batch=32)
print("top induction heads:", scan.top("induction", 3))
print("top previous-token heads:", scan.top("previous_token", 3))
save_figure(plot_head_scores(scan, "induction"), out / "trained_induction_scores.png")
layer, head, _ = scan.top("induction", 1)[0]
print(ablate_heads(trained, [(layer, head)], scan.tokens))

# %% [markdown]
# ## The same circuit from the weights alone
# K-composition: how much of what each layer-0 head writes (its OV circuit) the layer-1 heads'
# keys read (their QK circuits), against random circuits of the same shapes. The one-layer
# control has nothing to compose.

# %%
result = circuits(trained)
print(result)
save_figure(plot_composition(result, "k"), out / "composition_k.png")
circuit = induction_circuit(trained, scan, circuits_result=result)
print(circuit)
save_figure(plot_induction_circuit(circuit), out / "induction_circuit.png")
