"""Progress bars. tqdm is imported when a bar is made, and always in its plain-text flavour: it
works in terminals, CI logs and notebooks alike (tqdm.auto would pick a widget flavour, and warn
when ipywidgets is missing, merely on import)."""


def progress_bar(iterable=None, **kwargs):
    """A tqdm bar; its description (which may name a model) with control characters escaped."""
    from tqdm import tqdm

    from mechlab.terminal import visible

    if kwargs.get("desc"):
        kwargs["desc"] = visible(kwargs["desc"])
    return tqdm(iterable, **kwargs)
