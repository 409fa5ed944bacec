"""The user's own text: local files, a dataset saved with `datasets`, or a Hugging Face dataset.

| spec | documents |
|---|---|
| `notes.txt` | each paragraph (text between blank lines) |
| a directory of `.txt` files | each file, in name order (subdirectories included) |
| `data.jsonl` | each line, a JSON object; its `text` field (`text_column` to choose another) |
| `data.parquet` | each row's `text` column |
| a directory saved by `datasets.save_to_disk` | each row (a DatasetDict: its "train" split) |
| `hf:NAME[:CONFIG][:SPLIT]` | each row of the split (default "train") |

A Hugging Face dataset is streamed from the hub when it can be reached, else read from the local
Hugging Face cache.

The split into training and held-out documents is by a hash of each document's text, so the same
text is split the same way whatever format it came in. Everything is checked before it is used:
a missing path, an empty or binary file, a line that is not JSON, a missing column, or more than
MAX_BYTES of text without a token budget is one line (InputError), before any model loads.
"""

import hashlib
import json
import os
import socket
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from mechlab.corpus.documents import Corpus, Document, documents_sha256
from mechlab.errors import InputError

MAX_BYTES = 1 << 30  # more text than this needs a token budget (--tokens)
BYTES_PER_TOKEN = 16  # with a budget, read at most this many bytes per token asked for (English
# runs at about 4.5 bytes per token in the models mechlab loads: room to spare)
LICENSE = "the user's own text"
HUB = ("huggingface.co", 443)


def read_limit(tokens: int | None) -> int | None:
    return None if tokens is None else tokens * BYTES_PER_TOKEN


def local_corpus(spec: str, *, text_column: str = "text", tokens: int | None = None) -> Corpus:
    """The documents at the local path `spec` (see the module docstring)."""
    path = Path(spec).expanduser()
    if not path.exists():
        raise InputError(
            f"corpus path {spec} does not exist: give a .txt file, a directory of .txt files, a "
            ".jsonl or .parquet file, a directory saved by datasets.save_to_disk, hf:NAME, or "
            "a built-in corpus (wikipedia, english)"
        )
    if path.is_dir() and ((path / "dataset_dict.json").exists() or (path / "state.json").exists()):
        texts = saved_dataset_texts(path, text_column)
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise InputError(f"the directory {spec} holds no .txt files")
        check_size(spec, sum(f.stat().st_size for f in files), tokens)
        texts = (read_text(f, read_limit(tokens)) for f in files)
    elif path.suffix == ".txt":
        check_size(spec, path.stat().st_size, tokens)
        texts = iter(read_text(path, read_limit(tokens)).split("\n\n"))
    elif path.suffix == ".jsonl":
        check_size(spec, path.stat().st_size, tokens)
        texts = jsonl_texts(path, text_column)
    elif path.suffix == ".parquet":
        check_size(spec, path.stat().st_size, tokens)
        texts = parquet_texts(path, text_column)
    else:
        raise InputError(
            f"corpus path {spec} is not a .txt, .jsonl or .parquet file, nor a directory: "
            "convert it to one of these"
        )
    return corpus_of(str(path.resolve()), texts, tokens)  # absolute: a later command finds it


def corpus_of(name: str, texts: Iterable[str], tokens: int | None) -> Corpus:
    """The documents of `texts` (blank ones skipped), up to read_limit(tokens) bytes."""
    limit = read_limit(tokens)
    documents, size = [], 0
    for text in texts:
        text = text.strip()
        if not text:
            continue
        documents.append(Document(hashlib.sha256(text.encode()).hexdigest()[:16], text, True))
        size += len(text.encode())
        if limit is not None and size >= limit:
            break
        if limit is None and size > MAX_BYTES:
            raise InputError(f"{name} holds more than {MAX_BYTES >> 30} GB of text: {BUDGET_HINT}")
    if not documents:
        raise InputError(f"{name} holds no text")
    return Corpus(name, tuple(documents), documents_sha256(documents), license=LICENSE, spec=name)


BUDGET_HINT = "give a token budget (--tokens N) so that only what is needed is read"


def check_size(spec: str, size: int, tokens: int | None) -> None:
    if size == 0:
        raise InputError(f"{spec} is empty")
    if tokens is None and size > MAX_BYTES:
        raise InputError(f"{spec} holds {size / 1e9:.1f} GB of text: {BUDGET_HINT}")


def read_text(path: Path, limit: int | None = None) -> str:
    """The file's text, or its first `limit` bytes cut at the last line break (so that no
    character is cut in two) when it is longer."""
    with open(path, "rb") as f:
        data = f.read() if limit is None else f.read(limit + 1)
    if limit is not None and len(data) > limit:
        data = data[: data.rfind(b"\n", 0, limit) + 1 or limit]
    if b"\0" in data[:65536]:
        raise InputError(f"{path} is a binary file, not text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InputError(
            f"{path} is not UTF-8 text ({error.reason} at byte {error.start})"
        ) from None


def jsonl_texts(path: Path, column: str) -> Iterator[str]:
    with open(path, "rb") as f:
        head = f.read(65536)
    if b"\0" in head:
        raise InputError(f"{path} is a binary file, not JSON lines")
    with open(path, encoding="utf-8", errors="strict") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise InputError(f"line {number} of {path} is not JSON ({error.msg})") from None
            yield column_text(record, column, f"line {number} of {path}")


def column_text(record: Any, column: str, where: str) -> str:
    if not isinstance(record, dict) or column not in record:
        fields = ", ".join(map(str, record)) if isinstance(record, dict) else "none: not an object"
        raise InputError(
            f"{where} has no {column!r} field (its fields: {fields}); choose one with --text-column"
        )
    value = record[column]
    if not isinstance(value, str):
        raise InputError(f"{where}: {column!r} is a {type(value).__name__}, not text")
    return value


def parquet_texts(path: Path, column: str) -> Iterator[str]:
    import pyarrow.parquet as parquet

    try:
        file = parquet.ParquetFile(path)
    except Exception as error:  # pyarrow's errors name the problem: no footer, not Parquet
        raise InputError(f"{path} is not a Parquet file ({error})") from None
    names = file.schema_arrow.names
    if column not in names:
        raise InputError(
            f"{path} has no column {column!r} (its columns: {', '.join(names)}); choose one "
            "with --text-column"
        )
    for batch in file.iter_batches(columns=[column], batch_size=1024):
        for value in batch.column(0).to_pylist():
            if value is not None and not isinstance(value, str):
                raise InputError(
                    f"{path}: column {column!r} holds {type(value).__name__}, not text"
                )
            yield value or ""


def import_datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise InputError(
            "reading a saved or Hugging Face dataset needs the datasets package: "
            "pip install 'mechlab[text]'"
        ) from None
    return datasets


def saved_dataset_texts(path: Path, column: str) -> Iterator[str]:
    datasets = import_datasets()
    dataset = datasets.load_from_disk(str(path))
    if isinstance(dataset, datasets.DatasetDict):
        split = "train" if "train" in dataset else next(iter(dataset))
        dataset = dataset[split]
    return rows_texts(dataset, column, str(path))


def rows_texts(rows: Iterable[dict[str, Any]], column: str, where: str) -> Iterator[str]:
    for number, row in enumerate(rows, 1):
        yield column_text(row, column, f"row {number} of {where}")


def hub_reachable(timeout: float = 3.0) -> bool:
    try:
        socket.create_connection(HUB, timeout=timeout).close()
        return True
    except OSError:
        return False


def dataset_corpus(spec: str, *, text_column: str = "text", tokens: int | None = None) -> Corpus:
    """`hf:NAME[:CONFIG][:SPLIT]`: the split streamed from the hub, or read from the local Hugging
    Face cache when the hub cannot be reached (decided in at most 3 s, not after minutes of
    retries)."""
    parts = spec.removeprefix("hf:").split(":")
    if not parts[0] or len(parts) > 3:
        raise InputError(f"{spec} is not hf:NAME[:CONFIG][:SPLIT]")
    name = parts[0]
    config = parts[1] if len(parts) > 1 and parts[1] else None
    split = parts[2] if len(parts) > 2 and parts[2] else "train"
    datasets = import_datasets()
    online = os.environ.get("HF_HUB_OFFLINE", "0") in ("0", "") and hub_reachable()
    try:
        if not online:
            import datasets.config as datasets_config
            import huggingface_hub.constants as hub_constants

            saved = hub_constants.HF_HUB_OFFLINE, datasets_config.HF_HUB_OFFLINE
            hub_constants.HF_HUB_OFFLINE = datasets_config.HF_HUB_OFFLINE = True
        try:
            rows = datasets.load_dataset(name, config, split=split, streaming=online)
        finally:
            if not online:
                hub_constants.HF_HUB_OFFLINE, datasets_config.HF_HUB_OFFLINE = saved
    except Exception as error:  # datasets raises many kinds; its message names the dataset
        where = "the hub" if online else "the local Hugging Face cache (the hub cannot be reached)"
        raise InputError(
            f"could not load {spec} from {where}: {type(error).__name__}: {error}. Offline, save "
            "it with datasets' save_to_disk on a machine that is online and give that directory"
        ) from None
    return corpus_of(spec, rows_texts(rows, text_column, spec), tokens)
