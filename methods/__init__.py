"""Adaptation methods: the three soft-prompt families and the reference baselines.

Importing this package registers every method; see :mod:`methods.registry`.
"""
from methods.registry import (DECLARATIONS, METHODS, MethodConfig, MethodConfigError, NothingToTrainError,
                              declarations, get_method, register)
from methods import prompt_tuning, prefix_tuning, p_tuning_v2, full_finetune, head_only, lora  # noqa: F401  (registration)

__all__ = ["DECLARATIONS", "METHODS", "MethodConfig", "MethodConfigError", "NothingToTrainError", "declarations",
           "get_method", "register"]
