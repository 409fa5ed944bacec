"""Progress bars. tqdm is imported when a bar is made, and always in its plain-text flavour: it
works in terminals, CI logs and notebooks alike (tqdm.auto would pick a widget flavour, and warn
when ipywidgets is missing, merely on import)."""


def progress_bar(iterable=None, **kwargs):
    from tqdm import tqdm

    return tqdm(iterable, **kwargs)
