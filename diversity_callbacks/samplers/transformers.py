"""``TransformersSampler``: sample a Hugging Face causal language model, one seed per completion.

``model.generate`` draws every row of a batch from one random stream, so a completion changes
with the batch it is drawn in, the number of ranks and the order of the prompts. This sampler runs
its own batched decoding loop (left padding, attention mask, position ids, KV cache) and draws
every random choice of completion ``i`` from generator ``i`` alone: each step draws one
exponential variate per vocabulary entry from the row's own generator and picks
``argmax(p / E)``, the exponential race that ``torch.multinomial`` runs for one draw (the same
token as ``torch.multinomial(p, 1, generator=g)`` on the CPU). A row that has finished draws
nothing more. So a completion depends on its prompt, its seed and the weights only, up to the
rounding of batched matrix products (a draw could flip only where two tokens' ``p / E`` tie to
about 1e-6).

Under FSDP every forward is a collective: the ranks agree after each token whether any of them
is still decoding, and all decode until none is, as ``generate(synced_gpus=True)`` does.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from diversity_callbacks.evaluation.sampling import SampleFn, eval_mode
from diversity_callbacks.evaluation.sharding import sharding_of
from diversity_callbacks.samplers.contract import check_batch, split_call
from diversity_callbacks.utilities import distributed
from diversity_callbacks.utilities.checks import check_positive_int

_INSTALL = 'pip install "diversity-callbacks[text]"'


@dataclass(frozen=True)
class Decoding:
    """How each next token is chosen (validated by :class:`TransformersSampler`)."""

    max_new_tokens: int
    do_sample: bool
    temperature: float
    top_k: int | None
    top_p: float | None
    stop_strings: tuple[str, ...]
    stop_at_eos: bool


class TransformersSampler:
    """Draw completions from a Hugging Face causal LM as the sampling contract asks.

    One completion per (prompt, generator), decoded in batches, with every random choice of
    completion ``i`` drawn from generator ``i`` (see the module docstring): a completion is the
    same alone or batched, at every world size and at every evaluation of unchanged weights. Use
    it as ``DiversityCallback(prompts, sample_fn=TransformersSampler("model", tokenizer),
    value_range=None, embedder=SentenceEmbedder(...))``, with a
    :class:`~diversity_callbacks.DiversityEvaluator` as its ``sample_fn``, or with
    :class:`~diversity_callbacks.integrations.hf.DiversityTrainerCallback`.

    Each call tokenises the prompts (the tokenizer's special tokens added, no padding), pads them
    on the left, moves the model to the generators' device when it is unsharded and elsewhere,
    puts it in eval mode for the call (each submodule's mode is put back after) and returns the
    completions only: the new tokens decoded without special tokens, cut before the first stop
    string, without the prompt. A completion ends at an end-of-sequence token (the model's
    ``generation_config.eos_token_id``, else the tokenizer's), at a stop string, or after
    ``max_new_tokens`` tokens.

    Args:
        model: a ``PreTrainedModel`` (or a ``peft`` model around one); the name of the
            LightningModule attribute holding one, read at every call, so that the trained
            weights and the active LoRA adapter are the ones sampled; or ``None``: the module
            the caller passes is the model (what the Hugging Face ``Trainer`` adapter passes).
        tokenizer: a Hugging Face tokenizer, or a name or folder for ``AutoTokenizer``.
        max_new_tokens: the most tokens a completion has.
        do_sample: draw tokens at random (``False``: greedy, the most likely token).
        temperature: divides the logits before sampling.
        top_k: sample among the ``top_k`` most likely tokens only.
        top_p: sample among the smallest set of most likely tokens whose probabilities add up
            to at least ``top_p`` (nucleus sampling).
        stop_strings: a completion ends at the first of these; it is cut before it.
        stop_at_eos: end a completion at an end-of-sequence token.

    Raises:
        ImportError: if transformers is not installed.
        ValueError: for an invalid option.

    Examples:
        >>> sampler = TransformersSampler("model", tokenizer=object(), max_new_tokens=32, top_p=0.9)
        >>> sampler.value_range is None  # strings, not images
        True
    """

    value_range = None
    """Completions are strings, not images: what ``DiversityCallback`` reads."""

    def __init__(
        self,
        model: Any = None,
        tokenizer: Any = None,
        *,
        max_new_tokens: int = 64,
        do_sample: bool = True,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        stop_strings: Sequence[str] = (),
        stop_at_eos: bool = True,
    ) -> None:
        _require_transformers()
        if isinstance(model, str) and not model.isidentifier():
            raise ValueError(
                f"`model` must be a model, the name of an attribute or None, got {model!r}"
            )
        if tokenizer is None:
            raise TypeError("`tokenizer` is required: a Hugging Face tokenizer, a name or a folder")
        if isinstance(tokenizer, str):
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        self.model = model
        self.tokenizer = tokenizer
        self.decoding = _decoding(
            max_new_tokens, do_sample, temperature, top_k, top_p, stop_strings, stop_at_eos
        )

    def __call__(self, *args: Any) -> list[str]:
        """``sampler(prompts, generators)``, the sampling contract (``module`` None)."""
        module, prompts, generators = split_call("TransformersSampler", args)
        return self.sample(prompts, generators, module=module)

    def bind(self, module: torch.nn.Module | None) -> SampleFn:
        """This sampler on ``module``'s own attribute or model: ``bind(module)(prompts,
        generators)``; the callbacks bind it to the module they evaluate."""
        return functools.partial(self.sample, module=module)

    @torch.no_grad()
    def sample(
        self,
        prompts: list[str],
        generators: list[torch.Generator],
        module: torch.nn.Module | None = None,
    ) -> list[str]:
        """One completion per (prompt, generator), without the prompt.

        Args:
            prompts: one prompt per completion.
            generators: one generator per completion, all on the device to sample on.
            module: the LightningModule holding the model when ``model`` is a name; the model
                itself when ``model`` is None.
        """
        check_batch(prompts, generators, "TransformersSampler", "language models")
        model = self.resolve(module)
        device = generators[0].device
        sharded = sharding_of(model) is not None
        if not sharded:
            _move_to(model, device)
        rows = [self._encode(i, prompt) for i, prompt in enumerate(prompts)]
        with eval_mode(model):
            tokens = decode_loop(
                model,
                rows,
                generators,
                self.decoding,
                pad_id=self._pad_id(),
                eos_ids=self._eos_ids(model) if self.decoding.stop_at_eos else (),
                stopped=self._stopped if self.decoding.stop_strings else None,
                synced=sharded and distributed.rank_and_world_size()[1] > 1,
            )
        return [self._text(row) for row in tokens]

    def resolve(self, module: torch.nn.Module | None = None) -> Any:
        """The model to sample: the one given, ``module``'s attribute of that name, or
        ``module`` itself when ``model`` is None."""
        if self.model is None or isinstance(self.model, str):
            if module is None:
                raise TypeError(
                    f"TransformersSampler(model={self.model!r}) samples the caller's module: use "
                    "it as a callback's sample_fn, call it as sampler.bind(module)(prompts, "
                    "generators), or pass the model itself"
                )
            if self.model is None:
                return module
            model = getattr(module, self.model, None)
            if model is None:
                found = [n for n, v in vars(module).get("_modules", {}).items() if _is_lm(v)]
                raise AttributeError(
                    f"`model`={self.model!r}: {type(module).__name__} has no such attribute "
                    f"(attributes holding a language model: {found or 'none'})"
                )
            return model
        return self.model

    def _encode(self, index: int, prompt: str) -> list[int]:
        ids = list(self.tokenizer(prompt)["input_ids"])
        if not ids:
            raise ValueError(
                f"prompts[{index}] ({prompt!r}) tokenizes to no token, so there is nothing to "
                "condition the first token on: give a non-empty prompt (or a tokenizer that adds "
                "a beginning-of-sequence token)"
            )
        return ids

    def _pad_id(self) -> int:
        for token in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id):
            if token is not None:
                return int(token)
        return 0  # masked out: any id does

    def _eos_ids(self, model: Any) -> tuple[int, ...]:
        config = getattr(model, "generation_config", None)
        eos = getattr(config, "eos_token_id", None)
        if eos is None:
            eos = self.tokenizer.eos_token_id
        if eos is None:
            return ()
        return tuple(int(t) for t in (eos if isinstance(eos, (list, tuple)) else [eos]))

    def _decoded(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    def _stopped(self, tokens: list[int]) -> bool:
        text = self._decoded(tokens)
        return any(stop in text for stop in self.decoding.stop_strings)

    def _text(self, tokens: list[int]) -> str:
        text = self._decoded(tokens)
        cuts = [text.find(stop) for stop in self.decoding.stop_strings]
        cut = min((c for c in cuts if c >= 0), default=len(text))
        return text[:cut]

    def __repr__(self) -> str:
        model = (
            self.model if self.model is None or isinstance(self.model, str) else type(self.model)
        )
        return f"TransformersSampler({model!r}, {self.decoding})"


def decode_loop(
    model: Any,
    rows: list[list[int]],
    generators: list[torch.Generator],
    decoding: Decoding,
    *,
    pad_id: int,
    eos_ids: Sequence[int] = (),
    stopped: Any = None,
    synced: bool = False,
) -> list[list[int]]:
    """The new tokens of each row (an end-of-sequence token kept), decoded in one batch.

    Args:
        model: a causal LM taking ``input_ids``, ``attention_mask``, ``position_ids`` and a
            KV cache.
        rows: each prompt's token ids.
        generators: one per row; row ``i``'s draws come from ``generators[i]`` alone.
        decoding: the options.
        pad_id: the id put left of shorter prompts and after a finished row's last token.
        eos_ids: tokens that end a row.
        stopped: ``stopped(new_tokens) -> bool``, checked after each token of a running row.
        synced: decode until no rank has a running row (FSDP: every forward is a collective).
    """
    device = generators[0].device
    inputs, mask = _left_padded(rows, pad_id, device)
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    cache_argument, keep_argument = _forward_arguments(model)
    running = torch.ones(len(rows), dtype=torch.bool, device=device)
    eos = torch.tensor(list(eos_ids), dtype=torch.long, device=device)
    new: list[list[int]] = [[] for _ in rows]
    cache = None
    for _ in range(decoding.max_new_tokens):
        extra = {cache_argument: cache} if cache is not None else {}
        if keep_argument is not None:
            extra[keep_argument] = 1  # logits of the last position only
        output = model(
            input_ids=inputs, attention_mask=mask, position_ids=positions, use_cache=True, **extra
        )
        cache = getattr(output, cache_argument)
        token = choose_tokens(output.logits[:, -1].float(), generators, running, decoding)
        token = torch.where(running, token, torch.full_like(token, pad_id))
        for i in running.nonzero().flatten().tolist():
            new[i].append(int(token[i]))
        running &= ~torch.isin(token, eos)
        if stopped is not None:
            for i in running.nonzero().flatten().tolist():
                if stopped(new[i]):
                    running[i] = False
        if not (distributed.any_rank(bool(running.any()), device) if synced else running.any()):
            break
        inputs = token[:, None]
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        positions = positions[:, -1:] + 1
    return new


def choose_tokens(
    logits: Tensor, generators: list[torch.Generator], running: Tensor, decoding: Decoding
) -> Tensor:
    """The next token of each row: the most likely one, or one drawn from row ``i``'s own
    generator (rows that are not running draw nothing and get an arbitrary token)."""
    if not decoding.do_sample:
        return logits.argmax(dim=-1)
    logits = logits / decoding.temperature
    if decoding.top_k is not None and decoding.top_k < logits.shape[-1]:
        kth = logits.topk(decoding.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    if decoding.top_p is not None and decoding.top_p < 1:
        logits = _nucleus(logits, decoding.top_p)
    probabilities = logits.softmax(dim=-1)
    race = torch.ones_like(probabilities)
    for i in running.nonzero().flatten().tolist():
        race[i].exponential_(generator=generators[i])
    return (probabilities / race).argmax(dim=-1)


def _nucleus(logits: Tensor, top_p: float) -> Tensor:
    """Mask all but the smallest set of most likely tokens with probability >= ``top_p``."""
    ordered, order = logits.sort(dim=-1, descending=True)
    probabilities = ordered.softmax(dim=-1)
    before = probabilities.cumsum(dim=-1) - probabilities
    drop = before >= top_p  # the mass of the more likely tokens already reaches top_p
    return logits.masked_fill(drop.scatter(-1, order, drop), -math.inf)


def _left_padded(rows: list[list[int]], pad_id: int, device: torch.device) -> tuple[Tensor, Tensor]:
    width = max(map(len, rows))
    inputs = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        inputs[i, width - len(row) :] = torch.tensor(row)
        mask[i, width - len(row) :] = 1
    return inputs.to(device), mask.to(device)


def _forward_arguments(model: Any) -> tuple[str, str | None]:
    """The model's names for the KV cache (``cache`` in transformers 5, ``past_key_values``
    before) and for computing the last position's logits only (None where it has none)."""
    from transformers import PreTrainedModel

    # A peft or FSDP wrapper passes keyword arguments through to the transformers model inside.
    base = next((m for m in model.modules() if isinstance(m, PreTrainedModel)), model)
    return _signature_names(type(base))


@functools.cache
def _signature_names(kind: type) -> tuple[str, str | None]:
    parameters = inspect.signature(kind.forward).parameters
    cache = "cache" if "cache" in parameters else "past_key_values"
    keep = next((k for k in ("logits_to_keep", "num_logits_to_keep") if k in parameters), None)
    return cache, keep


def _decoding(
    max_new_tokens: int,
    do_sample: bool,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    stop_strings: Sequence[str],
    stop_at_eos: bool,
) -> Decoding:
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, numbers.Real)
        or not temperature > 0
    ):
        raise ValueError(f"`temperature` must be a number > 0, got {temperature!r}")
    if top_p is not None and (
        isinstance(top_p, bool) or not isinstance(top_p, numbers.Real) or not 0 < top_p <= 1
    ):
        raise ValueError(f"`top_p` must be a number in (0, 1] or None, got {top_p!r}")
    if isinstance(stop_strings, str) or not all(isinstance(s, str) and s for s in stop_strings):
        raise TypeError(
            f"`stop_strings` must be a sequence of non-empty strings, got {stop_strings!r}"
        )
    return Decoding(
        max_new_tokens=check_positive_int(max_new_tokens, "max_new_tokens"),
        do_sample=bool(do_sample),
        temperature=float(temperature),
        top_k=None if top_k is None else check_positive_int(top_k, "top_k"),
        top_p=None if top_p is None else float(top_p),
        stop_strings=tuple(stop_strings),
        stop_at_eos=bool(stop_at_eos),
    )


def _move_to(model: Any, device: torch.device) -> None:
    parameter = next(model.parameters(), None)
    if parameter is not None and parameter.device != device:
        model.to(device)


def _is_lm(value: Any) -> bool:
    """A model with a generation config: a transformers model, or a peft model around one."""
    return isinstance(value, torch.nn.Module) and hasattr(value, "generation_config")


def _require_transformers() -> None:
    if importlib.util.find_spec("transformers") is None:
        raise ImportError(f"TransformersSampler needs transformers: {_INSTALL}")
