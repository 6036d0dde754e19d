"""Benchmarks: they print numbers and never run as pass/fail timing checks."""
