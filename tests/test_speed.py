"""``python -m bench.speed --quick``: the output's structure, not its timings (tiny models, one thread)."""
from __future__ import annotations

import json
import math

import pytest
import torch

from bench import speed

SOFT = ("prompt_tuning", "prefix_tuning", "p_tuning_v2")
EXPECTED_RATIOS = {
    "cls": [f"{m}/full_finetune" for m in SOFT] + [f"{m}/head_only" for m in SOFT]
           + ["prompt_tuning/peft_prompt_tuning", "prefix_tuning/peft_prefix_tuning", "head_only/full_finetune",
              "peft_prompt_tuning/full_finetune", "p_tuning_v2_overhead/(prompt+prefix)"],
    "lm": ["prefix_tuning/peft_prefix_tuning"],
    "generation": [f"{m}/base" for m in SOFT] + ["peft_prefix_tuning/base"],
}
# PEFT's prefix tuning needs past_key_values, which BERT refuses in transformers 5: reported, not crashed
# PEFT cannot prefix-tune an encoder; on tiny models (microsecond steps) the P-Tuning v2 overhead ratio is
# undefined when timing noise makes the prompt/prefix steps no slower than head-only — the command says so
MAY_BE_NA = {("cls", "prefix_tuning/peft_prefix_tuning"), ("cls", "p_tuning_v2_overhead/(prompt+prefix)")}


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
    assert set(record["sections"]) == {"load", "data", "cls", "lm", "generation"}
    assert record["provenance"]["versions"]["torch"]


def test_every_ratio_present_finite_and_positive(quick_run):
    record, _ = quick_run
    for section, keys in EXPECTED_RATIOS.items():
        ratios = record["sections"][section]["ratios"]
        for key in keys:
            assert key in ratios, (section, key)
            if ratios[key]["value"] is None:
                assert (section, key) in MAY_BE_NA and ratios[key]["na"], (section, key, ratios[key])
            else:
                assert positive(ratios[key]["value"]), (section, key, ratios[key])


def test_contenders_timed(quick_run):
    record, _ = quick_run
    for section in ("cls", "lm", "generation"):
        for name, stats in record["sections"][section]["methods"].items():
            if name == "peft_prefix_tuning" and section == "cls":
                continue
            assert positive(stats["median_s"]) and stats["n"] >= 1, (section, name, stats)
    for name, stats in record["sections"]["generation"]["methods"].items():
        assert positive(stats["tokens_per_s"]), name
    generation = record["sections"]["generation"]["methods"]
    for name in ("prefix_tuning", "p_tuning_v2"):  # the prefix is computed once per generate, not per token
        assert generation[name]["prefix_computations_per_generate"] == 1
        assert generation[name]["new_tokens_per_sequence"] == record["sections"]["generation"]["shapes"]["new_tokens"]


def test_targets_and_side_figures(quick_run):
    record, _ = quick_run
    targets = record["targets"]
    assert any("generate <= 1.2x" in label for label in targets)
    assert any("0.8x full fine-tuning" in label for label in targets)
    assert all(t["met"] in (True, False, None) for t in targets.values())
    load, data = record["sections"]["load"], record["sections"]["data"]
    assert positive(load["second_s"]) and positive(data["encode_cold_s"])
    assert set(data["padding_waste"]) == {"grouped", "ungrouped"}


def test_paired_ratio_and_overhead():
    times = {name: {"wall": walls, "cpu": walls, "repeat": [0, 0, 0]}
             for name, walls in {"a": [2.0, 4.0, 6.0], "b": [1.0, 2.0, 2.0]}.items()}
    assert speed.paired_ratio(times, {}, ("a", "b"))["value"] == 2.0
    assert speed.paired_ratio(times, {"c": "boom"}, ("a", "c")) == {"value": None, "na": "boom"}
    walls = {"head_only": 1.0, "prompt_tuning": 2.0, "prefix_tuning": 2.0, "p_tuning_v2": 2.5}
    assert speed.ptv2_overhead(walls) == pytest.approx(0.75)
    assert math.isnan(speed.ptv2_overhead({**walls, "prompt_tuning": 0.5, "prefix_tuning": 0.5}))
