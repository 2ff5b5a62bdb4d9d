"""Stress and fault tests: the short profile of ``benchmarks/soak.py`` and regressions it found."""
