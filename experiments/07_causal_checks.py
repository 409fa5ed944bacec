# %% [markdown]
# # Causal checks: does the model need its induction heads, and which heads carry the answer?
# Ablate the top induction heads against a control of non-induction heads of the same layers;
# patch every head from a clean indirect-object prompt into one with the names swapped, exactly
# and by attribution patching; and attribute the logit difference directly to every head.

# %%
from _common import parse

from mechlab import ablation_study, load_model, logit_attribution, patch, scan_heads
from mechlab.analysis.patching import agreement
from mechlab.io import ensure_writable_dir, save_figure, write_json
from mechlab.present.dla import plot_dla_heads
from mechlab.present.heads import plot_ablation
from mechlab.present.patching import plot_patch_grid

args = parse(
    __doc__ or "causal checks",
    clean=(str, "When Mary and John went to the store, John gave a drink to", "clean prompt"),
    corrupted=(str, "When John and Mary went to the store, Mary gave a drink to", "corrupted"),
    answer=(str, " Mary", "the clean answer (one token)"),
    wrong=(str, " John", "the corrupted answer (one token)"),
    seq_len=(int, 30, "len(r) for the ablation"),
    batch=(int, 6, "sequences for the ablation"),
)
out = ensure_writable_dir(args.out)
model = load_model(args.model[0])

# %% [markdown]
# ## Ablation: the top three induction heads together, and a control

# %%
scan = scan_heads(model, seq_len=args.seq_len, batch=args.batch)
study = ablation_study(model, scan, 3, method="mean")
print(study)
save_figure(plot_ablation(study), out / "ablation.png")

# %% [markdown]
# ## Activation patching over heads, exact and by attribution

# %%
pair = dict(answer=args.answer, wrong=args.wrong, over="heads")
exact = patch(model, args.clean, args.corrupted, **pair)
estimate = patch(model, args.clean, args.corrupted, **pair, method="attribution")
print(exact)
print("top heads:", exact.top(5))
print("attribution vs exact:", agreement(exact, estimate))
save_figure(plot_patch_grid(exact), out / "patch_heads.png")
save_figure(plot_patch_grid(estimate), out / "patch_heads_attribution.png")

# %% [markdown]
# ## Direct logit attribution

# %%
dla = logit_attribution(model, args.clean, answer=args.answer, wrong=args.wrong)
print(dla)
save_figure(plot_dla_heads(dla), out / "dla_heads.png")
write_json(
    out / "causal.json",
    {"ablation": study.to_json(), "patch": exact.to_json(), "dla": dla.to_json()},
)
