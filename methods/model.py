"""A frozen backbone + one method + a task head, behind one forward for every task kind.

The virtual input positions are stripped before the head, so losses, metrics and labels
always see the real tokens only; positions come from the attention mask, so an example
gets the same output alone or inside a left- or right-padded batch.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from methods.injection import find_attention_sites, select_sites, set_bias_tables, set_prefixes
from methods.registry import MethodConfig, MethodConfigError, NothingToTrainError
from methods.seq2seq import invalid_beyond, label_targets, label_word_ids, map_generations
from methods.soft_prompt import SoftPrompt
from methods.virtual import BackboneSpec
from vocab import IGNORE_INDEX, POOLING, TASK_KINDS, choice_names

# placeholder tokens that never occur in text: [unused7] (BERT), <unused7>, <|im_start|>-style control tokens
_PLACEHOLDER = re.compile(r"\[unused\d+\]|<unused\d+>|<\|.*\|>")


@dataclass
class AdaptedOutput:
    """Loss (when labels were given) and logits over real positions only."""

    loss: torch.Tensor | None
    logits: torch.Tensor


def frequent_token_ids(tokenizer: Any, vocab_size: int, limit: int = 5000) -> torch.Tensor | None:
    """The ``limit`` lowest ids that are ordinary tokens: where ``init='vocab'`` samples from.

    Lester et al. sample the 5,000 most frequent tokens; BPE and WordPiece vocabularies are built
    roughly in frequency order, so low ids approximate that once special and placeholder tokens
    (BERT's ids 1-998 are ``[unused*]``, untrained rows) are skipped.
    """
    if tokenizer is None:
        return None
    special = set(tokenizer.all_special_ids)
    ordinary = sorted(
        index
        for token, index in tokenizer.get_vocab().items()
        if index < vocab_size and index not in special and not _PLACEHOLDER.fullmatch(token)
    )
    return torch.tensor(ordinary[:limit]) if ordinary else None


def backbone_spec(
    backbone: nn.Module, tokenizer: Any = None, prefixed_layers: int | None = None, layer_kinds: tuple[str, ...] = ()
) -> BackboneSpec:
    """Read layer/head geometry from the config: K/V prefixes follow ``num_key_value_heads``.

    ``prefixed_layers``: attention layers that get a prefix (default: ``num_hidden_layers``); an
    encoder-decoder model counts its encoder self-, decoder self- and cross-attention layers.
    ``layer_kinds``: the attention kind of each prefixed layer, in order (per-kind prefix MLPs).
    """
    config = backbone.config
    heads = config.num_attention_heads
    embeddings = backbone.get_input_embeddings()
    tokenize = None
    if tokenizer is not None:
        tokenize = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    return BackboneSpec(
        hidden_size=config.hidden_size,
        num_layers=prefixed_layers if prefixed_layers is not None else config.num_hidden_layers,
        num_kv_heads=getattr(config, "num_key_value_heads", None) or heads,
        head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
        vocab_size=config.vocab_size,
        embedding_std=float(embeddings.weight.detach().float().std()),
        vocab_ids=lambda: frequent_token_ids(tokenizer, config.vocab_size),
        embed=lambda ids: embeddings(ids.to(embeddings.weight.device)),
        layer_kinds=tuple(layer_kinds),
        tokenize=tokenize,
    )


def absolute_position_embedding(backbone: nn.Module) -> nn.Embedding | None:
    """The learned absolute position table of BERT/RoBERTa-style or GPT-2-style models, else None."""
    base = getattr(backbone, "base_model", backbone)
    table = getattr(getattr(base, "embeddings", None), "position_embeddings", None)
    table = table if table is not None else getattr(base, "wpe", None)
    return table if isinstance(table, nn.Embedding) else None


def make_head(
    kind: str, hidden: int, num_labels: int | None, dropout: float = 0.1, text_to_text: bool = False
) -> nn.Module | None:
    """Linear head for the task kind; generation and text-to-text reuse the backbone's LM head."""
    if kind not in TASK_KINDS:
        raise ValueError(f"unknown task kind '{kind}'; choices: {list(TASK_KINDS)}")
    if kind == "generation" or text_to_text:
        return None
    outputs = 1 if kind == "multiple_choice" else num_labels
    if not outputs:
        raise ValueError(f"task kind '{kind}' needs num_labels")
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, outputs))


@contextlib.contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    """Draw from ``seed`` without moving the caller's RNG; without a seed, draw from the global RNG."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _accepted(module: nn.Module) -> set[str]:
    return set(inspect.signature(module.forward).parameters)


def is_encoder_decoder(backbone: nn.Module) -> bool:
    """A whole encoder-decoder model (T5, BART); their encoder stack alone (for NER) is an encoder."""
    return (
        bool(getattr(backbone.config, "is_encoder_decoder", False))
        and hasattr(backbone, "get_encoder")
        and backbone.get_encoder() is not backbone
    )


def attention_layer_count(backbone: nn.Module) -> int:
    """Attention calls per forward: layers, or encoder + 2 x decoder layers (self- and cross-attention)."""
    config = backbone.config
    if not is_encoder_decoder(backbone):
        return config.num_hidden_layers
    decoder_layers = getattr(config, "num_decoder_layers", None) or getattr(config, "decoder_layers", None)
    return config.num_hidden_layers + 2 * (decoder_layers or config.num_hidden_layers)


class AdaptedModel(nn.Module):
    """Backbone (frozen unless the method trains it) + method module + task head."""

    def __init__(
        self,
        backbone: nn.Module,
        method: MethodConfig,
        kind: str,
        num_labels: int | None = None,
        tokenizer: Any = None,
        seed: int | None = None,
        label_names: list[str] | None = None,
        pooling: str = "auto",
        target_bos: bool = False,
    ) -> None:
        """Wrap ``backbone`` for ``kind``; ``seed`` fixes the method's and the head's initial values.

        ``label_names`` are needed for classification on an encoder-decoder model (the label words), and
        ``num_labels`` for multiple choice there (the most choices an example offers: choice1..choiceK);
        ``pooling`` picks what the classification head reads (:data:`POOLING`). ``target_bos`` (BART): every
        decoder target opens with the model's bos token (``<s> … </s>``, as BART is trained) and generation
        forces it as the first token.
        """
        super().__init__()
        method.validate()  # configs built directly (not via from_dict) are checked too
        self.target_start = backbone.config.bos_token_id if target_bos else None
        names = self._label_words_names(backbone, kind, num_labels, label_names)
        self._set_task_reading(backbone, kind, tokenizer, names, pooling)
        self.backbone, self.method, self.kind, self.num_labels = backbone, method, kind, num_labels
        self.sites = find_attention_sites(backbone, self._dummy_inputs(), attention_layer_count(backbone))
        self.attention_modules = select_sites(self.sites, getattr(method, "prefix_placement", "all"))
        set_bias_tables(self.sites, self.attention_modules, getattr(method, "prefix_position_bias", "zero"))
        placed = {id(module) for module in self.attention_modules}
        kinds = tuple(site.role for site in self.sites if id(site.module) in placed)  # the modules' order
        self.spec = spec = backbone_spec(backbone, tokenizer, len(self.attention_modules), kinds)
        # counted before the method adds to it (LoRA's matrices, head-only's untied LM head); tied weights once
        self.backbone_size = sum(p.numel() for p in backbone.parameters())
        with _seeded(seed):  # LoRA's A matrices, the prefix MLP and the head draw from the global RNG
            method.prepare_backbone(backbone)
            self.soft_prompt: SoftPrompt | None = method.build(spec, seed)
            self.head = make_head(kind, spec.hidden_size, num_labels, text_to_text=self.label_words is not None)
            if self.head is None:  # generation and text-to-text: the backbone's LM head reads the states
                method.prepare_lm_head(backbone)
        for module in (self.soft_prompt, self.head):
            if module is not None:
                module.to(self.device)
        self.causal = bool(getattr(self.sites[0].module, "is_causal", False))
        # RoBERTa-style embeddings number real tokens from padding_idx + 1
        padding_idx = getattr(getattr(backbone.base_model, "embeddings", None), "padding_idx", None)
        self.position_offset = padding_idx + 1 if padding_idx is not None else 0
        self.accepts = _accepted(backbone)
        self.keep_positions = getattr(method, "virtual_positions", "shift") == "keep"
        self.position_embedding = self._check_fidelity_knobs(backbone, kind)
        self.keep_prefix = False  # gradient checkpointing re-runs attention during backward
        if not any(p.requires_grad for p in self.parameters()):
            raise NothingToTrainError(
                f"method '{method.name}' has nothing to train for task kind '{kind}': "
                "the backbone is frozen and neither a task head nor the LM head trains"
            )

    @staticmethod
    def _label_words_names(
        backbone: nn.Module, kind: str, num_labels: int | None, label_names: list[str] | None
    ) -> list[str] | None:
        """Label names, or on an encoder-decoder the choice names (``num_labels`` = the most choices)."""
        if not (kind == "multiple_choice" and is_encoder_decoder(backbone)):
            return label_names
        if not num_labels:
            raise MethodConfigError(
                "multiple choice on an encoder-decoder model needs num_labels (the most choices an example has)"
            )
        return choice_names(num_labels)

    def _set_task_reading(
        self, backbone: nn.Module, kind: str, tokenizer: Any, label_names: list[str] | None, pooling: str
    ) -> None:
        """How the task reads the backbone: label words (text-to-text on seq2seq) or a head over a pooled token."""
        self.seq2seq = is_encoder_decoder(backbone)
        # text-to-text (Lester et al.): the decoder writes the label word; no classification head
        self.label_words = None
        if self.seq2seq and kind in ("classification", "multiple_choice"):
            words = label_word_ids(tokenizer, label_names, backbone.config.eos_token_id)
            start = [self.target_start] if self.target_start is not None else []
            self.label_words = [start + word for word in words]
        if pooling not in POOLING:
            raise MethodConfigError(f"model.pooling={pooling!r}; choices: {list(POOLING)}")
        if pooling == "pooler" and getattr(backbone, "pooler", None) is None:
            raise MethodConfigError(
                f"model.pooling=pooler: {type(backbone).__name__} has no pretrained pooler; use first, last or mean"
            )
        if pooling != "pooler" and getattr(backbone, "pooler", None) is not None:
            # the head reads a token itself: an unused pooler (dense+tanh) would be computed for nothing
            # and counted as trainable under full fine-tuning without ever training
            backbone.pooler = None
        self.pooling = pooling

    def _dummy_inputs(self) -> dict[str, torch.Tensor]:
        """A dry-run batch; an encoder-decoder gets a shorter decoder input so the sites can be told apart."""
        dummy = {"input_ids": torch.tensor([[1, 2, 3]], device=self.device)}
        if self.seq2seq:
            dummy["decoder_input_ids"] = torch.tensor([[1, 2]], device=self.device)
        return dummy

    @property
    def device(self) -> torch.device:
        """Where the backbone's weights (and so the inputs) live."""
        return next(self.backbone.parameters()).device

    @property
    def num_virtual_tokens(self) -> int:
        """Virtual positions inserted into the input (0 for prefix-only methods)."""
        prompt = self.soft_prompt
        return prompt.n if prompt is not None and prompt.input_tokens else 0

    def _backbone_inputs(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        """Embeddings with the virtual tokens in front, their mask and mask-derived positions."""
        embeds = self.backbone.get_input_embeddings()(input_ids)
        mask = attention_mask
        n = self.num_virtual_tokens
        if n:
            batch = input_ids.shape[0]
            prompt = self.soft_prompt.prompt().to(embeds.dtype).unsqueeze(0).expand(batch, -1, -1)
            embeds = torch.cat([prompt, embeds], dim=1)
            mask = torch.cat([mask.new_ones(batch, n), mask], dim=1)
            if token_type_ids is not None:
                token_type_ids = torch.cat([token_type_ids.new_zeros(batch, n), token_type_ids], dim=1)
        inputs = {"inputs_embeds": embeds, "attention_mask": mask}
        if "position_ids" in self.accepts:
            inputs["position_ids"] = self._position_ids(mask, n)
        if n and self.keep_positions:
            # virtual tokens sit at the first real position's id; taking its embedding out again leaves
            # them with none, while the real tokens keep the positions they have without the method
            correction = self.position_embedding(inputs["position_ids"][:1, :1]).to(embeds.dtype)
            virtual = embeds[:, :n] - correction
            inputs["inputs_embeds"] = torch.cat([virtual, embeds[:, n:]], dim=1)
        if token_type_ids is not None and "token_type_ids" in self.accepts:
            inputs["token_type_ids"] = token_type_ids
        return inputs

    def _position_ids(self, mask: torch.Tensor, n: int) -> torch.Tensor:
        """Positions from the mask: ``shift`` numbers virtual and real tokens together (real ones move
        to N..N+L-1); ``keep`` numbers the real tokens alone (0..L-1) and gives virtual ones position 0."""
        if not (n and self.keep_positions):
            return (mask.long().cumsum(-1) - 1).clamp(min=0) + self.position_offset
        real = (mask[:, n:].long().cumsum(-1) - 1).clamp(min=0)
        return torch.cat([real.new_zeros(real.shape[0], n), real], dim=1) + self.position_offset

    def _check_fidelity_knobs(self, backbone: nn.Module, kind: str) -> nn.Embedding | None:
        """The absolute position table ``virtual_positions=keep`` needs, and the pooling's constraints."""
        if self.pooling == "first" and self.causal:
            raise MethodConfigError(
                "model.pooling=first on a decoder reads a token that attends to nothing else; use auto, last or mean"
            )
        if not self.keep_positions:
            return None
        table = absolute_position_embedding(backbone)
        if table is None or "position_ids" not in self.accepts:
            raise MethodConfigError(
                f"method.virtual_positions=keep needs absolute position embeddings; "
                f"{type(backbone).__name__} has none (rotary or relative): use shift"
            )
        if kind == "generation":
            raise MethodConfigError(
                "method.virtual_positions=keep is not supported for generation "
                "(generate() numbers positions itself): use shift"
            )
        return table

    def _attach_prefixes(self, visible: bool = True) -> None:
        prefixes = self.soft_prompt.prefixes() if self.soft_prompt is not None else None
        set_prefixes(self.attention_modules, prefixes, visible)

    def encode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        prefix_visible: bool = True,
    ) -> torch.Tensor:
        """Hidden states (or LM logits for generation) at the real positions, (B, L, ·)."""
        inputs = self._backbone_inputs(input_ids, attention_mask, token_type_ids)
        if "use_cache" in self.accepts:
            inputs["use_cache"] = False
        strip = self.num_virtual_tokens
        if self.kind == "generation" and strip and "logits_to_keep" in self.accepts:
            # the LM head (vocab x hidden) runs on the real positions only, which are the last L
            inputs["logits_to_keep"] = input_ids.shape[1]
            strip = 0
        self._attach_prefixes(prefix_visible)
        try:
            out = self.backbone(**inputs)
        finally:
            if not self.keep_prefix:
                set_prefixes(self.attention_modules, None)
        states = out.logits if self.kind == "generation" else out.last_hidden_state
        return states[:, strip:] if strip else states

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """What the classification head reads (real positions only): ``auto`` = the first real token
        (encoders) or the last (decoders); ``first``/``last``; ``mean`` over real tokens; ``pooler`` =
        the checkpoint's pooler (dense + tanh) on the first real token."""
        if self.pooling == "mean":
            weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1)
        if self.pooling == "last" or (self.pooling == "auto" and self.causal):
            index = attention_mask.shape[1] - 1 - attention_mask.flip(-1).long().argmax(-1)
        else:
            index = attention_mask.long().argmax(-1)
        token = hidden[torch.arange(hidden.shape[0], device=hidden.device), index]
        if self.pooling == "pooler":
            return self.backbone.pooler(token.unsqueeze(1))  # the pooler reads position 0 of what it gets
        return token

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        choice_mask: torch.Tensor | None = None,
        prefix_visible: bool = True,
        choice_count: torch.Tensor | None = None,
        **_: Any,
    ) -> AdaptedOutput:
        """Logits for the task kind; multiple choice takes (B, choices, L) inputs, or on an encoder-decoder
        one (B, L) input listing the choices plus each example's ``choice_count``."""
        if self.seq2seq:
            out = self._forward_text_to_text(input_ids, attention_mask, labels, prefix_visible)
            if choice_count is not None and out.logits is not None and not self.training:
                out.logits = invalid_beyond(out.logits, choice_count)
            return out
        features = self.head_features(input_ids, attention_mask, token_type_ids, prefix_visible)
        return self.from_features(features, labels, choice_mask)

    def head_features(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        prefix_visible: bool = True,
    ) -> torch.Tensor:
        """What the head reads: pooled states (B, H) for classification, (B, choices, H) for multiple
        choice, states at the real positions (B, L, H) for token classification, LM logits for generation."""
        if self.kind != "multiple_choice":
            states = self.encode(input_ids, attention_mask, token_type_ids, prefix_visible)
            return self.pool(states, attention_mask) if self.kind == "classification" else states
        batch, choices, length = input_ids.shape
        flat = lambda t: None if t is None else t.reshape(batch * choices, length)  # noqa: E731
        mask = flat(attention_mask)
        states = self.encode(flat(input_ids), mask, flat(token_type_ids), prefix_visible)
        return self.pool(states, mask).view(batch, choices, -1)

    def from_features(
        self, features: torch.Tensor, labels: torch.Tensor | None = None, choice_mask: torch.Tensor | None = None
    ) -> AdaptedOutput:
        """The head (none for generation) and the loss on :meth:`head_features`' output."""
        logits = features if self.kind == "generation" else self.head(features.float())
        if self.kind == "multiple_choice":
            logits = logits.squeeze(-1)
            if choice_mask is not None:
                logits = logits.masked_fill(~choice_mask.bool(), torch.finfo(logits.dtype).min)
        return AdaptedOutput(self._loss(logits, labels) if labels is not None else None, logits)

    @property
    def fixed_features(self) -> bool:
        """Whether :meth:`head_features` of an input stays the same while this model trains (in eval
        mode): the method declares that it leaves the backbone's output alone, nothing in the backbone
        trains, no soft prompt is attached, and a separate head reads the features (not text-to-text)."""
        return (
            not self.method.changes_backbone_output()
            and self.soft_prompt is None
            and self.head is not None
            and not self.seq2seq
            and not any(p.requires_grad for p in self.backbone.parameters())
        )

    def decoder_logits(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, targets: torch.Tensor, prefix_visible: bool = True
    ) -> torch.Tensor:
        """Encoder-decoder: teacher-forced LM logits (B, T, vocab) for decoder ``targets`` (IGNORE_INDEX = pad)."""
        inputs = self._backbone_inputs(input_ids, attention_mask, None)
        inputs.pop("position_ids", None)
        inputs["decoder_input_ids"] = self.backbone.prepare_decoder_input_ids_from_labels(labels=targets)
        inputs["use_cache"] = False
        self._attach_prefixes(prefix_visible)
        try:
            return self.backbone(**inputs).logits
        finally:
            if not self.keep_prefix:
                set_prefixes(self.attention_modules, None)

    def _forward_text_to_text(self, input_ids, attention_mask, labels, prefix_visible) -> AdaptedOutput:
        """Generation: loss on the target.  Classification: loss on the label word; in eval mode the
        logits are the mapped greedy generations, (B, num_labels + 1) with the last column = invalid."""
        targets = labels
        if self.label_words is not None and labels is not None:
            targets = label_targets(self.label_words, labels)  # the label words carry the start token
        elif self.target_start is not None and labels is not None:  # generation: <s> + target + </s>
            targets = F.pad(labels, (1, 0), value=self.target_start)
        logits, loss = None, None
        if targets is not None and targets.shape[-1] > 0:
            logits = self.decoder_logits(input_ids, attention_mask, targets, prefix_visible)
            loss = F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=IGNORE_INDEX
            )
        if self.label_words is not None and not self.training:
            longest = max(len(word) for word in self.label_words)
            eos = self.backbone.config.eos_token_id
            tokens = self.generate(
                input_ids,
                attention_mask,
                max_new_tokens=longest,
                do_sample=False,
                num_beams=1,
                eos_token_id=eos,
                pad_token_id=self.backbone.config.pad_token_id,
                prefix_visible=prefix_visible,
            )
            logits = map_generations(tokens, self.label_words, eos)
        return AdaptedOutput(loss, logits)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.kind == "generation":  # next-token prediction: position t predicts label t+1
            # shift the labels, not the (B, L, vocab) logits: slicing those copies them, twice with the backward
            labels = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
        return F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=IGNORE_INDEX
        )

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """New tokens only.  The prefix is computed once per call; the model's KV cache stays on."""
        if self.kind != "generation" and self.label_words is None:
            raise ValueError(f"generate() needs task kind 'generation' (a causal-LM backbone), not '{self.kind}'")
        inputs = self._backbone_inputs(input_ids, attention_mask, None)
        inputs.pop("position_ids", None)  # generate derives positions from the mask the same way
        if self.target_start is not None:  # trained targets open with it: generation starts with it too
            kwargs.setdefault("forced_bos_token_id", self.target_start)
        self._attach_prefixes(kwargs.pop("prefix_visible", True))
        try:
            tokens = self.backbone.generate(**inputs, **kwargs)
        finally:
            set_prefixes(self.attention_modules, None)
        if self.seq2seq:  # an encoder-decoder's output opens with its decoder start token: drop it
            if isinstance(tokens, torch.Tensor):
                return tokens[:, 1:]
            tokens.sequences = tokens.sequences[:, 1:]
        return tokens

    def enable_gradient_checkpointing(self) -> None:
        """Recompute activations in backward; prefixes stay attached so recomputation sees them."""
        self.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.keep_prefix = True

    # ---- accounting and checkpoints -------------------------------------------------------------
    def parameter_counts(self) -> dict[str, float]:
        """trainable (incl. MLP and head), stored (folded method + head), head, backbone (the model's own
        parameters, tied ones once, without what the method added: LoRA's matrices, an untied LM head)."""
        head = sum(p.numel() for p in self.head.parameters()) if self.head is not None else 0
        backbone = self.backbone_size
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        method_stored = self.soft_prompt.stored_count() if self.soft_prompt is not None else 0
        unique = {t.data_ptr(): t.numel() for t in self.method.adapter_state(self.backbone).values()}
        stored = method_stored + sum(unique.values()) + head
        return {
            "trainable": trainable,
            "stored": stored,
            "head": head,
            "backbone": backbone,
            "method_trainable": trainable - head,
            "method_stored": stored - head,
            "trainable_percent": 100.0 * trainable / backbone,
        }

    def adapter_tensors(self) -> dict[str, torch.Tensor]:
        """Everything a task checkpoint keeps, with the prefix MLP folded into its output."""
        tensors: dict[str, torch.Tensor] = {}
        if self.soft_prompt is not None:
            tensors.update({f"soft_prompt.{k}": v for k, v in self.soft_prompt.stored_state().items()})
        if self.head is not None:
            tensors.update({f"head.{k}": v for k, v in self.head.state_dict().items()})
        tensors.update({f"backbone.{k}": v for k, v in self.method.adapter_state(self.backbone).items()})
        return {
            k: v.detach().float().contiguous().clone() if v.is_floating_point() else v.clone()
            for k, v in tensors.items()
        }

    def save_adapter(self, directory: str | Path) -> Path:
        """Write ``adapter.safetensors`` + ``adapter.json`` (method, kind, labels)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file(self.adapter_tensors(), str(directory / "adapter.safetensors"))
        meta = {
            "method": self.method.name,
            "config": vars(self.method),
            "kind": self.kind,
            "num_labels": self.num_labels,
        }
        (directory / "adapter.json").write_text(json.dumps(meta, indent=2, default=str))
        return directory / "adapter.safetensors"

    def load_adapter(self, directory: str | Path) -> None:
        """Load what :meth:`save_adapter` wrote into this (same-shaped) model."""
        tensors = load_file(str(Path(directory) / "adapter.safetensors"), device=str(self.device))
        groups: dict[str, dict[str, torch.Tensor]] = {"soft_prompt": {}, "head": {}, "backbone": {}}
        for key, value in tensors.items():
            group, _, name = key.partition(".")
            groups[group][name] = value
        if self.soft_prompt is not None:
            self.soft_prompt.load_stored_state(groups["soft_prompt"])
        if self.head is not None:
            self.head.load_state_dict(groups["head"])
        if groups["backbone"]:
            dtype_state = {k: v.to(self.backbone.state_dict()[k].dtype) for k, v in groups["backbone"].items()}
            self.backbone.load_state_dict(dtype_state, strict=False)
