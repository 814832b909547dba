"""Test helpers (importable as `helpers.*`: pyproject's `pythonpath = ["tests"]`), no tests here.

- `fakedata`: tiny datasets written in their real on-disk formats (CIFAR pickles, CIFAR-N, Clothing1M, folders).
- `nets`: tiny float64 nets for the hypergradient tests.
- `synthetic`: a synthetic data module that serves any method from its class attributes, and a Trainer runner.
"""
