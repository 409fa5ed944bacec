# %% [markdown]
# # The induction mosaic across models
# Induction scores of several models side by side, by relative depth. Pass --model several times;
# with hub access, try gpt2, gpt2-medium, EleutherAI/pythia-70m, EleutherAI/pythia-160m.

# %%
from _common import parse

from mechlab import load_model, scan_heads
from mechlab.io import ensure_writable_dir, save_figure, write_json
from mechlab.present.heads import plot_induction_mosaic

args = parse(__doc__ or "mosaic", seq_len=(int, 50, "len(r)"), batch=(int, 10, "sequences"))
out = ensure_writable_dir(args.out)

# %%
scans = [
    scan_heads(load_model(spec), seq_len=args.seq_len, batch=args.batch) for spec in args.model
]
save_figure(plot_induction_mosaic(scans), out / "induction_mosaic.png")
write_json(out / "mosaic.json", {scan.model: scan.to_json() for scan in scans})
