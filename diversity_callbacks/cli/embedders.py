"""The embedder of ``diversity-callbacks score``: open_clip by name, or any import path.

``--model NAME --pretrained TAG|FILE|none`` builds a
:class:`~diversity_callbacks.CLIPEmbedder` (the same weights resolution and error messages:
a tag is downloaded once into the Hugging Face cache, a file is read with
``weights_only=True``, ``none`` gives random weights for smoke tests).

``--embedder module:attribute`` (or ``path/to/file.py:attribute``) imports an object and uses
it as follows: an object with ``embed_images`` is the embedder (with ``embed_texts`` it also
embeds prompts, which turns on the Schur complement entropy); a class is instantiated without
arguments first; any other callable is called on ``(B, 3, H, W)`` float batches in ``[0, 1]`` and
must return ``(B, D)`` embeddings. The current directory is searched first, as ``python -m``
does.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

from diversity_callbacks.cli.errors import InputError
from diversity_callbacks.cli.options import EmbedderOptions


def image_embedder(options: EmbedderOptions, device: Any) -> Any:
    """The image embedder of the options: ``--embedder``'s import path (moved to ``device`` when
    it is a module), else open_clip's ``--model``."""
    if options.embedder:
        import torch

        embedder = import_embedder(options.embedder)
        if isinstance(embedder, torch.nn.Module):
            embedder.to(device)
        return embedder
    return clip_embedder(
        options.model,
        options.pretrained,
        device=device,
        precision=options.precision,
        batch_size=options.batch_size,
        model_config=options.model_config,
    )


def clip_embedder(
    model: str,
    pretrained: str | None,
    *,
    device: Any,
    precision: str,
    batch_size: int,
    model_config: str | None,
) -> Any:
    """A :class:`~diversity_callbacks.CLIPEmbedder` from the command's options.

    Args:
        model: open_clip architecture, e.g. ``"ViT-B-32"``.
        pretrained: a tag, a weights file, or ``"none"`` / ``None`` for random weights.
        device: where the model runs.
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"``.
        batch_size: images per forward pass.
        model_config: JSON of open_clip config overrides (``embed_dim``, ``vision_cfg``, ...).
    """
    from diversity_callbacks.embedders.clip import CLIPEmbedder

    overrides = None
    if model_config:
        try:
            overrides = json.loads(model_config)
        except json.JSONDecodeError as error:
            raise InputError(
                f"--model-config must be a JSON object of open_clip config overrides, got "
                f"{model_config!r} ({error.msg})"
            ) from None
        if not isinstance(overrides, dict):
            raise InputError(
                f"--model-config must be a JSON object, got {type(overrides).__name__}"
            )
    if pretrained is not None and pretrained.lower() == "none":
        pretrained = None
    try:
        return CLIPEmbedder(
            model,
            pretrained=pretrained,
            device=device,
            precision=precision,  # type: ignore[arg-type]
            batch_size=batch_size,
            model_kwargs=overrides,
        )
    except ImportError as error:  # open_clip missing: the message gives the pip command
        raise InputError(str(error)) from error
    except (TypeError, ValueError, RuntimeError) as error:  # a bad name, tag or weights file
        raise InputError(_in_flags(str(error), model, model_config)) from error


def _in_flags(message: str, model: str, model_config: str | None) -> str:
    """CLIPEmbedder's message told in the command's flags: the Python fix it suggests becomes
    the flags that do the same, and a model that cannot be built with ``--model-config`` is
    blamed on the overrides, not on the weights."""
    python_fix = f"CLIPEmbedder({model!r}, pretrained='/path/to/open_clip_pytorch_model.bin')"
    message = message.replace(
        python_fix, f"--model {model} --pretrained /path/to/open_clip_pytorch_model.bin"
    )
    if not model_config:
        return message
    return (
        f"--model {model} with --model-config {model_config!r} cannot be built or loaded: "
        f"{message} (check the overrides: open_clip config keys such as embed_dim, "
        "vision_cfg, text_cfg; weights of another configuration do not load into it)"
    )


def import_embedder(spec: str) -> Any:
    """The embedder named by ``module:attribute`` or ``path/to/file.py:attribute``.

    Raises:
        InputError: for a malformed spec, a module or attribute that cannot be imported, or an
            object that is neither an embedder nor callable.
    """
    module_name, sep, attribute = spec.rpartition(":")
    if not sep or not module_name or not attribute:
        raise InputError(
            f"--embedder must be 'module:attribute' or 'path/to/file.py:attribute', got {spec!r}"
        )
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise InputError(f"--embedder {spec!r}: no file {module_name!r}")
            loaded = importlib.util.spec_from_file_location(path.stem, path)
            assert loaded is not None and loaded.loader is not None
            module = importlib.util.module_from_spec(loaded)
            sys.modules.setdefault(path.stem, module)
            loaded.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except InputError:
        raise
    except Exception as error:
        raise InputError(
            f"--embedder {spec!r}: cannot import {module_name!r} ({type(error).__name__}: {error})"
        ) from error
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise InputError(
                f"--embedder {spec!r}: module {module_name!r} has no attribute {attribute!r}"
            )
        target = getattr(target, part)
    if isinstance(target, type):
        try:
            target = target()
        except Exception as error:
            raise InputError(
                f"--embedder {spec!r}: the class {attribute!r} must be constructible without "
                f"arguments ({type(error).__name__}: {error})"
            ) from error
    if callable(getattr(target, "embed_images", None)):
        return target
    if callable(target):
        from diversity_callbacks.embedders.base import FunctionEmbedder

        return FunctionEmbedder(target)
    raise InputError(
        f"--embedder {spec!r} must name an object with embed_images(images) -> (B, D), a class "
        f"building one, or a function of (B, 3, H, W) images in [0, 1]; got "
        f"{type(target).__name__}"
    )
