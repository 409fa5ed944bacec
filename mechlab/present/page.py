"""The machinery every page and view shares: a `View` (one circuitsvis component and its props),
self-contained offline pages (`render_page`, `save_html`: the circuitsvis bundle embedded once,
every prop escaped), notebook display with a static fallback, the colours and grids of HTML
tables, and the `Files` a command writes (`declared`: the names checked before work are the names
written).

Interactive views (circuitsvis) for notebooks and for self-contained offline HTML pages.

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
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import circuitsvis
import torch
from torch import Tensor

from mechlab.io import write_text

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


def circuitsvis_bundle() -> str:
    """circuitsvis's browser bundle, from its installed wheel, made safe to sit inside <script>."""
    path = Path(circuitsvis.__file__).parent / "dist" / "cdn" / "iife.js"
    # "</script" inside the bundle (it occurs in a string literal) would end our script element;
    # "<\/script" is the same JavaScript string. Likewise "<!--" could switch the HTML parser's
    # state.
    return (
        path.read_text(encoding="utf-8").replace("</script", "<\\/script").replace("<!--", "<\\!--")
    )


def json_for_script(data: object) -> str:
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


def save_html(views: View | Iterable, path: str | Path, *, title: str | None = None) -> Path:
    """Write one self-contained offline HTML page holding all `views` (a View or a list of them,
    possibly mixed with (caption, html) pairs), with the circuitsvis bundle embedded once."""
    items = [views] if isinstance(views, View) else list(views)
    return write_text(path, render_page(items, title=title))


GRID_STYLE = "border-collapse: collapse; font-family: monospace; font-size: 10px"  # inline: the


def diverging_colour(value: float, limit: float) -> str:
    """White at 0, red at +limit, blue at -limit (the figures' RdBu_r), as a CSS colour."""
    t = max(-1.0, min(1.0, value / limit)) if limit > 0 else 0.0
    target = (178, 24, 43) if t > 0 else (33, 102, 172)
    r, g, b = (round(255 + (c - 255) * abs(t)) for c in target)
    return f"rgb({r},{g},{b})"


def grid_table_html(
    values: Tensor,
    row_labels: list[str],
    col_labels: list[str],
    *,
    limit: float,
    fmt: str = "{:.2f}",
) -> str:
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


def visible_token(token: str) -> str:
    """A token as text on a page: newlines and tabs shown as \\n and \\t, other control characters
    as \\xNN (the page escapes it as HTML afterwards)."""
    text = token.replace("\n", "\\n").replace("\t", "\\t")
    return "".join(c if c.isprintable() or c == " " else f"\\x{ord(c):02x}" for c in text)


def sequential_colour(value: float, limit: float) -> str:
    """White at 0, dark orange at `limit`, as a CSS colour."""
    t = max(0.0, min(1.0, value / limit)) if limit > 0 else 0.0
    r, g, b = (round(255 + (c - 255) * t) for c in (217, 72, 1))
    return f"rgb({r},{g},{b})"


Files = dict[str, bytes | str]  # file name (relative to the output directory) -> content


def declared(files: Files, names: list[str]) -> Files:
    """`files`, after checking that they are exactly the `names` declared for them: the CLI checks
    the declared names before any work, so a builder that wrote another file would write a target
    never checked (a programming error, not the user's)."""
    if set(files) != set(names):
        raise RuntimeError(
            f"files built {sorted(files)} differ from the files declared {sorted(names)}"
        )
    return files


def model_files(spec: str, files: Files, *, several: bool) -> Files:
    """A model's files under ``<model slug>/`` when several models share the output directory."""
    from mechlab.io import model_slug

    prefix = f"{model_slug(spec)}/" if several else ""
    return {prefix + name: content for name, content in files.items()}


def image_html(png: bytes, alt: str) -> str:
    """An <img> holding the PNG itself (a data URI), so a page needs no other file."""
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<img class="mechlab-figure" alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'
    )


def safetensors_bytes(tensors: dict, metadata: dict | None = None) -> bytes:
    from safetensors.torch import save

    return save(tensors, metadata=metadata)
