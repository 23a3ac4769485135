"""Reports built from finished runs: the encoder and decoder comparisons, caption-length
scaling and generation speed.

Each report is plain functions over run directories (so tests and the command line can
call them) plus a Hydra callback that calls them when a multirun ends.
"""
