# %% [markdown]
# # Attention patterns
# One layer's heads as an interactive circuitsvis view (inline in a notebook, or in an offline page)
# and as a static PNG.

# %%
from _common import parse

from mechlab import attention_view, load_model, plot_attention, save_html
from mechlab.io import ensure_writable_dir, save_figure

args = parse(
    __doc__ or "attention",
    prompt=(str, "When Mary and John went to the store, John gave a drink to", "prompt"),
    layer=(int, 0, "layer to show"),
)
out = ensure_writable_dir(args.out)
model = load_model(args.model[0])

# %%
view = attention_view(model, args.prompt, layer=args.layer)
view  # noqa: B018 (a notebook cell displays its last value)

# %%
save_html([view], out / "attention.html", title=f"{args.model[0]}: layer {args.layer}")
save_figure(
    plot_attention(model, args.prompt, layer=args.layer), out / f"attention_L{args.layer}.png"
)
