"""Induction heads forming (mechlab.scratch.training): the time to the phase change of the two-layer
attention-only model for three seeds (goal: an induction score >= 0.4 in <= 5 minutes on this
2-core CPU), and one training step of the from-scratch model against the same model as a
HookedTransformer (`to_hooked`), side by side."""

import torch
import torch.nn.functional as F

from benchmarks.common import interleaved_best_times, print_table
from mechlab.scratch.convert import to_hooked
from mechlab.scratch.model import Transformer
from mechlab.scratch.training import formation_config, induction_batch, train_formation_run

SEEDS = (0, 1, 2)
STEPS = 700  # past the phase change (500 to 525 steps for these seeds)
BUDGET_SECONDS = 300


def step_times(repeat: int = 5, steps: int = 10) -> dict[str, float]:
    """Seconds per training step (batch 32, forward + backward + AdamW), best of `repeat`."""
    scratch = Transformer(formation_config(2, 8), seed=0)
    hooked = to_hooked(Transformer(formation_config(2, 8), seed=0))
    tokens, _, _ = induction_batch(32, torch.Generator().manual_seed(0))

    def trainer(model):
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

        def run():
            for _ in range(steps):
                logits = model(tokens)[:, :-1]
                loss = F.cross_entropy(logits.transpose(1, 2), tokens[:, 1:])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()

        return run

    times = interleaved_best_times(
        {"scratch": trainer(scratch), "hooked": trainer(hooked)}, repeat=repeat
    )
    return {name: value / steps for name, value in times.items()}


def main() -> None:
    per_step = step_times()
    print_table(
        "one training step, 2 layers x 8 heads, batch 32 x 64 tokens",
        ["model", "s/step", "x scratch"],
        [[name, value, value / per_step["scratch"]] for name, value in per_step.items()],
    )
    rows = []
    for seed in SEEDS:
        run = train_formation_run(2, 8, steps=STEPS, seed=seed, eval_every=25)
        step = run.phase_change_step()
        at = next((c for c in run.checkpoints if c.step == step), None)
        last = run.checkpoints[-1]
        rows.append(
            [
                seed,
                step if step is not None else "never",
                at.seconds if at else float("nan"),
                last.max_induction,
                f"{last.repeat_loss:.2f} / {last.first_loss:.2f}",
                "yes" if at and at.seconds <= BUDGET_SECONDS else "NO",
            ]
        )
    print_table(
        f"phase change of the 2-layer model (induction score >= 0.4), {STEPS} steps",
        ["seed", "step", "seconds", f"max induction at {STEPS}", "loss repeat / first", "<= 5 min"],
        rows,
    )


if __name__ == "__main__":
    main()
