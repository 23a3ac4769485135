"""Helpers shared by every kernel op: argument checks, Triton launch and math helpers, and
the machine's name. An op imports these and nothing from another op's folder."""
