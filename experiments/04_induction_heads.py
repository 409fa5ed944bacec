# %% [markdown]
# # Induction heads
# Score every head on repeated random tokens [BOS] + r + r (Olsson et al. 2022) and watch the loss
# fall on the repeat.

# %%
from _common import parse

from mechlab import load_model, scan_heads
from mechlab.io import ensure_writable_dir, save_figure, write_json
from mechlab.present.heads import plot_head_scores, plot_loss_by_position

args = parse(
    __doc__ or "induction heads", seq_len=(int, 50, "len(r)"), batch=(int, 10, "sequences")
)
out = ensure_writable_dir(args.out)
model = load_model(args.model[0])

# %%
scan = scan_heads(model, seq_len=args.seq_len, batch=args.batch)
print("top induction heads:", scan.top("induction", 5))
print(f"loss: first half {scan.loss_first_half:.2f}, second half {scan.loss_second_half:.2f}")

# %%
save_figure(plot_head_scores(scan, "induction"), out / "heads_induction.png")
save_figure(plot_loss_by_position(scan), out / "loss_by_position.png")
write_json(out / "heads.json", scan.to_json())
