"""A corpus: documents, split into training and held-out text by a hash, the same on every machine.

Every kind of corpus (a built-in one, the user's files, a Hugging Face dataset) becomes the same
`Corpus`, so a command that learns from text never asks where the text came from.
"""

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

HELD_OUT_PERCENT = 10


def held_out_by_hash(key: str) -> bool:
    """In the held-out part: by the SHA-256 of `key`, HELD_OUT_PERCENT of the keys."""
    digest = hashlib.sha256(key.encode()).hexdigest()
    return int(digest[:8], 16) % 100 < HELD_OUT_PERCENT


@dataclass(frozen=True)
class Document:
    title: str
    text: str
    # the split is by a hash of the title (built-in corpora: each document has a stable name) or,
    # with by_text, of the text itself (the user's text: the same text is split the same way
    # whether it came as .txt files, JSONL lines, Parquet rows or a saved dataset)
    by_text: bool = field(default=False, compare=False)

    @property
    def held_out(self) -> bool:
        return held_out_by_hash(self.text if self.by_text else self.title)


@dataclass(frozen=True)
class Corpus:
    """Documents and where they came from. `train` and `held_out` are the documents' texts; with
    `held_out_documents` (the user's `--held-out PATH`) every document trains and those are held
    out instead."""

    name: str
    documents: tuple[Document, ...]
    sha256: str  # of the documents, as documents_json writes them
    license: str = ""
    spec: str = ""  # what load_corpus was given, so that a later command can load it again
    sources: tuple[dict[str, Any], ...] = ()  # built-in corpora: each source's package and counts
    held_out_documents: tuple[Document, ...] | None = None

    @property
    def train(self) -> list[str]:
        if self.held_out_documents is not None:
            return [d.text for d in self.documents]
        return [d.text for d in self.documents if not d.held_out]

    @property
    def held_out(self) -> list[str]:
        if self.held_out_documents is not None:
            return [d.text for d in self.held_out_documents]
        return [d.text for d in self.documents if d.held_out]

    def paragraphs(self, *, held_out: bool = False) -> list[str]:
        """The training (or held-out) documents' paragraphs, each one text."""
        texts = self.held_out if held_out else self.train
        return [p for text in texts for p in text.split("\n\n") if p.strip()]

    def __repr__(self) -> str:
        words = sum(len(d.text.split()) for d in self.documents)
        return (
            f"Corpus({self.name}: {len(self.documents):,} documents, {words:,} words, "
            f"{len(self.held_out):,} held out)"
        )

    def manifest(self) -> dict[str, Any]:
        """What a model trained on this text records about it."""
        manifest: dict[str, Any] = {
            "name": self.name,
            "spec": self.spec or self.name,
            "sha256": self.sha256,
            "license": self.license,
        }
        if self.sources:
            manifest["sources"] = [dict(source) for source in self.sources]
        if self.held_out_documents is not None:
            manifest["held_out_sha256"] = documents_sha256(self.held_out_documents)
        return manifest


def documents_json(documents: "list[Document] | tuple[Document, ...]") -> str:
    return json.dumps([{"title": d.title, "text": d.text} for d in documents], indent=0)


def documents_sha256(documents: "list[Document] | tuple[Document, ...]") -> str:
    return hashlib.sha256(documents_json(documents).encode()).hexdigest()


def word_count(documents: "list[Document] | tuple[Document, ...]") -> int:
    return sum(len(d.text.split()) for d in documents)
