"""CLIP embeddings of generator outputs and prompts, on open_clip."""

from __future__ import annotations

import os
import pickle
import socket
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from diversity_callbacks.embedders.base import check_prompts
from diversity_callbacks.embedders.preprocess import TensorPreprocess
from diversity_callbacks.images import ValueRange, check_images, value_range_bounds

if TYPE_CHECKING:  # pragma: no cover
    from types import ModuleType

Precision = Literal["fp32", "bf16", "fp16"]

_AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {
    "fp32": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}


def _import_open_clip() -> ModuleType:
    try:
        import open_clip
    except ImportError as err:
        raise ImportError(
            "CLIPEmbedder needs open_clip_torch; install it with: "
            "pip install diversity-callbacks[clip]"
        ) from err
    return open_clip


class CLIPEmbedder:
    """CLIP image and text embeddings for diversity metrics, batched and on the input's device.

    Images go through the model's own preprocessing (size, resize mode, interpolation, crop or
    pad, mean and std from ``model.visual.preprocess_cfg``) computed on tensors, on the device
    they arrive on, without a round trip through PIL. The result matches open_clip's PIL
    transform of the same uint8 images up to PIL's rounding to uint8 between steps: at most
    about one uint8 step per pixel, cosine similarity of the embeddings above 0.9999 (see
    ``tests/embedders/test_preprocess.py`` for the measured bounds, including a few steps at
    isolated pixels when the two axes are rescaled by different factors). Prompts are tokenised
    with the model's tokenizer and embedded once per embedder; later calls read a cache.

    The model is frozen (eval mode, no gradients) and moves, on first use, to the device given
    here or else to the device of the images it is asked to embed.

    Args:
        model_name: an open_clip architecture, e.g. ``"ViT-B-32"`` (see
            ``open_clip.list_models()``). Names with open_clip's ``"hf-hub:"`` or ``"local-dir:"``
            schema are passed through; their weights come from there and ``pretrained`` is
            ignored by open_clip.
        pretrained: where the weights come from.

            - an open_clip tag for ``model_name`` (``open_clip.list_pretrained_tags_by_model``),
              downloaded by open_clip into the Hugging Face cache on first use;
            - a path to a local weights file (a ``state_dict`` saved with ``torch.save``, or
              open_clip's ``open_clip_pytorch_model.bin``), for machines without network. Such
              a file gets open_clip's default preprocessing for the architecture; a tag with
              different preprocessing (SigLIP's ``"squash"``, other mean and std) needs
              ``preprocess_cfg=open_clip.get_pretrained_cfg(model_name, tag)``. OpenAI's
              weights need ``model_name="ViT-B-32-quickgelu"``;
            - ``None``: random weights, drawn from ``seed`` so every rank builds the same model
              (for tests and smoke runs; random features measure nothing meaningful).
        device: where the model runs. ``None`` follows the images: the model moves to the
            device of each batch (once, then stays while batches keep coming from there).
        precision: ``"fp32"``; or ``"bf16"`` / ``"fp16"``, which run the encoders under
            ``torch.autocast`` with that dtype on the model's device (preprocessing stays in
            float32, outputs are float32). Autocast works on CPU too, but is only faster where
            the CPU has bfloat16 units; on GPUs ``"bf16"`` is the fast choice. ``"fp32"`` also
            switches off any autocast the caller is in, so outputs do not depend on it.
        batch_size: the most images or prompts encoded in one forward pass; larger inputs are
            split into chunks (bounds memory, not results).
        value_range: the range :meth:`embed_images` assumes when not told otherwise:
            ``"[0,1]"``, ``"[-1,1]"`` or ``"uint8"`` (see :mod:`diversity_callbacks.images`).
        normalize: ``True`` returns unit-norm embeddings; ``False`` the raw projections. Kernel
            bandwidths depend on the choice: SCE's published ``sigma=3.5`` is for raw ViT-B/32
            embeddings; see docs/embedders.md ("Raw or unit-norm embeddings") for unit-norm ones.
        seed: seed of the random weights when ``pretrained=None`` (the global RNG is left as
            it was).
        model_kwargs: extra keyword arguments for ``open_clip.create_model`` that override the
            architecture config (e.g. ``embed_dim``, ``vision_cfg``, ``text_cfg``).
        preprocess_cfg: overrides of ``model.visual.preprocess_cfg`` (keys ``size``, ``mean``,
            ``std``, ``interpolation``, ``resize_mode``, ``fill_color``; others are ignored).

    Raises:
        ImportError: if open_clip_torch is not installed.
        ValueError: for an unknown ``model_name``, an unknown tag or a missing file, or an
            invalid argument.
        RuntimeError: if the weights cannot be downloaded or loaded.

    Examples:
        >>> embedder = CLIPEmbedder(
        ...     pretrained=None,
        ...     model_kwargs={
        ...         "embed_dim": 32,
        ...         "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
        ...         "text_cfg": {"context_length": 16, "width": 64, "heads": 2, "layers": 1},
        ...     },
        ... )
        >>> generated = torch.rand(4, 3, 64, 64) * 2 - 1  # a generator's tanh output
        >>> embedder.embed_images(generated, value_range="[-1,1]").shape
        torch.Size([4, 32])
        >>> embedder.embed_texts(["a red car", "a blue car"]).norm(dim=1).allclose(torch.ones(2))
        True
    """

    def __init__(
        self,
        model_name: str = "ViT-B-32",
        pretrained: str | os.PathLike[str] | None = "laion2b_s34b_b79k",
        *,
        device: str | torch.device | None = None,
        precision: Precision = "fp32",
        batch_size: int = 256,
        value_range: ValueRange = "[0,1]",
        normalize: bool = True,
        seed: int = 0,
        model_kwargs: Mapping[str, Any] | None = None,
        preprocess_cfg: Mapping[str, Any] | None = None,
    ) -> None:
        if precision not in _AUTOCAST_DTYPES:
            raise ValueError(
                f"precision must be one of {list(_AUTOCAST_DTYPES)}, got {precision!r}"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if not isinstance(normalize, bool):
            raise TypeError(f"normalize must be a bool, got {type(normalize).__name__}")
        value_range_bounds(value_range)  # raises on an unknown range
        open_clip = _import_open_clip()
        self.model_name = model_name
        self.pretrained = None if pretrained is None else os.fspath(pretrained)
        self.precision = precision
        self.batch_size = batch_size
        self.value_range = value_range
        self.normalize = normalize
        self._device = None if device is None else torch.device(device)
        self._model = _create_model(
            open_clip, model_name, self.pretrained, seed, model_kwargs, preprocess_cfg
        )
        self._tokenizer: Any = None  # loading the BPE vocabulary takes a second: on first use
        self.preprocess = TensorPreprocess.from_cfg(self._model.visual.preprocess_cfg)
        self._placed_for = torch.device("cpu")
        self._model_device = torch.device("cpu")
        self._dim: int | None = None
        # prompt -> float32 embedding row, on CPU: small, and valid wherever the model moves
        self._text_cache: dict[str, Tensor] = {}

    @property
    def model(self) -> torch.nn.Module:
        """The frozen open_clip model (eval mode, ``requires_grad=False``)."""
        return self._model

    def embed_images(self, images: Tensor, value_range: ValueRange | None = None) -> Tensor:
        """Embed a batch of images.

        Args:
            images: ``(B, 3, H, W)`` batch on any device, of any size (resized and cropped as
                the model's preprocessing says); uint8 for ``"uint8"``, floating otherwise.
            value_range: the range of ``images``; defaults to the constructor's
                ``value_range``. Values may exceed it by ``1e-3`` (clamped); more is an error.

        Returns:
            ``(B, D)`` float32 embeddings (unit norm if ``normalize``) on the model's device.

        Raises:
            TypeError, ValueError: for a wrong shape or dtype, NaN or infinite values, or values
                outside ``value_range`` (see :func:`diversity_callbacks.images.check_images`).
        """
        value_range = self.value_range if value_range is None else value_range
        check_images(images, value_range)
        if images.shape[0] > 0 and min(images.shape[2:]) == 0:
            raise ValueError(
                "`images` must have a height and width of at least 1 pixel, got shape "
                f"{tuple(images.shape)}"
            )
        device = self._place(images.device)
        images = images.to(device)
        if images.shape[0] == 0:
            return torch.empty(0, self._embedding_dim(), device=device)
        # Preprocessing in float32 whatever autocast the caller is in; the encoder sets its own.
        # Inference mode skips autograd bookkeeping (about 5% of a small encoder's time).
        with torch.inference_mode(), torch.autocast(device.type, enabled=False):
            chunks = [
                self._encode(self._model.encode_image, self.preprocess(chunk, value_range))
                for chunk in images.split(self.batch_size)
            ]
        # Concatenated outside inference mode, so callers get an ordinary tensor that they may
        # modify in place or use in autograd.
        return torch.cat(chunks)

    def embed_texts(self, prompts: Sequence[str]) -> Tensor:
        """Embed prompts, each distinct prompt encoded once per embedder.

        Embeddings are cached per prompt string as float32 rows on CPU (a few KB each) and
        stacked in the order asked for; the cache lives as long as the embedder.

        Args:
            prompts: the prompts; repeats are fine (each row is the prompt's embedding).

        Returns:
            ``(len(prompts), D)`` float32 embeddings (unit norm if ``normalize``) on the model's
            device: the ``device`` argument, else wherever the last images were embedded
            (CPU before any).
        """
        prompts = check_prompts(prompts)
        device = self._place(self._model_device)
        missing = [p for p in dict.fromkeys(prompts) if p not in self._text_cache]
        if missing and self._tokenizer is None:
            context_length = getattr(self._model, "context_length", None)
            self._tokenizer = _import_open_clip().get_tokenizer(
                self.model_name, context_length=context_length
            )
        with torch.inference_mode(), torch.autocast(device.type, enabled=False):
            for start in range(0, len(missing), self.batch_size):
                chunk = missing[start : start + self.batch_size]
                tokens = self._tokenizer(chunk).to(device)
                rows = self._encode(self._model.encode_text, tokens).cpu()
                self._text_cache.update(zip(chunk, rows, strict=True))
        if not prompts:
            return torch.empty(0, self._embedding_dim(), device=device)
        return torch.stack([self._text_cache[p] for p in prompts]).to(device)

    def _place(self, device: torch.device) -> torch.device:
        """Move the model where it must run for input on ``device``; return where it is."""
        target = self._device if self._device is not None else device
        if target != self._placed_for:
            self._model.to(target)
            self._placed_for = target
            self._model_device = next(self._model.parameters()).device
        return self._model_device

    def _encode(self, encoder: Any, inputs: Tensor) -> Tensor:
        dtype = _AUTOCAST_DTYPES[self.precision]
        with torch.autocast(inputs.device.type, dtype=dtype, enabled=dtype is not None):
            features = encoder(inputs)
        features = features.float()
        return F.normalize(features, dim=-1) if self.normalize else features

    def _embedding_dim(self) -> int:
        """Output width, for empty batches (the image tower cannot run on zero images)."""
        if self._dim is None:
            blank = torch.zeros(1, 3, *self.preprocess.size, device=self._model_device)
            self._dim = self.embed_images(blank, value_range="[0,1]").shape[1]
        return self._dim

    def __repr__(self) -> str:
        return (
            f"CLIPEmbedder(model_name={self.model_name!r}, pretrained={self.pretrained!r}, "
            f"device={self._device}, precision={self.precision!r}, normalize={self.normalize})"
        )


def _create_model(
    open_clip: ModuleType,
    model_name: str,
    pretrained: str | None,
    seed: int,
    model_kwargs: Mapping[str, Any] | None,
    preprocess_cfg: Mapping[str, Any] | None,
) -> torch.nn.Module:
    """Build the frozen open_clip model, with errors that say what to do."""
    has_schema = ":" in model_name
    if not has_schema and model_name.replace("/", "-") not in open_clip.list_models():
        raise ValueError(
            f"model_name={model_name!r} is not an open_clip architecture; see "
            "open_clip.list_models()"
        )
    is_file = pretrained is not None and os.path.isfile(pretrained)
    if pretrained is not None and not is_file and not has_schema:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        if pretrained not in tags:
            raise ValueError(
                f"pretrained={pretrained!r} is neither an existing file nor an open_clip tag "
                f"for {model_name!r} (tags: {tags})"
            )
        _check_weights_obtainable(open_clip, model_name, pretrained)
    # Random init draws from the global RNG: seed it for identical models on every rank, and
    # leave the caller's RNG stream as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            model = open_clip.create_model(
                model_name,
                pretrained=pretrained,
                force_preprocess_cfg=dict(preprocess_cfg or {}),
                **dict(model_kwargs or {}),
            )
        # Any failure to read the weights (a garbage file fails in the unpickler, a truncated
        # one with EOFError, a missing download with a hub error) gets the message below.
        except Exception as err:
            if pretrained is None:
                raise
            raise RuntimeError(_load_error(model_name, pretrained, is_file, err)) from err
    return model.eval().requires_grad_(False)


def _check_weights_obtainable(open_clip: ModuleType, model_name: str, tag: str) -> None:
    """Fail at once when a tag's weights are not cached and the hub is offline or unreachable.

    Without this, an unreachable hub costs about 47 s of download retries before the error.
    Weights that are cached, or that open_clip fetches from a plain URL, are left to open_clip.
    """
    from huggingface_hub import constants, try_to_load_from_cache

    hub_path = open_clip.get_pretrained_cfg(model_name, tag).get("hf_hub", "")
    if not hub_path:
        return
    repo_id, filename = os.path.split(hub_path)
    filename = filename or "open_clip_pytorch_model.bin"
    # open_clip prefers a safetensors copy of the same weights when the repository has one.
    names = (
        filename,
        os.path.splitext(filename)[0] + ".safetensors",
        "open_clip_model.safetensors",
    )
    if any(isinstance(try_to_load_from_cache(repo_id, name), str) for name in names):
        return
    if constants.HF_HUB_OFFLINE:
        reason = "HF_HUB_OFFLINE is set"
    elif not _reachable(constants.ENDPOINT):
        reason = f"{constants.ENDPOINT} cannot be reached"
    else:
        return
    raise RuntimeError(
        _load_error(model_name, tag, False, OSError(f"they are not in the cache and {reason}"))
    )


def _reachable(endpoint: str, timeout: float = 3.0) -> bool:
    """Whether the hub's host accepts a TCP connection (assumed so behind a proxy)."""
    if urllib.request.getproxies().get("https"):
        return True  # the proxy decides; the download itself will tell
    url = urllib.parse.urlsplit(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def _load_error(model_name: str, pretrained: str, is_file: bool, err: Exception) -> str:
    if is_file:
        # torch's own message suggests weights_only=False, which would run code from the file.
        reason = "it is not a file torch.load(weights_only=True) can read"
        if not isinstance(err, pickle.UnpicklingError):
            reason = str(err).rstrip(".")
        return (
            f"could not load the weights file pretrained={pretrained!r} into open_clip model "
            f"{model_name!r}: {reason}. The file must hold a state_dict of that architecture, "
            "saved with torch.save(model.state_dict(), path); it is only read with "
            "weights_only=True, which never runs code from the file."
        )
    return (
        f"could not get the open_clip weights pretrained={pretrained!r} for {model_name!r}: "
        f"{str(err).rstrip('.')}. Without network access, download them where there is one (e.g. "
        f"open_clip.create_model({model_name!r}, pretrained={pretrained!r}) and "
        "torch.save(model.state_dict(), 'open_clip_pytorch_model.bin')) and pass the file: "
        f"CLIPEmbedder({model_name!r}, pretrained='/path/to/open_clip_pytorch_model.bin'). If "
        "the weights are already in the Hugging Face cache, set HF_HUB_OFFLINE=1 so they load "
        "without network retries."
    )
