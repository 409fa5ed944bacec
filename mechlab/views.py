"""Interactive views (circuitsvis) for notebooks and for self-contained offline HTML pages.

circuitsvis renders React components from a 1.3 MB JavaScript bundle that ships inside its wheel.
Its own HTML has three problems this module avoids: ``str(view)`` loads the bundle from a CDN (a
blank page offline); ``local_src`` inlines the whole bundle once per view; and notebook display
probes the internet with a one-second timeout on every render. Here a `View` holds only the
component's name and its props. `save_html` writes one page with the bundle embedded once and
every view's props as escaped JSON data, so any token text (``</script>``, ``<!--``, quotes,
backslashes, emoji) reaches the component as text and nothing in it can end a script early.
"""

import html
import json
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import circuitsvis
import torch
from transformer_lens import HookedTransformer

from mechlab.attention import attention_patterns, check_heads, check_layer
from mechlab.io import write_text
from mechlab.tokens import PromptOrTokens, to_tokens, token_strings

# Beyond this many tokens an attention view shows only the last MAX_VIEW_TOKENS positions: the
# component draws every head as a pos x pos grid of cells, which freezes a browser tab at a few
# thousand tokens.
MAX_VIEW_TOKENS = 256


@dataclass
class View:
    """One circuitsvis component with its props, and a caption saying what the reader is seeing."""

    component: str  # e.g. "AttentionHeads", "TopkTokens"
    props: dict
    caption: str = ""
    notes: list[str] = field(default_factory=list)

    def _repr_html_(self) -> str:
        """Inline display in Jupyter and VS Code: self-contained, no network, no online probe."""
        return render_page([self], title=None, fragment=True)

    def __str__(self) -> str:
        return self._repr_html_()


def attention_view(
    model: HookedTransformer,
    prompt_or_tokens: PromptOrTokens,
    *,
    layer: int,
    heads: list[int] | None = None,
) -> View:
    """The attention patterns of one layer's heads (all by default) on a prompt, as circuitsvis's
    AttentionHeads component; heads are named ``L{layer}H{head}``."""
    check_layer(model, layer)
    heads = list(range(model.cfg.n_heads)) if heads is None else list(heads)
    return attention_heads_view(model, prompt_or_tokens, [(layer, head) for head in heads])


def attention_heads_view(
    model: HookedTransformer,
    prompt_or_tokens: PromptOrTokens,
    heads: list[tuple[int, int]],
    *,
    caption: str | None = None,
) -> View:
    """Attention patterns of any (layer, head) pairs, from one forward pass, in one view."""
    check_heads(model, heads)
    tokens = to_tokens(model, prompt_or_tokens)[:1]
    layers = sorted({layer for layer, _ in heads})
    patterns = attention_patterns(model, tokens, layers)
    attention = torch.stack([patterns[layer][head] for layer, head in heads])
    strings = token_strings(model, tokens[0])
    notes = []
    if len(strings) > MAX_VIEW_TOKENS:
        notes.append(
            f"showing the last {MAX_VIEW_TOKENS} of {len(strings)} tokens (queries and keys); "
            "attention to earlier keys is not drawn"
        )
        warnings.warn(f"attention view: {notes[-1]}", stacklevel=2)
        attention, strings = (
            attention[:, -MAX_VIEW_TOKENS:, -MAX_VIEW_TOKENS:],
            strings[-MAX_VIEW_TOKENS:],
        )
    names = [f"L{layer}H{head}" for layer, head in heads]
    if caption is None:
        caption = (
            f"{model.cfg.model_name}: attention patterns of {', '.join(names)}. Each row is a "
            "query "
            "token, each column a key token it can attend to; hover a head to enlarge it."
        )
    props = {
        "attention": [[[round(x, 5) for x in row] for row in head] for head in attention.tolist()],
        "tokens": strings,
        "attentionHeadNames": names,
        "maskUpperTri": True,
    }
    return View("AttentionHeads", props, caption, notes)


# --------------------------------------------------------------------------------------------------
# Pages


def circuitsvis_bundle() -> str:
    """circuitsvis's browser bundle, from its installed wheel, made safe to sit inside <script>."""
    path = Path(circuitsvis.__file__).parent / "dist" / "cdn" / "iife.js"
    # "</script" inside the bundle (it occurs in a string literal) would end our script element;
    # "<\/script" is the same JavaScript string. Likewise "<!--" could switch the HTML parser's
    # state.
    return (
        path.read_text(encoding="utf-8").replace("</script", "<\\/script").replace("<!--", "<\\!--")
    )


def json_for_script(data) -> str:
    """JSON that cannot break out of a <script> element: <, > and & as \\u escapes, non-ASCII
    too."""
    text = json.dumps(data, ensure_ascii=True, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


PAGE_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
  color: #222; }
figure.mechlab-view { margin: 2em 0; } figcaption { margin: 0.4em 0; color: #444; }
.mechlab-note { color: #a15c00; font-size: 0.9em; }
img.mechlab-figure { max-width: 100%; }
.mechlab-tokens span { display: inline-block; white-space: pre; font-family: monospace;
  font-size: 0.85em;
  border: 1px solid #ccc; border-radius: 3px; margin: 1px; padding: 0 3px; }
"""


def render_page(items: list, *, title: str | None, fragment: bool = False) -> str:
    """HTML with the circuitsvis bundle once, each view's props as JSON data, and captions.

    `items` are Views, or (caption, html) pairs of static HTML (figures, tables) placed in order.
    """
    bodies, props, renders = [], [], []
    # A notebook shows many fragments in one document, so their element ids must not collide.
    prefix = f"mechlab-{uuid.uuid4().hex[:8]}" if fragment else "mechlab-view"
    for index, item in enumerate(items):
        if isinstance(item, View):
            view_id = f"{prefix}-{index}"
            notes = "".join(
                f'<p class="mechlab-note">{html.escape(note)}</p>' for note in item.notes
            )
            bodies.append(
                f'<figure class="mechlab-view"><figcaption>{html.escape(item.caption)}</figcaption>'
                f'{notes}<div id="{view_id}"></div></figure>'
            )
            props.append(
                f'<script type="application/json" id="{view_id}-props">'
                f"{json_for_script(item.props)}</script>"
            )
            renders.append([view_id, item.component])
        else:
            caption, body = item
            caption_html = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
            bodies.append(f'<figure class="mechlab-view">{caption_html}{body}</figure>')
    script = ""
    if renders:
        script = (
            f"<script>{circuitsvis_bundle()}</script>\n" + "\n".join(props) + "\n<script>\n"
            f"for (const [id, component] of {json_for_script(renders)}) {{\n"
            "  const props = JSON.parse(document.getElementById(id + '-props').textContent);\n"
            "  CircuitsVis.render(id, CircuitsVis[component], props);\n"
            # AttentionHeads draws tokens only as canvas axis labels: list them as text too.
            "  if (Array.isArray(props.tokens) && typeof props.tokens[0] === 'string') {\n"
            "    const strip = document.createElement('p');\n"
            "    strip.className = 'mechlab-tokens';\n"
            "    for (const token of props.tokens) {\n"
            "      const span = document.createElement('span');\n"
            "      span.textContent = token;\n"
            "      strip.appendChild(span);\n"
            "    }\n"
            "    document.getElementById(id).before(strip);\n"
            "  }\n}\n</script>"
        )
    content = "\n".join(bodies) + "\n" + script
    if fragment:
        return f'<div class="mechlab">{content}</div>'
    heading = f"<h1>{html.escape(title)}</h1>" if title else ""
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title or 'mechlab')}</title><style>{PAGE_STYLE}</style></head>\n"
        f"<body>{heading}\n{content}\n</body></html>\n"
    )


def save_html(views, path: str | Path, *, title: str | None = None) -> Path:
    """Write one self-contained offline HTML page holding all `views` (a View or a list of them,
    possibly mixed with (caption, html) pairs), with the circuitsvis bundle embedded once."""
    items = [views] if isinstance(views, View) else list(views)
    return write_text(path, render_page(items, title=title))


# --------------------------------------------------------------------------------------------------
# Logit lens grid

LENS_STYLE = """
<style>
table.mechlab-lens { border-collapse: collapse; font-family: monospace; font-size: 11px; }
table.mechlab-lens th { font-weight: normal; color: #555; padding: 0 4px; white-space: pre; }
table.mechlab-lens td { position: relative; padding: 2px 4px; border: 1px solid #fff;
  white-space: pre; }
table.mechlab-lens td .tip { display: none; position: absolute; z-index: 10; left: 0; top: 100%;
  background: #fff; color: #222; border: 1px solid #888; padding: 4px;
  box-shadow: 2px 2px 6px #aaa; }
table.mechlab-lens td:hover .tip { display: block; }
</style>
"""


def lens_grid_html(result) -> str:
    """The logit lens as an HTML table, rows output (top) to embedding (bottom), one column per
    input position; a cell shows its top-1 token, shaded by probability, and its top-k on hover."""
    head = "".join(f"<th>{html.escape(token)}</th>" for token in result.token_strs)
    rows = []
    for row in reversed(range(len(result.layers))):
        cells = []
        for position in range(len(result.token_strs)):
            probs = result.top_probs[row, position].tolist()
            tokens = result.top_tokens[row][position]
            shade = int(255 - 155 * probs[0])
            tip = "<br>".join(f"{html.escape(repr(t))} {p:.3f}" for t, p in zip(tokens, probs))
            cells.append(
                f'<td style="background: rgb({shade},{shade},255)">{html.escape(tokens[0][:12])}'
                f'<span class="tip">{tip}</span></td>'
            )
        rows.append(f"<tr><th>{html.escape(result.layers[row])}</th>{''.join(cells)}</tr>")
    return (
        f'{LENS_STYLE}<table class="mechlab-lens"><tr><th></th>{head}</tr>{"".join(rows)}'
        f"<tr><th></th>{head}</tr></table>"
    )
