# %% [markdown]
# # Write your own attention, and check it against the library
# Fill in `forward` below: the causal multi-head self-attention of GPT-2 (ARENA 1.1's exercise).
# `check_component` builds your class with the reference model's config, copies the reference's
# weights into it by TransformerLens's names (W_Q, b_Q, ...), runs it on the very input the
# reference attention saw, and compares. When the output is wrong, it says which common bug yours
# looks like: the mask off by one, no 1/sqrt(d_head), the softmax over the wrong dimension, a
# forgotten bias, rotary rotated the wrong way.
#
# The shapes, named once: x is [batch pos d_model]; W_Q, W_K, W_V are [n_heads d_model d_head];
# W_O is [n_heads d_head d_model]; the pattern is [batch n_heads query_pos key_pos].

# %%
import math

import einops
import torch
from _common import parse
from torch import nn

from mechlab import check_component
from mechlab.io import ensure_writable_dir, write_json

out = ensure_writable_dir(parse(__doc__ or "write your own attention").out)


class MyAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.W_Q = nn.Parameter(torch.empty(cfg.n_heads, cfg.d_model, cfg.d_head))
        self.W_K = nn.Parameter(torch.empty(cfg.n_heads, cfg.d_model, cfg.d_head))
        self.W_V = nn.Parameter(torch.empty(cfg.n_heads, cfg.d_model, cfg.d_head))
        self.W_O = nn.Parameter(torch.empty(cfg.n_heads, cfg.d_head, cfg.d_model))
        self.b_Q = nn.Parameter(torch.empty(cfg.n_heads, cfg.d_head))
        self.b_K = nn.Parameter(torch.empty(cfg.n_heads, cfg.d_head))
        self.b_V = nn.Parameter(torch.empty(cfg.n_heads, cfg.d_head))
        self.b_O = nn.Parameter(torch.empty(cfg.d_model))

    def forward(self, x):
        # 1. queries, keys, values per head (einops.einsum, then + the biases)
        # 2. scores = q . k / sqrt(d_head), shape [batch n_heads query_pos key_pos]
        # 3. hide the future: a query sees its own position and earlier ones
        # 4. pattern = softmax over the keys
        # 5. z = pattern-weighted values; out = z through W_O, summed over heads, + b_O
        # return out, pattern
        raise NotImplementedError("write MyAttention.forward")


# %% [markdown]
# Stuck? The next cell (collapsed in Jupyter) is one answer; running it replaces your class. Skip
# it to check your own.


# %% jupyter={"source_hidden": true}
class MyAttention(MyAttention):
    def forward(self, x):
        q = (
            einops.einsum(
                x, self.W_Q, "batch pos d_model, n_heads d_model d_head -> batch pos n_heads d_head"
            )
            + self.b_Q
        )
        k = (
            einops.einsum(
                x, self.W_K, "batch pos d_model, n_heads d_model d_head -> batch pos n_heads d_head"
            )
            + self.b_K
        )
        v = (
            einops.einsum(
                x, self.W_V, "batch pos d_model, n_heads d_model d_head -> batch pos n_heads d_head"
            )
            + self.b_V
        )
        scores = einops.einsum(
            q,
            k,
            "batch query_pos n_heads d_head, batch key_pos n_heads d_head -> batch n_heads query_pos key_pos",  # noqa: E501
        ) / math.sqrt(self.cfg.d_head)
        pos = x.shape[1]
        future = torch.ones(pos, pos, dtype=torch.bool).triu(diagonal=1)
        pattern = scores.masked_fill(future, float("-inf")).softmax(dim=-1)
        z = einops.einsum(
            pattern,
            v,
            "batch n_heads query_pos key_pos, batch key_pos n_heads d_head -> batch query_pos n_heads d_head",  # noqa: E501
        )
        out = einops.einsum(
            z, self.W_O, "batch pos n_heads d_head, n_heads d_head d_model -> batch pos d_model"
        )
        return out + self.b_O, pattern


# %% [markdown]
# ## Check it (against a randomly initialised GPT-2 small; any model spec works)

# %%
report = check_component(MyAttention, "attention")
write_json(out / "check_attention.json", report.to_json())
print(report)
assert report.passed, report.problem or report.hint
report  # noqa: B018 (a notebook cell displays its last value)

# %% [markdown]
# ## What the checker says about a bug: forget the output bias


# %%
class ForgotOutputBias(MyAttention):
    def forward(self, x):
        out, pattern = super().forward(x)
        return out - self.b_O, pattern


print(check_component(ForgotOutputBias, "attention"))

# %% [markdown]
# ## Next: Llama's attention
# SmolLM2's attention rotates queries and keys (rotary positions) and shares each key/value head
# between a group of query heads. Against a Llama-shaped reference, this class fails before it
# runs, and the report says which parameter and what shape it expected.

# %%
print(check_component(MyAttention, "attention", model="random:llama-tiny"))
