# %% [markdown]
# # The from-scratch Transformer against TransformerLens
# `mechlab.scratch.model` is a transformer written out in full (einops, jaxtyping shapes). Here it
# loads the library's weights and every intermediate value is compared with the library's.

# %%
from _common import parse

from mechlab import load_model
from mechlab.io import ensure_writable_dir, write_json
from mechlab.scratch.model import Transformer
from mechlab.scratch.parity import compare

args = parse(
    __doc__ or "scratch vs library",
    prompt=(str, "The quick brown fox jumps over the lazy dog.", "prompt"),
)
out = ensure_writable_dir(args.out)

# %%
for spec in args.model:
    model = load_model(spec)
    report = compare(Transformer.from_hooked(model), model, model.to_tokens(args.prompt))
    print(
        f"{spec}: {len(report.components)} components, passed={report.passed}, "
        f"largest abs error {max(c.max_abs_err for c in report.components):.2e}"
    )
    write_json(out / f"parity_{spec.replace('/', '_').replace(':', '_')}.json", report.to_json())
