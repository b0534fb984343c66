"""softprompt-bench: the benchmarking harness (runner, tasks, measurement, records, report)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf


def _conf_dir() -> Path:
    """The Hydra config folder: ``bench/conf`` inside an installed wheel (the build copies ``conf/`` there,
    setup.py), else ``conf/`` beside the package in a checkout or an editable install. The packaged copy is
    looked for first: beside an installed package lies site-packages, whose ``conf`` would be anyone's."""
    here = Path(__file__).resolve().parent
    packaged = here / "conf"
    return packaged if (packaged / "config.yaml").is_file() else here.parent / "conf"


CONF_DIR = _conf_dir()
"""Where every config is read from (``conf/config.yaml``, ``conf/<group>/<name>.yaml``); nothing else says."""


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
