"""Interactive views (circuitsvis) for notebooks and for self-contained offline HTML pages.

circuitsvis renders React components from a 1.3 MB JavaScript bundle that ships inside its wheel.
Its own HTML has three problems this module avoids: ``str(view)`` loads the bundle from a CDN (a
blank page offline); ``local_src`` inlines the whole bundle once per view; and notebook display
probes the internet with a one-second timeout on every render. Here a `View` holds only the
component's name and its props. `save_html` writes one page with the bundle embedded once and
every view's props as escaped JSON data, so any token text (``</script>``, ``<!--``, quotes,
backslashes, emoji) reaches the component as text and nothing in it can end a script early.

In a notebook a view carries the bundle gzipped (0.36 MB instead of 1.3 MB; the browser inflates it
with DecompressionStream) and runs it once per page, however many views are shown. It also carries
a static picture of the patterns with one sentence saying how to get the interactive view: a saved
or shared notebook is untrusted in JupyterLab, which then runs no script, and the reader would
otherwise see an empty box. The script removes the picture when it runs.
"""

import base64
import functools
import gzip
import html
import json
import re
import struct
import uuid
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import circuitsvis
import torch

from mechlab.analysis.attention import HeadPatterns
from mechlab.errors import MechlabWarning
from mechlab.io import write_text
from mechlab.labels import head_label, heads_label, scored_heads_label
from mechlab.moved import moved_names

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
        """Inline display in Jupyter and VS Code: self-contained, no network, no online probe,
        with a static fallback for untrusted notebooks."""
        return notebook_html(self)

    def __repr__(self) -> str:
        names = self.props.get("attentionHeadNames") or []
        tokens = self.props.get("tokens") or []
        heads = f" of {', '.join(names[:4])}{', ...' if len(names) > 4 else ''}" if names else ""
        return f"View({self.component}{heads} on {len(tokens)} tokens)"

    __str__ = __repr__


def patterns_view(patterns: HeadPatterns, *, caption: str | None = None) -> View:
    """Heads' attention patterns as circuitsvis's AttentionHeads component, heads named L18H6.
    When only the last tokens were kept, the view says so (and warns)."""
    notes = []
    if patterns.n_tokens > len(patterns.tokens):
        notes.append(
            f"showing the last {len(patterns.tokens)} of {patterns.n_tokens} tokens (queries and "
            "keys); attention to earlier keys is not drawn"
        )
        warnings.warn(f"attention view: {notes[-1]}", MechlabWarning, stacklevel=3)
    names = [head_label(layer, head) for layer, head in patterns.heads]
    if caption is None:
        caption = (
            f"{patterns.model}: attention patterns of {', '.join(names)}. Each row is a query "
            "token, each column a key token it can attend to; hover a head to enlarge it."
        )
    props = {
        "attention": [
            [[round(x, 5) for x in row] for row in head] for head in patterns.pattern.tolist()
        ],
        "tokens": patterns.tokens,
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
nav.mechlab-contents ul { margin: 0.2em 0; } nav.mechlab-contents li { margin: 0.1em 0; }
"""


TOKEN_STYLE = (
    "display:inline-block;white-space:pre;font-family:monospace;font-size:0.85em;"
    "border:1px solid #ccc;border-radius:3px;margin:1px;padding:0 3px"
)

# Renders one view into the element `id` and removes its static fallback. AttentionHeads draws
# tokens only as canvas axis labels, so they are listed as text above it too.
RENDER_JS = """
function mechlabRender(CircuitsVis, id, component) {
  const props = JSON.parse(document.getElementById(id + '-props').textContent);
  CircuitsVis.render(id, CircuitsVis[component], props);
  if (Array.isArray(props.tokens) && typeof props.tokens[0] === 'string') {
    const strip = document.createElement('p');
    strip.className = 'mechlab-tokens';
    for (const token of props.tokens) {
      const span = document.createElement('span');
      span.textContent = token;
      span.setAttribute('style', %s);
      strip.appendChild(span);
    }
    document.getElementById(id).before(strip);
  }
  const fallback = document.getElementById(id + '-fallback');
  if (fallback) fallback.remove();
}
""" % json.dumps(TOKEN_STYLE)


def view_body(view: "View", view_id: str, fallback: bool = False) -> str:
    """A view's caption, notes, optional static fallback, mount point and props."""
    notes = "".join(f'<p class="mechlab-note">{html.escape(note)}</p>' for note in view.notes)
    static = static_fallback(view, view_id) if fallback else ""
    return (
        f'<figure class="mechlab-view"><figcaption>{html.escape(view.caption)}</figcaption>'
        f'{notes}{static}<div id="{view_id}"></div></figure>\n'
        f'<script type="application/json" id="{view_id}-props">'
        f"{json_for_script(view.props)}</script>"
    )


@dataclass
class Heading:
    """A section heading in a page (level 2: a model or a part of the page; 3: a section in it).
    A page with headings opens with a table of contents linking to each."""

    text: str
    level: int = 2


def heading_anchor(text: str, taken: set) -> str:
    """A readable, unique id for a heading: "random:tiny" -> "random-tiny" (then "-2", "-3")."""
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"
    anchor, n = base, 1
    while anchor in taken:
        n += 1
        anchor = f"{base}-{n}"
    taken.add(anchor)
    return anchor


def contents_html(entries: list[tuple[int, str, str]]) -> str:
    """The table of contents: level-2 headings, each with its level-3 headings nested under it."""
    groups: list[tuple[tuple[str, str], list[tuple[str, str]]]] = []
    for level, anchor, text in entries:
        if level == 2 or not groups:
            groups.append(((anchor, text), []))
        else:
            groups[-1][1].append((anchor, text))

    def link(anchor: str, text: str) -> str:
        return f'<a href="#{anchor}">{html.escape(text)}</a>'

    items = "".join(
        f"<li>{link(*top)}"
        + (f"<ul>{''.join(f'<li>{link(*sub)}</li>' for sub in subs)}</ul>" if subs else "")
        + "</li>"
        for top, subs in groups
    )
    return f'<nav class="mechlab-contents"><h2>Contents</h2><ul>{items}</ul></nav>'


def render_page(items: list, *, title: str | None) -> str:
    """One HTML page with the circuitsvis bundle once, each view's props as JSON data, and captions.

    `items` are Views, Headings, or (caption, html) pairs of static HTML (figures, tables) placed
    in order. With any Heading, the page opens with a table of contents.
    """
    bodies: list[str] = []
    renders: list[list[str]] = []
    contents: list[tuple[int, str, str]] = []
    taken: set[str] = set()
    parent = ""
    for index, item in enumerate(items):
        if isinstance(item, Heading):  # a section's anchor starts with its part's
            anchor = heading_anchor(f"{parent} {item.text}" if item.level > 2 else item.text, taken)
            parent = anchor if item.level == 2 else parent
            contents.append((item.level, anchor, item.text))
            bodies.append(f'<h{item.level} id="{anchor}">{html.escape(item.text)}</h{item.level}>')
        elif isinstance(item, View):
            view_id = f"mechlab-view-{index}"
            bodies.append(view_body(item, view_id))
            renders.append([view_id, item.component])
        else:
            caption, body = item
            caption_html = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
            bodies.append(f'<figure class="mechlab-view">{caption_html}{body}</figure>')
    script = ""
    if renders:
        script = (
            f"<script>{circuitsvis_bundle()}</script>\n<script>{RENDER_JS}\n"
            f"for (const [id, component] of {json_for_script(renders)}) "
            "mechlabRender(CircuitsVis, id, component);\n</script>"
        )
    content = "\n".join(bodies) + "\n" + script
    heading = f"<h1>{html.escape(title)}</h1>" if title else ""
    if contents:
        heading += contents_html(contents)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title or 'mechlab')}</title><style>{PAGE_STYLE}</style></head>\n"
        f"<body>{heading}\n{content}\n</body></html>\n"
    )


@functools.lru_cache(maxsize=1)
def circuitsvis_bundle_gzip_base64() -> str:
    """The bundle gzipped and base64-encoded (about 0.48 MB of text instead of 1.3 MB)."""
    raw = (Path(circuitsvis.__file__).parent / "dist" / "cdn" / "iife.js").read_bytes()
    return base64.b64encode(gzip.compress(raw, compresslevel=9, mtime=0)).decode("ascii")


# Loads the bundle at most once per page: the first view to run inflates it and runs it as a
# script; every other view waits for the same promise. A failure is forgotten so a re-run retries.
LOADER_JS = """
(() => {
  const id = %s, component = %s;
  if (!window.mechlabCircuitsVis) {
    window.mechlabCircuitsVis = (async () => {
      if (window.CircuitsVis) return window.CircuitsVis;
      const packed = document.getElementById(id + '-bundle').textContent;
      const bytes = Uint8Array.from(atob(packed), (c) => c.charCodeAt(0));
      const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream('gzip'));
      const script = document.createElement('script');
      script.textContent = await new Response(stream).text();
      document.head.appendChild(script);
      return window.CircuitsVis;
    })();
    window.mechlabCircuitsVis.catch(() => { window.mechlabCircuitsVis = undefined; });
  }
  window.mechlabCircuitsVis.then((CircuitsVis) => mechlabRender(CircuitsVis, id, component));
})();
"""


def notebook_html(view: "View") -> str:
    """A view as a notebook output: a static fallback, the gzipped bundle, the props and a loader.
    Element ids are unique per display, since a notebook shows many outputs in one document."""
    view_id = f"mechlab-{uuid.uuid4().hex[:12]}"
    loader = LOADER_JS % (json.dumps(view_id), json.dumps(view.component))
    return (
        f'<div class="mechlab">{view_body(view, view_id, fallback=True)}\n'
        f'<script type="application/octet-stream" id="{view_id}-bundle">'
        f"{circuitsvis_bundle_gzip_base64()}</script>\n"
        f"<script>{RENDER_JS}\n{loader}</script></div>"
    )


FALLBACK_HINT = "Interactive view: trust this notebook or re-run the cell."


def static_fallback(view: "View", view_id: str) -> str:
    """What a reader sees where scripts do not run: the hint, and for attention views a picture
    of each head's pattern with the heads and tokens named in text."""
    parts = [f"<p><b>{FALLBACK_HINT}</b> Below is a static picture.</p>"]
    attention = view.props.get("attention")
    if view.component == "AttentionHeads" and attention:
        names = view.props.get("attentionHeadNames") or [f"head {i}" for i in range(len(attention))]
        png = base64.b64encode(patterns_png(attention)).decode("ascii")
        parts.append(
            f'<img alt="attention patterns of {html.escape(", ".join(names))}" '
            f'src="data:image/png;base64,{png}">'
        )
        tokens = " | ".join(html.escape(t) for t in view.props.get("tokens", []))
        parts.append(
            f"<p>Heads, left to right: {html.escape(', '.join(names))}. Rows are query tokens, "
            f"columns key tokens (darker: more attention). Tokens: {tokens}</p>"
        )
    return f'<div class="mechlab-fallback" id="{view_id}-fallback">{"".join(parts)}</div>'


def patterns_png(attention: list) -> bytes:
    """Attention patterns ([head][query][key] in [0, 1]) side by side as one RGB PNG, white to dark
    blue, the masked future light grey. Written directly (zlib), so a display costs milliseconds."""
    patterns = torch.tensor(attention, dtype=torch.float32)
    _heads, pos, _ = patterns.shape
    scale = max(1, 160 // max(pos, 1))
    gap = 4
    white = torch.tensor([255.0, 255.0, 255.0])
    dark = torch.tensor([8.0, 48.0, 107.0])
    future = torch.ones(pos, pos, dtype=torch.bool).triu(1)
    tiles = []
    for head in patterns:
        rgb = white + head.clamp(0, 1)[..., None] * (dark - white)
        rgb[future] = torch.tensor([235.0, 235.0, 235.0])
        rgb = rgb.repeat_interleave(scale, 0).repeat_interleave(scale, 1)
        tiles += [rgb, white.expand(pos * scale, gap, 3)]
    image = torch.cat(tiles[:-1], dim=1).round().to(torch.uint8)
    height, width, _ = image.shape
    rows = torch.cat([torch.zeros(height, 1, dtype=torch.uint8), image.reshape(height, -1)], dim=1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows.numpy().tobytes(), 6))
        + chunk(b"IEND", b"")
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
            tip = "<br>".join(
                f"{html.escape(repr(t))} {p:.3f}" for t, p in zip(tokens, probs, strict=True)
            )
            cells.append(
                f'<td style="background: rgb({shade},{shade},255)">{html.escape(tokens[0][:12])}'
                f'<span class="tip">{tip}</span></td>'
            )
        rows.append(f"<tr><th>{html.escape(result.layers[row])}</th>{''.join(cells)}</tr>")
    return (
        f'{LENS_STYLE}<table class="mechlab-lens"><tr><th></th>{head}</tr>{"".join(rows)}'
        f"<tr><th></th>{head}</tr></table>"
    )


# --------------------------------------------------------------------------------------------------
# Result objects in notebooks: compact tables, readable even when a notebook strips styles


def lens_summary_html(result, max_positions: int = 12) -> str:
    """The lens as a table: output row first, the last `max_positions` positions, each cell its
    top-1 token and probability."""
    first = max(0, len(result.token_strs) - max_positions)
    positions = range(first, len(result.token_strs))
    head = "".join(f"<th>{html.escape(repr(result.token_strs[p]))}</th>" for p in positions)
    rows = []
    for row in reversed(range(len(result.layers))):
        cells = []
        for p in positions:
            prob = result.top_probs[row, p, 0].item()
            token = html.escape(repr(result.top_tokens[row][p][0]))
            shade = int(255 - 155 * prob)
            cells.append(
                f'<td style="background-color: rgb({shade},{shade},255)">'
                f"{token} <small>{prob:.2f}</small></td>"
            )
        rows.append(f"<tr><th>{html.escape(result.layers[row])}</th>{''.join(cells)}</tr>")
    note = f"<p>{html.escape(repr(result))}</p>"
    return f"{note}<table><tr><th>row</th>{head}</tr>{''.join(rows)}</table>"


def head_scan_html(scan, threshold: float | None = None) -> str:
    """Induction scores as a layers x heads table (heads above the threshold in bold), with the
    top heads of the other scores and the in-context loss."""
    from mechlab.defaults import INDUCTION_THRESHOLD

    threshold = INDUCTION_THRESHOLD if threshold is None else threshold
    values = scan.score("induction")
    head = "".join(f"<th>H{h}</th>" for h in range(scan.n_heads))
    rows = []
    for layer in range(scan.n_layers):
        cells = "".join(
            f"<td><b>{v:.2f}</b></td>" if v > threshold else f"<td>{v:.2f}</td>"
            for v in values[layer].tolist()
        )
        rows.append(f"<tr><th>L{layer}</th>{cells}</tr>")
    tops = "".join(
        f"<li>{name.replace('_', ' ')}: " + scored_heads_label(scan.top(name, 3)) + "</li>"
        for name in ["previous_token", "duplicate_token", "copying"]
    )
    return (
        f"<p>{html.escape(repr(scan))}; loss {scan.loss_first_half:.2f} on the first copy, "
        f"{scan.loss_second_half:.2f} on the repeat.</p><ul>{tops}</ul>"
        f"<p>Induction scores (bold: above {threshold}):</p>"
        f"<table><tr><th></th>{head}</tr>{''.join(rows)}</table>"
    )


def parity_html(report) -> str:
    """The verdict, and every component's errors in a collapsible table."""
    rows = "".join(
        f"<tr><td>{html.escape(c.name)}</td><td>{c.max_abs_err:.2e}</td>"
        f"<td>{c.max_rel_err:.2e}</td><td>{'ok' if c.passed else '<b>FAIL</b>'}</td></tr>"
        for c in report.components
    )
    verdict = (
        "all components agree" if report.passed else f"first difference at {report.first_failure}"
    )
    if report.problem:
        return f"<p><b>FAILED</b>: {html.escape(report.problem)}</p>"
    if report.hint:
        verdict += f"; hint: {report.hint}"
    return (
        f"<p><b>{html.escape(verdict)}</b> (atol={report.atol}, rtol={report.rtol}, against "
        f"{html.escape(report.reference)})</p><details><summary>all {len(report.components)} "
        "components</summary><table><tr><th>component</th><th>max abs err</th>"
        f"<th>max rel err</th><th></th></tr>{rows}</table></details>"
    )


GRID_STYLE = "border-collapse: collapse; font-family: monospace; font-size: 10px"  # inline: the
# notebook keeps it, and without it the table still reads


def diverging_colour(value: float, limit: float) -> str:
    """White at 0, red at +limit, blue at -limit (the figures' RdBu_r), as a CSS colour."""
    t = max(-1.0, min(1.0, value / limit)) if limit > 0 else 0.0
    target = (178, 24, 43) if t > 0 else (33, 102, 172)
    r, g, b = (round(255 + (c - 255) * abs(t)) for c in target)
    return f"rgb({r},{g},{b})"


def grid_table_html(values, row_labels, col_labels, *, limit: float, fmt: str = "{:.2f}") -> str:
    """A heatmap as an HTML table: each cell shows its value, coloured on a diverging scale, and
    names its row and column on hover."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in col_labels)
    rows = []
    for row_label, row in zip(row_labels, values.tolist(), strict=True):
        cells = "".join(
            f'<td style="background:{diverging_colour(v, limit)}" '
            f'title="{html.escape(f"{row_label} / {col}: {v:.4f}")}">{fmt.format(v)}</td>'
            for col, v in zip(col_labels, row, strict=True)
        )
        rows.append(f"<tr><th>{html.escape(str(row_label))}</th>{cells}</tr>")
    body = f"<tr><th></th>{head}</tr>{''.join(rows)}"
    return f'<table class="mechlab-grid" style="{GRID_STYLE}">{body}</table>'


def patch_grid_html(result) -> str:
    """The patching grid as a table (hover a cell for its row, column and value), with the top
    cells listed above it."""
    top = ", ".join(f"{row} / {col}: {value:.2f}" for row, col, value in result.top(5))
    limit = max(1.0, float(result.grid.abs().max()))
    return (
        f"<p>{html.escape(repr(result))}</p><p>Largest cells: {html.escape(top)}</p>"
        + grid_table_html(result.grid, result.row_labels, result.col_labels, limit=limit)
    )


def dla_html(result) -> str:
    """The headline numbers, the top heads, and the layers x heads contributions as a table."""
    top = scored_heads_label(result.top_heads(5), "+.2f")
    n_layers, n_heads = result.heads.shape
    limit = max(float(result.heads.abs().max()), 1e-6)
    return (
        f"<p>{html.escape(repr(result))}</p><p>{html.escape(result.what)} = {result.total:.3f}: "
        f"embeddings {result.embed:+.3f}, heads {result.heads.sum():+.3f}, attention biases "
        f"{result.attn_bias.sum():+.3f}, MLPs {result.mlps.sum():+.3f}, unembedding bias "
        f"{result.unembed_bias:+.3f}.</p><p>Top heads: {html.escape(top)}</p>"
        + grid_table_html(
            result.heads,
            [f"L{layer}" for layer in range(n_layers)],
            [f"H{head}" for head in range(n_heads)],
            limit=limit,
            fmt="{:+.2f}",
        )
    )


def ablation_html(study) -> str:
    """Each ablation of a study as a table row: which heads, the second-half loss, its rise."""

    rows = "".join(
        f"<tr><td>{row['kind']}</td><td>"
        + html.escape(heads_label(row["heads"]))
        + f"</td><td>{row['loss_second_half']:.3f}</td><td>{row['delta']:+.3f}</td></tr>"
        for row in study.to_json()
    )
    return (
        f"<p>{html.escape(repr(study))}</p><table><tr><th>ablated</th><th>heads</th>"
        f"<th>second-half loss</th><th>delta</th></tr>{rows}</table>"
    )


def visible_token(token: str) -> str:
    """A token as text on a page: newlines and tabs shown as \\n and \\t, other control characters
    as \\xNN (the page escapes it as HTML afterwards)."""
    text = token.replace("\n", "\\n").replace("\t", "\\t")
    return "".join(c if c.isprintable() or c == " " else f"\\x{ord(c):02x}" for c in text)


def attribution_html(results: list) -> str:
    """Token attributions as a table readable without scripts: one row per method, the prompt's
    tokens shaded by score (red supports the answer, blue opposes it; each row scaled to its own
    largest |score|, since methods have different units), hover a token for its value."""
    first = results[0]
    rows = []
    for result in results:
        limit = max(float(result.ranked.abs().max()), 1e-12)
        cells = []
        for position, (token, score) in enumerate(
            zip(result.tokens, result.scores.tolist(), strict=True)
        ):
            kept = result.kept_bos and position == 0
            colour = "#eeeeee" if kept else diverging_colour(score, limit)
            tip = f"{position}: {token!r} {score:+.4g}" + (
                " (BOS, kept by the baseline)" if kept else ""
            )
            cells.append(
                f'<span style="background:{colour}; white-space:pre; padding:0 1px" '
                f'title="{html.escape(tip)}">{html.escape(visible_token(token))}</span>'
            )
        extra = ""
        if result.relative_delta is not None:
            extra = f" (completeness gap {result.relative_delta:.1%})"
        rows.append(
            f"<tr><th style='text-align:left'>{html.escape(result.method)}"
            f"{html.escape(extra)}</th><td>{''.join(cells)}</td></tr>"
        )
    return (
        f"<p>{html.escape(first.model)}: attribution of {html.escape(first.what)} = "
        f"{first.target:.3f} at the last position to each token of the prompt.</p>"
        f'<table class="mechlab-attribution" style="font-family: monospace; font-size: 13px">'
        f"{''.join(rows)}</table>"
    )


def sequential_colour(value: float, limit: float) -> str:
    """White at 0, dark orange at `limit`, as a CSS colour."""
    t = max(0.0, min(1.0, value / limit)) if limit > 0 else 0.0
    r, g, b = (round(255 + (c - 255) * t) for c in (217, 72, 1))
    return f"rgb({r},{g},{b})"


# moved to mechlab.present.circuits (the old paths still work)
__getattr__ = moved_names(
    __name__,
    dict.fromkeys(
        ["circuits_html", "compositions_table_html", "layer_pairs_html"],
        "mechlab.present.circuits",
    ),
)
