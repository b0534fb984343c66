"""bench.speed's per-contender step memory and its LM section against full fine-tuning (issue #23)."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from bench.speed.config import QUICK, SpeedConfig
from bench.speed.contenders import train_step
from bench.speed.memory import memory_ratios, tensor_bytes
from bench.speed.sections import lm_pairs, lm_section

CPU = torch.device("cpu")
WIDTH, ROWS = 64, 32
FLOAT = 4  # bytes


class TwoLayers(torch.nn.Module):
    """x -> Linear -> Linear -> sum: what autograd saves is known exactly (each trainable layer's input)."""

    def __init__(self, freeze_first: bool) -> None:
        super().__init__()
        self.first, self.second = torch.nn.Linear(WIDTH, WIDTH), torch.nn.Linear(WIDTH, WIDTH)
        self.first.requires_grad_(not freeze_first)
        self.num_virtual_tokens = 0

    def forward(self, input_ids, attention_mask, labels) -> SimpleNamespace:
        return SimpleNamespace(loss=self.second(self.first(input_ids)).sum())  # sum saves no tensor


def measured(freeze_first: bool) -> dict:
    torch.manual_seed(0)
    batch = {
        "input_ids": torch.randn(ROWS, WIDTH),
        "attention_mask": torch.ones(ROWS, WIDTH),
        "labels": torch.zeros(ROWS),
    }
    run = train_step(TwoLayers(freeze_first), batch, CPU, torch.float32)
    run()  # the warm-up step creates AdamW's state
    return run.memory(CPU)


def test_step_memory_counts_each_part_and_a_frozen_layer_saves_less():
    layer = (WIDTH * WIDTH + WIDTH) * FLOAT
    full, frozen = measured(freeze_first=False), measured(freeze_first=True)
    activation = ROWS * WIDTH * FLOAT
    # every weight is held either way; gradients and AdamW's two moments only for what trains
    assert full["weights"] == frozen["weights"] == 2 * layer
    assert (full["gradients"], frozen["gradients"]) == (2 * layer, layer)
    assert 2 * full["gradients"] <= full["optimizer"] <= 2 * full["gradients"] + 4 * 8  # + a scalar step each
    assert 2 * frozen["gradients"] <= frozen["optimizer"] <= 2 * frozen["gradients"] + 2 * 8
    # trainable first layer: its input is saved for its weight gradient; frozen: only the second layer's input
    assert (full["saved"], frozen["saved"]) == (2 * activation, activation)
    parts = ("weights", "optimizer", "gradients", "saved")
    assert full["peak"] == full["accounted_peak"] == sum(full[k] for k in parts) and full["peak_source"] == "accounted"
    ratios = memory_ratios({"frozen": {"memory": frozen}, "full": {"memory": full}, "n/a": {}}, [("frozen", "full")])
    assert ratios == {"frozen/full": round(frozen["peak"] / full["peak"], 4)} and ratios["frozen/full"] < 1


def test_tied_and_viewed_tensors_count_once():
    weight = torch.zeros(10, 10)
    assert tensor_bytes([weight, weight.t(), weight[:2], torch.zeros(3)]) == 100 * FLOAT + 3 * FLOAT


def test_lm_section_compares_with_full_finetuning_and_gives_each_method_its_own_backbone():
    methods = ("prefix_tuning", "lora", "full_finetune")
    assert lm_pairs(methods, ["prefix_tuning"]) == [
        ("prefix_tuning", "peft_prefix_tuning"),
        ("prefix_tuning", "full_finetune"),
        ("lora", "full_finetune"),
        ("peft_prefix_tuning", "full_finetune"),
    ]
    assert lm_pairs(("prefix_tuning",), ["prefix_tuning"]) == [("prefix_tuning", "peft_prefix_tuning")]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = SpeedConfig(**{**QUICK, "repeats": 1, "steps": 1}, lm_methods=methods)
        body = lm_section(cfg, CPU, torch.float32)
    finally:
        torch.set_num_threads(threads)
    results = body["methods"]
    assert set(body["ratios"]) == {f"{a}/{b}" for a, b in lm_pairs(methods, ["prefix_tuning"])}
    assert all(body["ratios"][key]["value"] > 0 for key in body["ratios"])
    memory = {name: stats["memory"] for name, stats in results.items()}
    # full fine-tuning unfreezes its own copy only: prefix tuning and LoRA still train a small part
    assert memory["full_finetune"]["gradients"] == memory["full_finetune"]["weights"]
    for name in ("prefix_tuning", "lora", "peft_prefix_tuning"):
        assert 0 < memory[name]["gradients"] < memory["full_finetune"]["gradients"] / 4, name
        assert body["memory_ratios"][f"{name}/full_finetune"] < 1
    tokens = cfg.lm_batch * cfg.lm_length
    assert all(stats["tokens_per_s"] == round(tokens / stats["median_s"], 2) for stats in results.values())
