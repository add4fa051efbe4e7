"""Benchmarks; see bench/README.md. Not part of the platform's image or tests."""
