"""Attention views and figures of a model on a prompt: compute the patterns (mechlab.analysis),
then draw them (mechlab.present). These are the public `mechlab.attention_view` and
`mechlab.plot_attention`; the views and figures themselves never see the model."""

from matplotlib.figure import Figure
from transformer_lens import HookedTransformer

from mechlab.analysis.attention import HeadPatterns, head_patterns, layer_heads
from mechlab.analysis.heads import HeadScan
from mechlab.analysis.tokens import PromptOrTokens
from mechlab.present.attention import patterns_view, plot_patterns
from mechlab.present.page import MAX_VIEW_TOKENS, View


def attention_view(
    model: HookedTransformer,
    prompt_or_tokens: PromptOrTokens,
    *,
    layer: int,
    heads: list[int] | None = None,
) -> View:
    """The attention patterns of one layer's heads (all by default) on a prompt, as circuitsvis's
    AttentionHeads component; heads are named L18H6. A prompt longer than MAX_VIEW_TOKENS shows
    its last MAX_VIEW_TOKENS tokens, and says so."""
    return attention_heads_view(model, prompt_or_tokens, layer_heads(model, layer, heads))


def attention_heads_view(
    model: HookedTransformer,
    prompt_or_tokens: PromptOrTokens,
    heads: list[tuple[int, int]],
    *,
    caption: str | None = None,
) -> View:
    """Attention patterns of any (layer, head) pairs, from one forward pass, in one view."""
    patterns = head_patterns(model, prompt_or_tokens, heads, last=MAX_VIEW_TOKENS)
    return patterns_view(patterns, caption=caption)


def plot_attention(
    model: HookedTransformer,
    prompt_or_tokens: PromptOrTokens,
    *,
    layer: int,
    heads: list[int] | None = None,
) -> Figure:
    """A grid of one layer's head patterns (rows: query tokens, columns: key tokens)."""
    return plot_patterns(head_patterns(model, prompt_or_tokens, layer_heads(model, layer, heads)))


def induction_patterns(model: HookedTransformer, scan: HeadScan) -> list[HeadPatterns]:
    """The two halves of the induction circuit on one of the scan's sequences: the four heads with
    the highest induction scores, and the three with the highest previous-token scores."""
    return [
        head_patterns(
            model, scan.tokens[:1], [(layer, head) for layer, head, _ in top], last=MAX_VIEW_TOKENS
        )
        for top in (scan.top("induction", 4), scan.top("previous_token", 3))
    ]
