"""Benchmarks (bench/README.md). A package only so that `bench.bench` names bench/bench.py from
anywhere (tests, bench_trl.py); run each script as `python bench/NAME.py` from the repository root."""
