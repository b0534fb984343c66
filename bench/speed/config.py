"""The benchmark's settings, and its method lists, derived from the methods registry.

Which methods are the references (ceiling, floor), which PEFT method pairs with which of ours, and which
costs bound P-Tuning v2's are declarations of the methods (``methods.registry.MethodConfig``): no
method is named here.
"""

from __future__ import annotations

from dataclasses import dataclass

SPEED_SCHEMA = 1
LR = 1e-5  # timing only: the learning rate does not change what a step costs


def full_method() -> str:
    """The ceiling reference (full fine-tuning): every soft method's step is compared with it."""
    from methods import reference_method

    return reference_method("ceiling")


def frozen_method() -> str:
    """The floor reference (head-only: a frozen backbone), whose step is the cost with no method at all."""
    from methods import reference_method

    return reference_method("floor")


def soft_methods() -> tuple[str, ...]:
    """The registered methods that are not baselines (prompt tuning, prefix tuning, P-Tuning v2, ...)."""
    from methods import METHODS

    return tuple(name for name, cls in METHODS.items() if not cls.baseline)


def step_methods() -> tuple[str, ...]:
    """Every registered method: the contenders of the classification-step section."""
    from methods import METHODS

    return tuple(METHODS)


# PEFT (0.21) prefixes a seq2seq model's decoder self-attention only; ours at that placement is its pair
PEFT_SEQ2SEQ_PLACEMENT = "decoder"


def peft_prefix_methods() -> tuple[str, ...]:
    """Our soft methods whose PEFT counterpart prefixes attention (prefix tuning): timed at PEFT's placement."""
    from methods import METHODS, peft_counterparts

    return tuple(m for m in peft_counterparts() if m in soft_methods() and METHODS[m].attention_prefix)


def s2s_contenders() -> dict[str, tuple[str, dict[str, str]]]:
    """The seq2seq section's contenders of ours: name -> (method, method overrides).

    Every soft method at its default placement (prefixes in all three attention kinds), plus each method of
    :func:`peft_prefix_methods` at PEFT's placement, named ``<method>@decoder``: the pair PEFT is timed with.
    """
    contenders: dict[str, tuple[str, dict[str, str]]] = {m: (m, {}) for m in soft_methods()}
    for method in peft_prefix_methods():
        contenders[f"{method}@{PEFT_SEQ2SEQ_PLACEMENT}"] = (method, {"prefix_placement": PEFT_SEQ2SEQ_PLACEMENT})
    return contenders


def s2s_peft_pairs() -> dict[str, str]:
    """Our seq2seq contender -> the PEFT method it is timed against (same placement, same N): each soft
    method with a PEFT counterpart, the prefix ones at PEFT's placement."""
    from methods import peft_counterparts

    prefix = peft_prefix_methods()
    return {
        (f"{m}@{PEFT_SEQ2SEQ_PLACEMENT}" if m in prefix else m): m for m in peft_counterparts() if m in soft_methods()
    }


@dataclass
class SpeedConfig:
    """Every knob of the benchmark (the command line maps onto these one to one)."""

    cls_model: str | None = "minilm"
    lm_model: str | None = "smollm2"
    s2s_model: str | None = "tiny_t5"  # the only offline encoder-decoders are the tiny random ones
    s2s_target_length: int = 32  # decoder targets of the seq2seq step (the encoder input is ``length``)
    batch: int = 16
    length: int = 128
    virtual: int = 20
    lm_batch: int = 4  # SmolLM2's LM head alone is 49k x 576; 16 x 128 would take ~30 s a step on 2 cores
    lm_length: int = 128
    lm_methods: tuple[str, ...] | None = None  # None: peft_prefix_methods() (prefix tuning)
    gen_methods: tuple[str, ...] | None = None  # None: every soft method
    gen_batch: int = 4
    prompt_length: int = 64
    new_tokens: int = 32
    eval_examples: int = 1000  # CoNLL-2003 dev sentences (or generated ones) for the eval section
    eval_batch: int = 128
    eval_train_batch: int = 16
    eval_data: str | None = None  # CoNLL-2003 folder; None: ../shared/data/ner/conll2003 when present
    sorted_prompts: int = 24  # mixed-length prompts (8 to 2 x prompt_length tokens): sorted vs file order
    sorted_gen_batch: int = 8
    sorted_new_tokens: int = 8
    warmup: int = 1
    steps: int = 4
    gen_steps: int = 2
    repeats: int = 3
    device: str = "auto"
    dtype: str = "fp32"
    threads: int | None = None
    profile: bool = False
    profile_steps: int = 10
    out: str = "results/speed"
    name: str | None = None
    quick: bool = False
    sections: tuple[str, ...] = ("load", "data", "cls", "lm", "generation", "eval", "s2s", "s2s_generation")

    def __post_init__(self) -> None:
        if self.lm_methods is None:  # the LM step compares ours with PEFT where PEFT prefixes attention
            self.lm_methods = peft_prefix_methods()

    def generation_methods(self) -> tuple[str, ...]:
        """Our methods timed in the generation section."""
        return self.gen_methods if self.gen_methods is not None else soft_methods()


QUICK = dict(
    cls_model="tiny_bert",
    lm_model="tiny_llama",
    batch=2,
    length=16,
    virtual=4,
    lm_batch=2,
    lm_length=16,
    s2s_target_length=4,
    gen_batch=2,
    prompt_length=8,
    new_tokens=4,
    warmup=1,
    steps=2,
    gen_steps=1,
    repeats=1,
    profile_steps=2,
    eval_examples=48,
    eval_batch=16,
    eval_train_batch=8,
    sorted_prompts=8,
    sorted_gen_batch=4,
    sorted_new_tokens=2,
)
