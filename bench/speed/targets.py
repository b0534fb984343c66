"""The benchmark's targets as data: which figure, which limit, which direction.

A target names a section and a key: a ratio in the section's ``ratios`` or a plain figure of the
section.  ``each`` expands one target over a method list (``{m}`` in label and key; ``{p}`` its pair).
``{full}`` and ``{floor}`` are the reference methods the registry declares: no method is named here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.speed.config import SpeedConfig, frozen_method, full_method, s2s_contenders, s2s_peft_pairs, soft_methods
from bench.speed.contenders import peft_methods
from bench.speed.timing import overhead_key


@dataclass(frozen=True)
class Target:
    """``value <= limit`` (or ``>=`` when ``at_least``) for the figure ``section:key``."""

    label: str
    section: str
    key: str
    limit: float
    at_least: bool = False
    each: str | None = None  # a key of _LISTS: one target per method (or per (ours, PEFT) pair) of that list

    def met(self, value: float | None) -> bool | None:
        if value is None:
            return None
        return value >= self.limit if self.at_least else value <= self.limit


TARGETS = (  # issue #7 (training, generation, caches) and issue #16 (evaluation)
    Target("{m} step <= 1.0x PEFT (cls)", "cls", "{m}/peft_{m}", 1.0, each="cls_peft"),
    Target("{m} overhead <= {p} overheads", "cls", "{k}", 1.0, each="bounded"),
    Target("{m} step <= 0.8x full fine-tuning", "cls", "{m}/{full}", 0.8, each="soft"),
    Target("{m} step <= 1.0x PEFT (lm)", "lm", "{m}/peft_{m}", 1.0, each="lm_peft"),
    Target("{m} generate <= 1.2x base model", "generation", "{m}/base", 1.2, each="generation"),
    Target("second model load < 3 s", "load", "second_s", 3.0),
    Target("eval padding waste <= 2 %", "eval", "eval_padding_waste", 0.02),
    Target("eval tok/s >= 0.95x head-only train tok/s", "eval", "eval/{floor}_train", 0.95, at_least=True),
    Target("sorted generation >= 1.3x file-order tok/s", "eval", "sorted/file_order_generation", 1.3, at_least=True),
    # issue #13: one encoder-decoder, against PEFT where it has the pair and against the base model
    Target("{m} step <= 1.0x PEFT (seq2seq)", "s2s", "{m}/peft_{p}", 1.0, each="s2s_peft"),
    Target("{m} generate <= 1.2x base model (seq2seq)", "s2s_generation", "{m}/base", 1.2, each="s2s"),
)


def _bounded() -> tuple[tuple[str, str, str], ...]:
    """(method, "prompt + prefix", ratio key) for each method declaring an ``overhead_bound``."""
    from methods import METHODS

    return tuple(
        (name, " + ".join(part.split("_")[0] for part in cls.overhead_bound), overhead_key(name, cls.overhead_bound))
        for name, cls in METHODS.items()
        if cls.overhead_bound
    )


_LISTS: dict[str, Callable[[SpeedConfig], tuple]] = {
    "cls_peft": lambda cfg: peft_methods(),
    "bounded": lambda cfg: _bounded(),
    "soft": lambda cfg: soft_methods(),
    "lm_peft": lambda cfg: tuple(m for m in cfg.lm_methods if m in peft_methods()),
    "generation": lambda cfg: cfg.generation_methods(),
    "s2s": lambda cfg: tuple(s2s_contenders()),
    "s2s_peft": lambda cfg: tuple(s2s_peft_pairs().items()),
}


def expand(cfg: SpeedConfig, targets: tuple[Target, ...] = TARGETS) -> list[Target]:
    """One target per method where ``each`` says so."""
    references = {"full": full_method(), "floor": frozen_method()}
    out: list[Target] = []
    for target in targets:
        names = _LISTS[target.each](cfg) if target.each else ((),)
        out += [_for_method(target, m, references) for m in names]
    return out


def _for_method(target: Target, item: str | tuple[str, ...], references: dict[str, str]) -> Target:
    """``target`` for one method ``{m}`` (or one pair: ours ``{m}``, PEFT's ``{p}``; a ratio key ``{k}``),
    with the references filled in."""
    values = item if isinstance(item, tuple) else (item, item)
    fill = {**dict(zip("mpk", values)), **references}
    return Target(target.label.format(**fill), target.section, target.key.format(**fill), target.limit, target.at_least)


def figure(sections: dict[str, Any], section: str, key: str) -> dict[str, Any] | None:
    """The ratio (``{"value": ...}``) or plain figure at ``section:key``; None when the section lacks it."""
    body = sections.get(section) or {}
    if key in body.get("ratios", {}):
        return body["ratios"][key]
    if isinstance(body.get(key), (int, float)):
        return {"value": body[key]}
    return None


def evaluate_targets(cfg: SpeedConfig, sections: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each target's value, limit, direction and met (None when it could not be measured here)."""
    results = {}
    for target in expand(cfg):
        found = figure(sections, target.section, target.key)
        if found is None:
            continue
        value = found.get("value")
        results[target.label] = {
            "ratio": f"{target.section}:{target.key}",
            "value": value,
            "limit": target.limit,
            "at_least": target.at_least,
            "met": target.met(value),
            "na": found.get("na"),
        }
    return results
