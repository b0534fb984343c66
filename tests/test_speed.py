"""``python -m bench.speed --quick``: the output's structure, not its timings (tiny models, one thread)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pytest
import torch

from bench import speed
from bench.speed import contenders, targets
from methods import METHODS, register
from methods.registry import MethodConfig

FULL, FROZEN = "full_finetune", "head_only"
# PEFT's prefix tuning needs past_key_values, which BERT refuses in transformers 5: reported, not crashed.
# On tiny models (microsecond steps) the P-Tuning v2 overhead ratio is undefined when timing noise makes the
# prompt/prefix steps no slower than head-only; the command says so.
MAY_BE_NA = {
    ("cls", "prefix_tuning/peft_prefix_tuning"),
    ("cls", "peft_prefix_tuning/full_finetune"),
    ("cls", "p_tuning_v2_overhead/(prompt+prefix)"),
}


def expected_ratios() -> dict[str, list[str]]:
    soft, peft = speed.soft_methods(), speed.peft_methods()
    return {
        "cls": [f"{m}/{ref}" for m in soft for ref in (FULL, FROZEN)]
        + [f"{m}/peft_{m}" for m in peft]
        + [f"peft_{m}/{FULL}" for m in peft]
        + [f"{m}/{FULL}" for m in speed.step_methods() if m not in soft and m != FULL]  # head-only, LoRA
        + ["p_tuning_v2_overhead/(prompt+prefix)"],
        "lm": ["prefix_tuning/peft_prefix_tuning"],
        "generation": [f"{m}/base" for m in soft] + ["peft_prefix_tuning/base"],
        "eval": ["eval/head_only_train", "sorted/file_order_generation"],
        "s2s": [f"{ours}/peft_{peft}" for ours, peft in speed.s2s_peft_pairs().items()]
        + [f"{name}/{FULL}" for name in speed.s2s_contenders()],
        "s2s_generation": [f"{name}/base" for name in speed.s2s_contenders()]
        + [f"peft_{m}/base" for m in set(speed.s2s_peft_pairs().values())],
    }


def positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("speed")
    threads = torch.get_num_threads()
    try:  # one thread: tiny ops on a shared 2-core machine otherwise wait on each other
        record = speed.run_speed(speed.parse_args(["--quick", "--threads", "1", "--out", str(out)]))
    finally:
        torch.set_num_threads(threads)
    return record, out / "quick" / "speed.json"


def test_record_written_and_complete(quick_run):
    record, path = quick_run
    assert json.loads(path.read_text())["kind"] == "speed"
    assert record["schema"] == 1 and record["status"] == "ok", record["error"]
    assert set(record["sections"]) == {"load", "data", "cls", "lm", "generation", "eval", "s2s", "s2s_generation"}
    assert record["provenance"]["versions"]["torch"]


def test_every_ratio_present_finite_and_positive(quick_run):
    record, _ = quick_run
    for section, keys in expected_ratios().items():
        ratios = record["sections"][section]["ratios"]
        for key in keys:
            assert key in ratios, (section, key)
            if ratios[key]["value"] is None:
                assert (section, key) in MAY_BE_NA and ratios[key]["na"], (section, key, ratios[key])
            else:
                assert positive(ratios[key]["value"]), (section, key, ratios[key])


def test_contenders_timed(quick_run):
    record, _ = quick_run
    assert set(record["sections"]["cls"]["methods"]) >= set(METHODS)  # every registered method is a contender
    for section in ("cls", "lm", "generation", "eval", "s2s", "s2s_generation"):
        for name, stats in record["sections"][section]["methods"].items():
            if name == "peft_prefix_tuning" and section == "cls":
                continue
            assert positive(stats["median_s"]) and stats["n"] >= 1, (section, name, stats)
    for section in ("generation", "eval", "s2s_generation"):
        for name, stats in record["sections"][section]["methods"].items():
            assert positive(stats["tokens_per_s"]), (section, name)
    for section in ("cls", "lm", "s2s"):  # training steps: tokens/s and what the step holds, per contender
        for name, stats in record["sections"][section]["methods"].items():
            if "error" in stats:
                continue
            assert positive(stats["tokens_per_s"]) and positive(stats["memory"]["peak"]), (section, name)
            assert stats["memory"]["peak"] >= stats["memory"]["weights"] + stats["memory"]["saved"], (section, name)
        assert record["sections"][section]["memory_ratios"], section
    for section, names in (
        ("generation", ["prefix_tuning", "p_tuning_v2"]),
        ("s2s_generation", ["prefix_tuning@decoder"]),
    ):
        generation = record["sections"][section]["methods"]
        for name in names:  # the prefix is computed once per generate, not per token
            assert generation[name]["prefix_computations_per_generate"] == 1
            assert generation[name]["new_tokens_per_sequence"] == record["sections"][section]["shapes"]["new_tokens"]


def test_seq2seq_sections_time_every_contender_on_the_seq2seq_model(quick_run):
    """Issue #13: one encoder-decoder, our soft methods (+ PEFT's placement) vs PEFT, full FT and the base."""
    record, _ = quick_run
    step, generation = record["sections"]["s2s"], record["sections"]["s2s_generation"]
    assert step["shapes"]["model"] == generation["shapes"]["model"] == "tiny_t5"
    peft = {f"peft_{m}" for m in speed.s2s_peft_pairs().values()}
    assert set(step["methods"]) == {*speed.s2s_contenders(), FULL, *peft}
    assert set(generation["methods"]) == {"base", *speed.s2s_contenders(), *peft}
    assert set(speed.soft_methods()) < set(speed.s2s_contenders())
    found = record["targets"]
    assert {"prompt_tuning step <= 1.0x PEFT (seq2seq)", "prefix_tuning@decoder step <= 1.0x PEFT (seq2seq)"} <= set(
        found
    )
    assert found["prefix_tuning@decoder step <= 1.0x PEFT (seq2seq)"]["ratio"] == (
        "s2s:prefix_tuning@decoder/peft_prefix_tuning"
    )


def test_model_options_pick_the_sections_they_fit():
    from bench.speed.cli import run_section

    cfg = speed.parse_args(["--model", "tiny_t5"])
    assert (cfg.cls_model, cfg.lm_model, cfg.s2s_model) == (None, None, "tiny_t5")
    assert run_section("cls", cfg, torch.device("cpu"), torch.float32) is None
    cfg = speed.parse_args(["--s2s-model", "tiny_bert", "--lm-model", "tiny_t5"])
    for section, option in (("s2s", "--s2s-model"), ("generation", "--lm-model")):
        error = run_section(section, cfg, torch.device("cpu"), torch.float32)["error"]
        assert option in error and "\n" not in error, error
    assert speed.parse_args(["--s2s-model", "none"]).s2s_model is None


def test_eval_section_figures(quick_run):
    record, _ = quick_run
    body = record["sections"]["eval"]
    assert body["shapes"]["sentences"] == 48 and body["shapes"]["real_tokens"] > 0
    # sorted batches pad less than the file-order batches evaluation used before
    assert 0 <= body["eval_padding_waste"] < body["eval_padding_waste_file_order"]
    lengths = body["generation_prompts"]["lengths"]
    assert len(lengths) == 8 and len(set(lengths)) > 1
    # sorted batches hold fewer prompt positions than file-order ones (equal only if already sorted)
    assert body["generation_prompts"]["padded_prompt_ratio"] >= 1
    assert body["methods"]["generate_sorted"]["new_tokens"] > 0


def test_targets_and_side_figures(quick_run):
    record, _ = quick_run
    found = record["targets"]
    assert any("generate <= 1.2x" in label for label in found)
    assert any("0.8x full fine-tuning" in label for label in found)
    assert {
        "eval padding waste <= 2 %",
        "eval tok/s >= 0.95x head-only train tok/s",
        "sorted generation >= 1.3x file-order tok/s",
    } <= set(found)
    assert all(t["met"] in (True, False, None) for t in found.values())
    load, data = record["sections"]["load"], record["sections"]["data"]
    assert positive(load["second_s"]) and positive(data["encode_cold_s"])
    assert set(data["padding_waste"]) == {"grouped", "ungrouped"}


def test_paired_ratio_and_overhead():
    times = {
        name: {"wall": walls, "cpu": walls, "repeat": [0, 0, 0]}
        for name, walls in {"a": [2.0, 4.0, 6.0], "b": [1.0, 2.0, 2.0]}.items()
    }
    assert speed.paired_ratio(times, {}, ("a", "b"))["value"] == 2.0
    assert speed.paired_ratio(times, {"c": "boom"}, ("a", "c")) == {"value": None, "na": "boom"}
    walls = {"head_only": 1.0, "prompt_tuning": 2.0, "prefix_tuning": 2.0, "p_tuning_v2": 2.5}
    parts = ("prompt_tuning", "prefix_tuning")
    assert speed.combined_overhead(walls, "p_tuning_v2", parts, "head_only") == pytest.approx(0.75)
    slow = {**walls, "prompt_tuning": 0.5, "prefix_tuning": 0.5}
    assert math.isnan(speed.combined_overhead(slow, "p_tuning_v2", parts, "head_only"))
    assert speed.overhead_key("p_tuning_v2", parts) == "p_tuning_v2_overhead/(prompt+prefix)"  # the record's key


def test_targets_are_data_with_a_direction():
    cfg = speed.SpeedConfig()
    at_most = speed.Target("x", "s", "k", 1.0)
    at_least = speed.Target("y", "s", "k", 1.3, at_least=True)
    assert at_most.met(0.9) and not at_most.met(1.1) and at_most.met(None) is None
    assert at_least.met(1.4) and not at_least.met(1.2)
    sections = {"eval": {"eval_padding_waste": 0.05, "ratios": {"eval/head_only_train": {"value": 1.1}}}}
    found = targets.evaluate_targets(cfg, sections)
    assert found["eval padding waste <= 2 %"]["met"] is False
    assert found["eval tok/s >= 0.95x head-only train tok/s"]["met"] is True
    labels = [t.label for t in targets.expand(cfg)]
    assert [f"{m} step <= 0.8x full fine-tuning" for m in speed.soft_methods()] == [
        label for label in labels if label.endswith("0.8x full fine-tuning")
    ]


def test_speed_step_is_the_trainers_step(monkeypatch):
    import bench.train

    calls = []
    real = bench.train.train_step
    monkeypatch.setattr(bench.train, "train_step", lambda *args: calls.append(args) or real(*args))
    model = torch.nn.Linear(2, 1)
    model.forward = lambda input_ids, attention_mask, labels: type(
        "Out", (), {"loss": torch.nn.functional.linear(input_ids.float(), model.weight, model.bias).pow(2).mean()}
    )()
    batch = {"input_ids": torch.ones(3, 2), "attention_mask": torch.ones(3, 2), "labels": torch.zeros(3)}
    before = model.weight.detach().clone()
    contenders.train_step(model, batch, torch.device("cpu"), torch.float32)()
    assert len(calls) == 1 and calls[0][0] is model and not torch.equal(before, model.weight)


def test_a_new_method_becomes_a_speed_contender():
    @dataclass
    class Throwaway(MethodConfig):
        name = "throwaway_speed_method"

    register(Throwaway)
    try:
        assert "throwaway_speed_method" in speed.step_methods()
        assert "throwaway_speed_method" in speed.soft_methods()  # not a baseline: compared like the soft methods
        assert "throwaway_speed_method" in speed.SpeedConfig().generation_methods()
    finally:
        del METHODS["throwaway_speed_method"]
