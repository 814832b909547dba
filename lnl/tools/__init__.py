"""Tools beside the training run: `lnl aggregate` and `lnl runs`, the benchmarks (`python -m lnl.tools.bench`,
`bench_loader`, `bench_views`), the GPU acceptance check (`python -m lnl.tools.gpu_check`) and tiny datasets in
their real on-disk formats (`fakedata`). Only `lnl.run` (the dispatcher) imports them (docs/design.md, "Layout")."""
