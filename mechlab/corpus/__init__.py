"""Text to learn from. Every command that learns from text (the tuned lens, neuron records, sparse
autoencoders) takes a corpus spec, and `load_corpus(spec)` turns each kind into the same `Corpus`
(documents, split into training and held-out text by a hash):

- a built-in corpus, assembled offline from pinned packages (`mechlab.corpus.builtin`):
  "wikipedia" (396,000 words) or "english" (about 6 million words, seven sources);
- a local path: a .txt file, a directory of .txt files, a .jsonl or .parquet file with a text
  column, a directory saved by `datasets.save_to_disk` (`mechlab.corpus.local`);
- `hf:NAME[:CONFIG][:SPLIT]`, a Hugging Face dataset, streamed.
"""

import dataclasses
from pathlib import Path

from mechlab.corpus.builtin import BUILTIN, brown_tagged_sentences, load_builtin
from mechlab.corpus.documents import HELD_OUT_PERCENT, Corpus, Document
from mechlab.corpus.local import dataset_corpus, local_corpus
from mechlab.corpus.wikipedia import WIKI_MEMBER, plain_text, read_member
from mechlab.errors import InputError

CORPORA = tuple(BUILTIN)
__all__ = [
    "CORPORA",
    "HELD_OUT_PERCENT",
    "WIKI_MEMBER",
    "Corpus",
    "Document",
    "brown_tagged_sentences",
    "load_corpus",
    "plain_text",
    "read_member",
]


def load_corpus(
    spec: str = "wikipedia",
    *,
    text_column: str = "text",
    tokens: int | None = None,
    held_out: str | None = None,
) -> Corpus:
    """The corpus `spec` (a built-in name, a local path or hf:NAME[:CONFIG][:SPLIT]). `tokens`
    bounds how much of the user's text is read (about 16 bytes per token: enough for any budget of
    that many tokens); `held_out`, another spec, holds the held-out documents instead of a tenth of
    `spec`'s. Bad input is an InputError of one line, raised before anything heavy happens."""
    if spec in BUILTIN:
        corpus = load_builtin(spec)
    elif spec.startswith("hf:"):
        corpus = dataset_corpus(spec, text_column=text_column, tokens=tokens)
    elif Path(spec).expanduser().exists() or "/" in spec or Path(spec).suffix:
        corpus = local_corpus(spec, text_column=text_column, tokens=tokens)
    else:
        raise InputError(
            f"unknown corpus {spec!r}: choose one of {', '.join(BUILTIN)}, a path (a .txt file, a "
            "directory of .txt files, a .jsonl or .parquet file) or hf:NAME[:CONFIG][:SPLIT]"
        )
    if held_out is None:
        return corpus
    other = load_corpus(held_out, text_column=text_column)
    return dataclasses.replace(corpus, held_out_documents=other.documents)
