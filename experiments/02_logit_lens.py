# %% [markdown]
# # The logit lens on GPT-2's classic prompts
# nostalgebraist (2020): decode each layer's residual stream through the final norm and unembedding.

# %%
from _common import parse

from mechlab import load_model
from mechlab.analysis.lens import lens_curves, logit_lens
from mechlab.io import ensure_writable_dir, save_figure, write_json
from mechlab.present.lens import plot_lens_curves, plot_lens_kl, plot_lens_rank, plot_lens_top1

PROMPTS = [
    "The capital of France is",
    "The Eiffel Tower is located in the city of",
    "When Mary and John went to the store, John gave a drink to",
    "In 1492, Columbus sailed across the Atlantic Ocean and reached the",
]
args = parse(__doc__ or "logit lens")
out = ensure_writable_dir(args.out)
model = load_model(args.model[0])

# %%
results = [logit_lens(model, prompt) for prompt in PROMPTS]
for name, plot in [("top1", plot_lens_top1), ("rank", plot_lens_rank), ("kl", plot_lens_kl)]:
    save_figure(plot(results[0]), out / f"lens_{name}.png")

# %%
curves = lens_curves(results)
save_figure(plot_lens_curves(curves), out / "lens_curves.png")
write_json(out / "lens_curves.json", curves.to_json())
print("top-1 at the output:", [r.top_tokens[-1][-1][0] for r in results])
