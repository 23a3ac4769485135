"""Kernel benchmarks: timings against the roofline (with a correctness check first), plots,
and mamba-ssm as the peer. Imports the kernels, never ssm/."""
