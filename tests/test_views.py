"""Attention views: rendered in real headless Chromium, offline, safe for any text; the bundle
appears once per page; static PNGs; bad input."""

import argparse
import re

import pytest
from chromium import render

from mechlab import InputError, load_model
from mechlab.analysis.tokens import token_strings
from mechlab.cli import heads_list, main
from mechlab.present.page import (
    FALLBACK_HINT,
    MAX_VIEW_TOKENS,
    View,
    circuitsvis_bundle,
    circuitsvis_bundle_gzip_base64,
    patterns_png,
    save_html,
)
from mechlab.workflows.attention import attention_view, plot_attention

HOSTILE = [
    "</script>",
    "<script>document.title='pwned'</script>",
    "<!--",
    "-->",
    '"quoted"',
    "back\\slash",
    "<img src=x onerror=\"document.title='pwned'\">",
    "emoji 😀🧠",
    "漢字テキスト",
    "\u2028line sep",
]


@pytest.fixture(scope="module")
def tiny():
    return load_model("random:tiny")


def bundle_marker() -> str:
    """A distinctive run of the circuitsvis bundle, to count how often a page embeds it."""
    return circuitsvis_bundle()[1000:1100]


@pytest.mark.browser
def test_page_renders_offline_in_chromium(tiny, tmp_path):
    prompt = "The cat sat on the mat"
    path = save_html(
        [attention_view(tiny, prompt, layer=1)], tmp_path / "page.html", title="attention"
    )
    page = render(path)
    for head in range(4):
        assert f"L1H{head}" in page.text
    strings = token_strings(tiny, tiny.to_tokens(prompt)[0])
    assert all(s in page.text for s in strings if s.strip())
    assert page.page_requests == []
    html = path.read_text()
    assert not re.search(r"(src|href)=[\"']?(https?:)?//", html)  # no network reference at all
    assert "unpkg.com" not in html


@pytest.mark.browser
def test_the_request_checker_sees_a_page_request(tmp_path):
    """The checker can fail: a page that loads an image from the network is caught."""
    path = tmp_path / "leaky.html"
    path.write_text(
        '<!DOCTYPE html><html><body><img src="http://leak.invalid/pixel.png"></body></html>'
    )
    assert render(path).page_requests == ["http://leak.invalid/pixel.png"]


@pytest.mark.browser
def test_hostile_token_text_renders_as_text(tmp_path):
    view = View(
        "AttentionHeads",
        {
            "attention": [[[1.0 if k == 0 else 0.0 for k in range(len(HOSTILE))] for _ in HOSTILE]],
            "tokens": HOSTILE,
            "attentionHeadNames": ["L0H0"],
            "maskUpperTri": True,
        },
        caption="hostile </script> caption <b>bold?</b>",
    )
    path = save_html(
        [view], tmp_path / "hostile.html", title="</title><script>document.title='pwned'</script>"
    )
    page = render(path)
    assert "pwned" not in re.search(r"<title>(.*?)</title>", page.dom, re.S).group(1).replace(
        "document.title='pwned'", ""
    )
    for token in HOSTILE:
        assert token in page.text, token
    assert "hostile </script> caption <b>bold?</b>" in page.text  # the caption is text too
    assert page.page_requests == []


@pytest.mark.browser
def test_hostile_prompt_through_a_model(tiny, tmp_path):
    prompt = "a </script><script>document.title='pwned'</script> <!-- --> \" \\ 😀 漢字"
    path = save_html(attention_view(tiny, prompt, layer=0), tmp_path / "prompt.html", title="ok")
    page = render(path)
    assert "<title>ok</title>" in page.dom
    assert "L0H0" in page.text


def test_bundle_once_per_page_with_several_views(tiny, tmp_path):
    views = [
        attention_view(tiny, "one two", layer=0),
        attention_view(tiny, "three four", layer=1),
        attention_view(tiny, "five", layer=0, heads=[1]),
    ]
    html = save_html(views, tmp_path / "three.html").read_text()
    assert html.count(bundle_marker()) == 1
    assert html.count('type="application/json"') == 3


def test_notebook_display_is_self_contained_with_unique_ids(tiny):
    view = attention_view(tiny, "notebook", layer=0)
    first, second = view._repr_html_(), view._repr_html_()
    assert circuitsvis_bundle_gzip_base64() in first and "unpkg" not in first
    assert bundle_marker() not in first  # the plain bundle is not there: the gzipped one is
    ids = [re.findall(r'id="(mechlab-[0-9a-f]{12})"', html) for html in (first, second)]
    assert ids[0] and ids[0] != ids[1]
    assert FALLBACK_HINT in first and 'src="data:image/png;base64,' in first


def test_view_repr_is_one_line_and_short(tiny):
    view = attention_view(tiny, "x" * 200, layer=1)
    for text in (repr(view), str(view)):
        assert text == "View(AttentionHeads of L1H0, L1H1, L1H2, L1H3 on 201 tokens)"


def test_gzipped_bundle_is_the_bundle():
    import base64
    import gzip

    packed = base64.b64decode(circuitsvis_bundle_gzip_base64())
    assert len(packed) < 0.4e6
    text = gzip.decompress(packed).decode()
    assert text.replace("</script", "<\\/script").replace("<!--", "<\\!--") == circuitsvis_bundle()


def test_patterns_png_is_a_valid_picture_of_the_heads():
    import io

    from matplotlib.image import imread

    attention = [[[1.0, 0.0], [0.5, 0.5]], [[1.0, 0.0], [0.0, 1.0]]]
    image = imread(io.BytesIO(patterns_png(attention)), format="png")
    scale = 160 // 2
    assert image.shape == (2 * scale, 2 * 2 * scale + 4, 3)
    assert image[0, 0].sum() < image[0, -1].sum() / 2 or image[0, 0, 0] < 0.1  # attended: dark
    assert abs(image[0, scale + 1, 0] - 235 / 255) < 1e-6  # the masked future: light grey


def test_long_prompts_show_a_window():
    model = load_model("random:tiny", n_ctx=512)
    with pytest.warns(UserWarning, match=f"last {MAX_VIEW_TOKENS}"):
        view = attention_view(model, "x" * 400, layer=0, heads=[0])
    assert len(view.props["tokens"]) == MAX_VIEW_TOKENS and view.notes


def test_plot_attention_has_a_panel_per_head(tiny, tmp_path):
    figure = plot_attention(tiny, "The cat sat", layer=1, heads=[0, 3])
    titles = [ax.get_title() for ax in figure.axes if ax.get_title()]
    assert titles == ["L1H0", "L1H3"]


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(layer=2), "layer 2 is out of range.*0 .. 1"),
        (dict(layer=-1), "layer -1 is out of range"),
        (dict(layer=0, heads=[4]), "head 0.4 is out of range.*0 .. 3"),
    ],
)
def test_bad_layer_or_head(tiny, kwargs, message):
    with pytest.raises(InputError, match=message):
        attention_view(tiny, "text", **kwargs)
    with pytest.raises(InputError, match=message):
        plot_attention(tiny, "text", **kwargs)


def test_empty_prompt(tiny):
    with pytest.raises(InputError, match="prompt is empty"):
        attention_view(tiny, "  ", layer=0)


def test_parse_heads():
    assert heads_list("5.1, 5.5") == [(5, 1), (5, 5)]
    with pytest.raises(argparse.ArgumentTypeError, match=r"LAYER.HEAD"):
        heads_list("5")


def test_cli_writes_page_and_pngs(tmp_path):
    out = tmp_path / "out"
    assert (
        main(
            [
                "attention",
                "--model",
                "random:tiny",
                "--prompt",
                "Hello there",
                "--heads",
                "1.0,1.2,0.3",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "attention.html",
        "attention_L0.png",
        "attention_L1.png",
    ]
    html = (out / "attention.html").read_text()
    assert html.count(bundle_marker()) == 1 and "L1H2" in html and "L0H3" in html


@pytest.mark.parametrize(
    "args,message",
    [
        (["--layer", "7"], "layer 7 is out of range"),
        (["--heads", "0.9"], "head 0.9 is out of range"),
        (["--prompt", ""], "prompt is empty"),
    ],
)
def test_cli_bad_input_leaves_no_files(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    base = ["attention", "--model", "random:tiny", "--prompt", "hi", "--out", str(out)]
    assert main(base + args) == 2
    assert message in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def test_cli_unwritable_out(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert (
        main(
            ["attention", "--model", "random:tiny", "--prompt", "hi", "--out", str(blocker / "sub")]
        )
        == 2
    )
    assert "cannot write to output directory" in capsys.readouterr().err


def test_results_introduce_themselves_in_one_line_and_a_table(tiny):
    """repr() is one short line; _repr_html_ is a plain table, readable with styles stripped."""
    import mechlab
    from mechlab.scratch.parity import compare

    lens = mechlab.logit_lens(tiny, "The capital of France is", target=" ")
    scan = mechlab.scan_heads(tiny, seq_len=5, batch=2)
    parity = compare(mechlab.Transformer.from_hooked(tiny), tiny, tiny.to_tokens("hi"))
    for result, words in [
        (lens, ["LensResult(random:tiny", "3 rows x 25 positions"]),
        (scan, ["HeadScan(random:tiny", "best induction head"]),
        (parity, ["ParityReport(vs HookedTransformer", "passed"]),
    ]:
        text = repr(result)
        assert "\n" not in text and len(text) < 200 and all(word in text for word in words), text
        page = result._repr_html_()
        assert "<table>" in page and "<script" not in page and "<style" not in page
    assert "after L1 (output)" in lens._repr_html_() and "<th>L1</th>" in scan._repr_html_()
    assert "all components agree" in parity._repr_html_()
    # the causal checks' results
    study = mechlab.ablation_study(tiny, scan, 2)
    grid = mechlab.patch(tiny, "abcd", "abxd", answer="e", wrong="f", over="resid")
    dla = mechlab.logit_attribution(tiny, "abcd", answer="e")
    for result, words in [
        (study, ["AblationStudy(random:tiny", "the control"]),
        (study.joint, ["AblationResult(random:tiny", "second-half loss"]),
        (grid, ["PatchResult(random:tiny", "grid 2x5", "largest"]),
        (dla, ["AttributionResult(random:tiny", "largest head"]),
    ]:
        text = repr(result)
        assert "\n" not in text and len(text) < 250 and all(word in text for word in words), text
        page = result._repr_html_()
        assert "<script" not in page and "<style" not in page
    for result, cell in [(study, "<td>joint</td>"), (grid, 'title="L1 resid_pre / 2'), (dla, "L1")]:
        assert "<table" in result._repr_html_() and cell in result._repr_html_()
