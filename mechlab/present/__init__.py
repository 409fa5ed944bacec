"""Presentation: takes results and data, never a model. Labels, text tables, HTML views, plots and
the files written next to them."""
