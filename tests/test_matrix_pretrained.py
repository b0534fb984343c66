"""Every method on the two offline pretrained models (MiniLM-L6, SmolLM2-135M), as `python -m bench` runs them.

Its own file so that `make test`'s two workers (a file per worker at a time) can run it beside the tiny-model
matrix in tests/test_matrix.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_matrix import METHODS, smoke

# SmolLM2 (135M, GGUF weights, GQA): forward passes are most of these tests' time, so two steps and one
# validation pass of 4 examples; what is tested is that every method loads, trains, evaluates and decodes on the
# real weights and tokenizer, not what it learns
SHORT = ["trainer.max_steps=2", "trainer.max_eval_samples=4"]


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_every_method_on_the_offline_pretrained_models(method: str, tmp_path: Path) -> None:
    smoke([f"method={method}", "model=minilm", "task=synth_cls"], tmp_path / "minilm")
    smoke(
        [f"method={method}", "model=smollm2", "task=synth_d2t", "task.generation.max_new_tokens=8", *SHORT],
        tmp_path / "smollm2_d2t",
    )


@pytest.mark.slow
def test_a_classifier_on_the_pretrained_decoder(tmp_path: Path) -> None:
    """Once, not per method: every method's decoder classification path (GQA, last-token pooling after virtual
    tokens) runs on tiny_llama above; what SmolLM2 adds is its real tokenizer's padding under a class head.
    P-Tuning v2 touches both the input and every layer's attention."""
    smoke(["method=p_tuning_v2", "model=smollm2", "task=synth_cls", *SHORT], tmp_path / "smollm2")
