"""softprompt-bench: the benchmarking harness (runner, tasks, measurement, records, report)."""
