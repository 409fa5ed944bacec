"""Workflows that compose compute and presentation: the one-command report, many-model scans on
Ray."""
