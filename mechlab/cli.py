"""The `mechlab` command: one subcommand per capability. It parses arguments, calls the library,
and writes files; errors become one line on stderr and exit status 2."""

import argparse
import sys

from mechlab.errors import MechlabError
from mechlab.loading import DEFAULT_MODEL


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        return args.run(args) or 0
    except MechlabError as error:
        print(f"mechlab {args.command}: error: {error}", file=sys.stderr)
        return 2


def add_model_option(parser: argparse.ArgumentParser, *, repeatable: bool = False) -> None:
    if repeatable:
        parser.add_argument("--model", action="append", metavar="SPEC",
                            help=f"model spec, repeatable (default {DEFAULT_MODEL})")
    else:
        parser.add_argument("--model", default=DEFAULT_MODEL, metavar="SPEC", help=f"model spec (default {DEFAULT_MODEL})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mechlab", description=__doc__)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    models = commands.add_parser("models", help="list model specs and whether each loads offline now")
    models.set_defaults(run=run_models)

    predict = commands.add_parser("predict", help="print a model's top next tokens for a prompt")
    add_model_option(predict)
    predict.add_argument("--prompt", default="The capital of France is")
    predict.add_argument("--top-k", type=int, default=10)
    predict.set_defaults(run=run_predict)

    verify = commands.add_parser("verify", help="check the from-scratch Transformer against the library, component by component")
    add_model_option(verify)
    verify.add_argument("--prompt", default="The capital of France is", help="text to run both models on")
    verify.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    verify.set_defaults(run=run_verify)

    attention = commands.add_parser("attention", help="attention patterns as an offline HTML page and PNGs")
    add_model_option(attention)
    attention.add_argument("--prompt", required=True)
    attention.add_argument("--layer", type=int, nargs="+", action="extend", metavar="L",
                           help="layers to show, every head (default: every layer, unless --heads)")
    attention.add_argument("--heads", metavar="L.H,...", help="single heads to show, e.g. 5.1,5.5")
    attention.add_argument("--out", required=True, help="output directory")
    attention.set_defaults(run=run_attention)

    heads = commands.add_parser("heads", help="score every head (induction, previous-token, ...) on repeated random tokens")
    add_model_option(heads, repeatable=True)
    heads.add_argument("--seq-len", type=int, default=50, help="length of the random sequence r in [BOS] + r + r")
    heads.add_argument("--batch", type=int, default=10, help="number of random sequences")
    heads.add_argument("--seed", type=int, default=0)
    heads.add_argument("--threshold", type=float, default=0.4, help="induction score that counts as an induction head")
    heads.add_argument("--out", required=True, help="output directory")
    heads.set_defaults(run=run_heads)

    lens = commands.add_parser("lens", help="logit lens: decode every layer's residual stream")
    add_model_option(lens)
    source = lens.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt")
    source.add_argument("--prompts-file", metavar="FILE", help="one prompt per line: also per-layer curves over all")
    lens.add_argument("--target", help="a single token to follow through the layers, e.g. ' Paris'")
    lens.add_argument("--top-k", type=int, default=5)
    lens.add_argument("--include-mid", action="store_true", help="also decode between attention and MLP")
    lens.add_argument("--out", required=True, help="output directory")
    lens.set_defaults(run=run_lens)

    report = commands.add_parser("report", help="parity, logit lens, head scan and attention views on one offline page")
    add_model_option(report, repeatable=True)
    report.add_argument("--seq-len", type=int, default=50, help="head scan: length of r in [BOS] + r + r")
    report.add_argument("--batch", type=int, default=10, help="head scan: number of sequences")
    report.add_argument("--out", required=True, help="output directory")
    report.set_defaults(run=run_report)
    return parser


def run_report(args: argparse.Namespace) -> int:
    from mechlab.report import write_report

    specs = args.model or [DEFAULT_MODEL]
    page = write_report(specs, args.out, seq_len=args.seq_len, batch=args.batch)
    print(f"wrote {page}")
    return 0


def read_prompts(path: str) -> list[str]:
    from pathlib import Path

    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise MechlabError(f"cannot read prompts file {path!r}: {error}") from None
    prompts = [line for line in lines if line.strip()]
    if not prompts:
        raise MechlabError(f"no prompts in {path!r}: write one prompt per line")
    return prompts


def run_lens(args: argparse.Namespace) -> int:
    from rich.console import Console
    from tqdm.auto import tqdm

    from mechlab.io import ensure_writable_dir, figure_png, write_bytes, write_json
    from mechlab.lens import lens_curves, logit_lens
    from mechlab.loading import load_model
    from mechlab.plots import plot_lens_curves, plot_lens_kl, plot_lens_rank, plot_lens_top1
    from mechlab.present import lens_table
    from mechlab.views import lens_grid_html, save_html

    prompts = read_prompts(args.prompts_file) if args.prompts_file else [args.prompt]
    model = load_model(args.model)
    results = [logit_lens(model, prompt, target=args.target, top_k=args.top_k, include_mid=args.include_mid)
               for prompt in tqdm(prompts, desc="logit lens", disable=len(prompts) == 1, leave=False)]
    first = results[0]
    first.model = args.model
    Console().print(lens_table(first))
    report = first.to_json()
    # Figures become PNG bytes at once (an open matplotlib figure holds memory); files come last.
    figures = {"lens_top1.png": figure_png(plot_lens_top1(first)), "lens_rank.png": figure_png(plot_lens_rank(first)),
               "lens_kl.png": figure_png(plot_lens_kl(first))}
    if args.prompts_file:
        curves = lens_curves(results)
        report.update(prompts=prompts, curves=curves.to_json())
        figures["lens_curves.png"] = figure_png(plot_lens_curves(curves))
    out = ensure_writable_dir(args.out)
    write_json(out / "lens.json", report)
    for name, png in figures.items():
        write_bytes(out / name, png)
    caption = (f"{args.model}: logit lens on {first.prompt!r}. Each cell is the most likely next token when the "
               "residual stream at that layer (row) and position (column) is decoded through the final norm and "
               "unembedding; darker means more probable. Hover a cell for its top-k.")
    save_html([(caption, lens_grid_html(first))], out / "lens.html", title=f"{args.model}: logit lens")
    print(f"wrote {out}")
    return 0


def run_heads(args: argparse.Namespace) -> int:
    from rich.console import Console

    from mechlab.heads import PATTERN_SCORES, scan_heads
    from mechlab.io import ensure_writable_dir, figure_png, model_slug, write_bytes, write_json
    from mechlab.loading import load_model
    from mechlab.plots import plot_head_scores, plot_induction_mosaic, plot_loss_by_position
    from mechlab.present import heads_table
    from mechlab.views import attention_heads_view, save_html

    console = Console()
    specs = args.model or [DEFAULT_MODEL]
    if len(set(map(model_slug, specs))) != len(specs):
        raise MechlabError(f"the same model is given twice: {specs}")
    results = []  # everything is computed before anything is written
    for spec in specs:
        model = load_model(spec)
        scan = scan_heads(model, seq_len=args.seq_len, batch=args.batch, seed=args.seed, progress=True)
        scan.model = spec
        console.print(heads_table(scan, args.threshold))
        top = scan.top("induction", 4) + scan.top("previous_token", 2)
        view = attention_heads_view(
            model, scan.tokens[:1], [(layer, head) for layer, head, _ in top],
            caption=(f"{spec}: the top induction heads ({', '.join(f'L{l}H{h}' for l, h, _ in top[:4])}) and "
                     f"previous-token heads ({', '.join(f'L{l}H{h}' for l, h, _ in top[4:])}) on one sequence "
                     f"[BOS] + r + r with len(r) = {scan.seq_len}: in the second half, induction heads attend "
                     "along a stripe one token right of the repeat."))
        figures = {f"heads_{name}.png": figure_png(plot_head_scores(scan, name)) for name in PATTERN_SCORES + ["copying"]}
        figures["loss_by_position.png"] = figure_png(plot_loss_by_position(scan))
        results.append((spec, scan, view, figures))
    mosaic = figure_png(plot_induction_mosaic([scan for _, scan, _, _ in results])) if len(results) > 1 else None
    out = ensure_writable_dir(args.out)
    for spec, scan, view, figures in results:
        directory = ensure_writable_dir(out / model_slug(spec)) if len(results) > 1 else out
        write_json(directory / "heads.json", scan.to_json(args.threshold))
        for name, png in figures.items():
            write_bytes(directory / name, png)
        save_html([view], directory / "heads.html", title=f"{spec}: induction and previous-token heads")
    if mosaic is not None:
        write_bytes(out / "induction_mosaic.png", mosaic)
    console.print(f"wrote {out}")
    return 0


def run_attention(args: argparse.Namespace) -> int:
    from collections import defaultdict

    from mechlab.io import ensure_writable_dir, figure_png, write_bytes
    from mechlab.views import save_html as save_html_page
    from mechlab.loading import load_model
    from mechlab.plots import plot_attention
    from mechlab.tokens import to_tokens
    from mechlab.views import attention_view, check_head, check_layer, parse_heads

    model = load_model(args.model)
    tokens = to_tokens(model, args.prompt)
    selected: dict[int, list[int]] = defaultdict(list)
    for layer in args.layer or []:
        check_layer(model, layer)
        selected[layer] = list(range(model.cfg.n_heads))
    for layer, head in parse_heads(args.heads) if args.heads else []:
        check_layer(model, layer)
        check_head(model, layer, head)
        if head not in selected[layer]:
            selected[layer].append(head)
    if not selected:
        selected = {layer: list(range(model.cfg.n_heads)) for layer in range(model.cfg.n_layers)}
    # Everything is computed before anything is written: bad input leaves no files behind.
    views = [attention_view(model, tokens, layer=layer, heads=heads) for layer, heads in sorted(selected.items())]
    figures = {layer: figure_png(plot_attention(model, tokens, layer=layer, heads=heads))
               for layer, heads in sorted(selected.items())}
    out = ensure_writable_dir(args.out)
    save_html_page(views, out / "attention.html", title=f"{args.model}: attention patterns")
    for layer, png in figures.items():
        write_bytes(out / f"attention_L{layer}.png", png)
    print(f"wrote {out / 'attention.html'} and {len(figures)} PNGs")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from rich.console import Console

    from mechlab.io import write_json
    from mechlab.loading import load_model
    from mechlab.model import Transformer
    from mechlab.parity import compare
    from mechlab.present import parity_table
    from mechlab.tokens import to_tokens

    model = load_model(args.model)
    tokens = to_tokens(model, args.prompt)
    report = compare(Transformer.from_hooked(model), model, tokens)
    console = Console()
    console.print(parity_table(report, title=f"{args.model}: from-scratch Transformer vs {report.reference}"))
    if args.json:
        write_json(args.json, dict(report.to_json(), model=args.model, prompt=args.prompt))
    if report.passed:
        console.print(f"[green]all {len(report.components)} components agree[/] (atol={report.atol}, rtol={report.rtol})")
        return 0
    console.print(f"[red]{len(report.failures)} components differ; the first is {report.first_failure}[/]")
    return 1


def run_models(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from mechlab.loading import cache_dir, model_availability

    table = Table(title=f"model specs (cache: {cache_dir()})")
    for column in ["spec", "kind", "offline now", "note"]:
        table.add_column(column)
    for spec, kind, offline, note in model_availability():
        table.add_row(spec, kind, "[green]yes[/]" if offline else "[red]no[/]", note)
    table.caption = "also accepted: any TransformerLens official name, or a local checkpoint directory"
    Console().print(table)
    return 0


def run_predict(args: argparse.Namespace) -> int:
    import torch
    from rich.console import Console
    from rich.table import Table

    from mechlab.loading import load_model
    from mechlab.tokens import to_tokens, token_strings

    model = load_model(args.model)
    tokens = to_tokens(model, args.prompt)
    with torch.no_grad():
        probs = model(tokens)[0, -1].softmax(-1)
    top = probs.topk(min(args.top_k, probs.numel()))
    table = Table(title=f"{args.model}: next token after {args.prompt!r}")
    table.add_column("rank", justify="right")
    table.add_column("token")
    table.add_column("probability", justify="right")
    for rank, (p, token) in enumerate(zip(top.values, token_strings(model, top.indices)), start=1):
        table.add_row(str(rank), repr(token), f"{p.item():.3f}")
    Console().print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
