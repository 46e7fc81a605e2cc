"""Set-up for benchmarks/bench_server.py: models, peer servers, the load generator."""
