# %% [markdown]
# # Circuits from the weights: reading heads without running the model
# Elhage et al. (2021) read a transformer's heads straight from its weights. The seed of the idea
# is an experiment you can run in a minute: the residual stream has no privileged basis. Rotate it
# (multiply everything that writes to it by an orthogonal R, everything that reads from it by
# R^T) and the model computes exactly the same logits, though every weight matrix has changed. So
# the individual matrices W_Q, W_K, W_V, W_O mean nothing on their own; what a head computes is
# its QK circuit W_Q W_K^T (which keys a query attends to) and its OV circuit W_V W_O (what it
# writes), and those *are* unchanged by such a change of basis.
#
# From those circuits: how strongly a later head reads what an earlier head wrote (Q-, K- and
# V-composition), against random circuits of the same shapes; and the induction circuit, where
# an induction head's keys read the output of a previous-token head (K-composition).

# %%
import einops
import torch
from _common import parse

from mechlab import circuits, induction_circuit, load_model, scan_heads
from mechlab.io import ensure_writable_dir, save_figure, write_json
from mechlab.present.circuits import plot_composition, plot_induction_circuit

args = parse(
    __doc__ or "circuits from the weights",
    ov_tokens=(int, 128, "input tokens sampled for each head's OV top-1 (copying) measure", 16),
)
out = ensure_writable_dir(args.out)
model = load_model(args.model[0])
print(model.cfg.model_name, model.cfg.normalization_type)

# %% [markdown]
# ## The rotation experiment
# A random orthogonal R of the residual stream, applied to every weight that reads or writes it.
# RMSNorm without weights (the processed models fold the weights into the next layer) commutes
# with a rotation: |x R| = |x|. A LayerNorm does not quite (it subtracts the mean over d_model,
# which a rotation moves), so this cell rotates only RMS-normed models.

# %%
tokens = model.to_tokens("The quick brown fox jumps over the lazy dog")
before_logits = model(tokens).detach()
before = circuits(model, ov_tokens=16)
if model.cfg.normalization_type == "RMSPre":
    generator = torch.Generator().manual_seed(0)
    R = torch.linalg.qr(torch.randn(model.cfg.d_model, model.cfg.d_model, generator=generator)).Q
    with torch.no_grad():
        model.embed.W_E.copy_(model.embed.W_E @ R)
        for block in model.blocks:
            attn = block.attn
            for name in ("W_Q", "_W_K", "_W_V", "W_K", "W_V"):
                weight = attn._parameters.get(name)
                if weight is not None:
                    weight.copy_(
                        einops.einsum(
                            R, weight, "d_model new, head d_model d_head -> head new d_head"
                        )
                    )
            attn.W_O.copy_(attn.W_O @ R)
            attn.b_O.copy_(attn.b_O @ R)
            if not model.cfg.attn_only:
                for name in ("W_in", "W_gate"):
                    weight = block.mlp._parameters.get(name)
                    if weight is not None:
                        weight.copy_(R.T @ weight)
                block.mlp.W_out.copy_(block.mlp.W_out @ R)
                block.mlp.b_out.copy_(block.mlp.b_out @ R)
        model.unembed.W_U.copy_(R.T @ model.unembed.W_U)
    after = circuits(model, ov_tokens=16)
    print("largest change in the logits:", (model(tokens) - before_logits).abs().max().item())
    for kind in "qkv":
        change = (after.composition[kind] - before.composition[kind]).abs().max().item()
        print(f"largest change in {kind}-composition: {change:.2e}")
    print("largest change in copying:", (after.copying - before.copying).abs().max().item())
    model = load_model(args.model[0])  # back to the model as it was trained
else:
    print("a LayerNorm model: the rotation experiment needs RMSNorm (try smollm2-135m)")

# %% [markdown]
# ## Every circuit, from the weights alone
# Composition scores |A B| / (|A| |B|) between every earlier head's OV circuit A and every later
# head's QK (Q), QK^T (K) or OV (V) circuit B; the copying score of each head's full OV circuit
# W_E W_V W_O W_U (its eigenvalues' sum over their absolute sum); how often a token's own output is
# the largest. No forward pass.

# %%
result = circuits(model, ov_tokens=args.ov_tokens)
print(result)
print("random circuits of these shapes:", result.baseline)
for kind in "qkv":
    print(kind, result.top(kind, 3))
    save_figure(plot_composition(result, kind), out / f"composition_{kind}.png")
write_json(out / "circuits.json", result.to_json())

# %% [markdown]
# ## The induction circuit
# The scan (a forward pass on repeated random tokens) says which heads behave like induction and
# previous-token heads; the weights say which earlier heads each induction head's keys read.

# %%
scan = scan_heads(model, batch=4)
circuit = induction_circuit(model, scan, circuits_result=result)
print(circuit)
for head in circuit.heads:
    print(f"L{head.layer}H{head.head}", head.composers[:3])
save_figure(plot_induction_circuit(circuit), out / "induction_circuit.png")
