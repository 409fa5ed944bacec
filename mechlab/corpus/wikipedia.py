"""The "wikipedia" source: the sample of the English Wikipedia that gensim ships as test data
(`enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2`: 206 pages of the April
2016 dump, of which 95 articles, from "Anarchism" and "Autism" to "Alkane", give 396,000 words of
prose, about 500,000 SmolLM2 tokens). It comes from PyPI inside one pinned gensim wheel (28 MB;
only this file is read, gensim is never installed or imported), checked by the wheel's SHA-256,
the file's and the cleaned text's. Wikipedia's text is CC BY-SA 3.0 (and GFDL); gensim is LGPL-2.1.

The wikitext is reduced to plain paragraphs: templates, tables, references, files, categories and
markup removed, links replaced by their text, headings and list items dropped; redirects and pages
under MIN_WORDS words are left out. The split into training and held-out documents is by a hash of
the title, the same on every machine.
"""

import bz2
import hashlib
import html
import io
import re
import xml.etree.ElementTree as ElementTree
import zipfile
from pathlib import Path

from mechlab.cache import PinnedWheel
from mechlab.corpus.documents import Document
from mechlab.errors import DataError

GENSIM_WHEEL = PinnedWheel(
    requirement="gensim==4.4.0",
    filename="gensim-4.4.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
    sha256="91a7fa5e814e7b1bad4b2dffa8d62c1e55410d5cbdf930714c1997ffb4404db8",
    # one platform's wheel, whatever this machine is: the file read from it is the same in all
    pip_args=(
        "--platform",
        "manylinux_2_28_x86_64",
        "--python-version",
        "3.11",
        "--implementation",
        "cp",
        "--abi",
        "cp311",
    ),
)
WIKI_MEMBER = (
    "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
)
WIKI_SHA256 = "a53f4648dec40467ebdcbc7a1307eddb51fe6e28e9309f6ebde81ba0d04bea2d"
# of the cleaned documents (documents_json): a change to the cleaning shows up here
DOCUMENTS_SHA256 = "beeca30f46de7a6693e598c1a556fb041dfb89e402bd219b32119797130d9c03"
MIN_WORDS = 200


def read_member(wheel: Path) -> bytes:
    return read_member_bytes(wheel.read_bytes())


def read_member_bytes(wheel: bytes) -> bytes:
    """The compressed dump inside gensim's wheel, checked by its SHA-256."""
    with zipfile.ZipFile(io.BytesIO(wheel)) as archive:
        data = archive.read(WIKI_MEMBER)
    digest = hashlib.sha256(data).hexdigest()
    if digest != WIKI_SHA256:
        raise DataError(
            f"{WIKI_MEMBER} in gensim's wheel has sha256 {digest}, expected {WIKI_SHA256}"
        )
    return data


def wikipedia_documents(compressed: bytes) -> list[Document]:
    """Every article of the dump with at least MIN_WORDS words of prose, in dump order."""
    root = ElementTree.fromstring(bz2.decompress(compressed))
    namespace = root.tag.split("}")[0] + "}" if root.tag.startswith("{") else ""
    documents = []
    for page in root.iter(f"{namespace}page"):
        title = page.findtext(f"{namespace}title") or ""
        wikitext = page.findtext(f"{namespace}revision/{namespace}text") or ""
        if page.findtext(f"{namespace}ns") != "0" or wikitext.lstrip().upper().startswith(
            "#REDIRECT"
        ):
            continue
        text = plain_text(wikitext)
        if len(text.split()) >= MIN_WORDS:
            documents.append(Document(title, text))
    return documents


def plain_text(wikitext: str) -> str:
    """Wikitext to plain paragraphs (see the module docstring)."""
    text = re.sub(r"<!--.*?-->", "", wikitext, flags=re.S)
    text = re.sub(r"<ref[^>/]*/>", "", text)
    text = re.sub(r"<ref[^>]*>.*?</ref>", "", text, flags=re.S)
    text = remove_balanced(text, "{{", "}}")  # templates (infoboxes, citations), nested
    text = remove_balanced(text, "{|", "|}")  # tables
    text = remove_balanced(text, "[[", "]]", only=re.compile(r"\[\[\s*[A-Za-z-]+\s*:"))  # files,
    # categories, other languages' links
    text = re.sub(r"\[\[(?:[^\]|]*\|)?([^\]]*)\]\]", r"\1", text)  # [[target|label]] -> label
    text = re.sub(r"\[https?://\S+\s+([^\]]*)\]", r"\1", text)  # [url label] -> label
    text = re.sub(r"\[https?://\S+\]", "", text)
    text = re.sub(r"'{2,}", "", text)  # bold and italics
    text = re.sub(r"<[^>]+>", "", text)  # what is left of HTML
    text = html.unescape(text)
    paragraphs = []
    for line in text.split("\n"):
        line = re.sub(r"\s+", " ", line).strip()
        if not line or line.startswith(("=", "*", "#", ":", ";", "|", "!")):
            continue  # headings, lists, indented and table leftovers
        if len(line.split()) >= 5:
            paragraphs.append(line)
    return "\n\n".join(paragraphs)


def remove_balanced(text: str, opening: str, closing: str, only: re.Pattern | None = None) -> str:
    """Remove every `opening` ... `closing` span, nested ones included; with `only`, just the
    outermost spans whose start matches it (and everything nested in them)."""
    out, depth, i, keep_from = [], 0, 0, 0
    removing = False
    while i < len(text):
        if text.startswith(opening, i):
            if depth == 0:
                removing = only is None or bool(only.match(text, i))
                if removing:
                    out.append(text[keep_from:i])
            depth += 1
            i += len(opening)
        elif text.startswith(closing, i) and depth:
            depth -= 1
            i += len(closing)
            if depth == 0 and removing:
                keep_from = i
                removing = False
        else:
            i += 1
    out.append(text[keep_from:] if not removing else "")
    return "".join(out)
