"""softprompt-bench: the benchmarking harness (runner, tasks, measurement, records, report)."""

from __future__ import annotations

from omegaconf import OmegaConf


def registered(kind: str) -> str:
    """``${registry:methods}`` in a config: every registered method, comma-separated (a sweep value).

    Sweep presets that mean "every method" say so instead of listing names, so a new method joins
    them without an edit.  Registered here because ``python -m bench`` and every launcher's worker
    import this package before Hydra composes a config."""
    if kind != "methods":
        raise ValueError(f"${{registry:{kind}}}: unknown registry; choices: ['methods']")
    import methods

    return ",".join(methods.method_names())


OmegaConf.register_new_resolver("registry", registered, replace=True)
