"""Test helpers (importable as `helpers.*`: pyproject's `pythonpath = ["tests"]`), no tests here.

- tiny datasets in their real on-disk formats live in `lnl.tools.fakedata` (also used by `lnl.tools.gpu_check`).
- `nets`: tiny float64 nets for the hypergradient tests.
- `synthetic`: a synthetic data module that serves any method from its class attributes, and a Trainer runner.
"""
