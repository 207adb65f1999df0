"""Benchmarks: each module runs against an in-run baseline and prints the ratio (`make bench`)."""
