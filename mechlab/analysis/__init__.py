"""Compute on a loaded model: tokens, attention, head scans, ablation, patching, direct logit
attribution, the logit and tuned lens. Returns result objects; never draws or writes pages (a
result's `_repr_html_` imports `mechlab.present` lazily, the one allowed upward edge)."""
