"""Benchmarks: kernel timings against the roofline, with a correctness check first."""
