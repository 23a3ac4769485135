"""Reports built from finished runs: the encoder comparison and caption-length scaling.

Each report is plain functions over run directories (so tests and the command line can
call them) plus a Hydra callback that calls them when a multirun ends.
"""
