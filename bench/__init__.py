"""Benchmarks of WhatsChat Gateway: `python -m bench [--quick] [name ...]`.

See docs/performance.md for what each measures and the figures.
"""
