"""Benchmarks: scripts that measure and print JSON; figures go in the README, not in tests."""
