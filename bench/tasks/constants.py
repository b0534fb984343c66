"""Constants shared by the task layer, the encoders and the model heads (defined here only).

This module imports nothing, so ``methods`` and ``bench.data`` can use it without pulling in
the loaders.
"""

from __future__ import annotations

# What a task asks of a model; every head in methods.model serves exactly these kinds.
TASK_KINDS = ("classification", "multiple_choice", "token_classification", "generation")
# Label id that losses skip (prompt tokens of a generation example, sub-tokens after a word's first).
IGNORE_INDEX = -100
