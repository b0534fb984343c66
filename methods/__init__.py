"""Adaptation methods: the three soft-prompt families and the reference baselines.

Importing this package registers every method (see :mod:`methods.registry`): the built-in ones
below, in the order tables and figures show them; then any other module in this folder, so a new
method is one file here plus ``conf/method/<name>.yaml``; then the modules named, comma-separated,
in the ``SOFTPROMPT_PLUGINS`` environment variable (methods kept outside this repository).
"""

from __future__ import annotations

import importlib
import os
import pkgutil

from methods.registry import (
    BACKBONE_DECLARATIONS,
    DECLARATIONS,
    METHODS,
    REFERENCES,
    MethodConfig,
    MethodConfigError,
    NothingToTrainError,
    acts_on_backbone,
    declarations,
    field_defaults,
    get_method,
    method_names,
    peft_counterparts,
    reference_method,
    register,
    yaml_drift,
)

PLUGINS_ENV = "SOFTPROMPT_PLUGINS"
# Imported first, in this order, which is the registry's and so every table's and figure's order: the three
# families in the order of the usual claim, then the baselines.  (A tuple, not an import line: import
# sorting must not reorder the registry.)
BUILTIN = ("prompt_tuning", "prefix_tuning", "p_tuning_v2", "lora", "head_only", "full_finetune")
# The usual claim about these methods, as a chain of pairwise relations the report checks per model × task
# (bench.report.comparison): "prompt < prefix < P-Tuning v2 ≈ full fine-tuning" (the ceiling).
CLAIM = (
    ("prompt_tuning", "<", "prefix_tuning"),
    ("prefix_tuning", "<", "p_tuning_v2"),
    ("p_tuning_v2", "≈", "full_finetune"),
)
# The shared machinery, not methods: left to whoever needs it. Every module below except registry, virtual
# and model_card imports torch (model/injection/peft_export transformers or safetensors too); method files import
# none of them at module level, so importing this package (the registry) loads no torch.
SUPPORT = ("registry", "virtual", "soft_prompt", "injection", "model", "seq2seq", "peft_export", "model_card")


class PluginError(ImportError):
    """A module named in ``SOFTPROMPT_PLUGINS`` could not be imported."""


def _import_method_modules() -> None:
    """Import the built-ins, then every other module of this package, so a file dropped into ``methods/``
    registers itself."""
    others = sorted(info.name for info in pkgutil.iter_modules(__path__))
    for module in [*BUILTIN, *others]:
        if not module.startswith("_") and module not in SUPPORT:
            importlib.import_module(f"{__name__}.{module}")


def load_plugins(spec: str | None = None) -> list[str]:
    """Import the modules named in ``spec`` (default: ``$SOFTPROMPT_PLUGINS``); their ``@register`` runs."""
    spec = os.environ.get(PLUGINS_ENV, "") if spec is None else spec
    names = [name.strip() for name in spec.split(",") if name.strip()]
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as error:  # one line naming the variable and the module, not a traceback
            raise PluginError(f"{PLUGINS_ENV}: cannot import {name!r}: {error}") from None
    return names


_import_method_modules()
load_plugins()

__all__ = [
    "BACKBONE_DECLARATIONS",
    "CLAIM",
    "DECLARATIONS",
    "METHODS",
    "REFERENCES",
    "PLUGINS_ENV",
    "MethodConfig",
    "MethodConfigError",
    "NothingToTrainError",
    "PluginError",
    "acts_on_backbone",
    "declarations",
    "field_defaults",
    "get_method",
    "load_plugins",
    "method_names",
    "peft_counterparts",
    "reference_method",
    "register",
    "yaml_drift",
]
