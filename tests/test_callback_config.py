"""DiversityCallback without a Trainer: argument checks, 0.1 names, state key, checkpoint state.

What needs a ``Trainer`` (cadence, logging, resuming a fit) is in tests/test_callback.py.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import torch
from torch import Tensor

from diversity_callbacks import DiversityCallback
from tests.helpers.callback import make_callback
from tests.helpers.embedders import TINY_CLIP
from tests.helpers.trainer import PROMPTS, PixelEmbedder

DELETED = object()


@pytest.mark.parametrize(
    ("edit", "error", "message"),
    [
        (
            {"last_step": "abc"},
            TypeError,
            "checkpoint entry 'last_step' must be int, got str 'abc'",
        ),
        ({"last_step": True}, TypeError, "'last_step' must be int, got bool"),
        ({"history": None}, TypeError, "checkpoint entry 'history' must be list, got NoneType"),
        ({"history": DELETED}, ValueError, "checkpoint state has no 'history' entry"),
        ({"history": [[2, 1.0]]}, TypeError, "history[0]: a history row must be a dict, got list"),
        (
            {"history": [{"step": "2"}]},
            TypeError,
            "history[0]: checkpoint entry 'step' must be int",
        ),
        ({"history": [{"epoch": 0}]}, ValueError, "history[0]: checkpoint state has no 'step'"),
        (
            {"history": [{"step": 2, "diversity/vendi_q1": "high"}]},
            TypeError,
            "entry 'diversity/vendi_q1' must be int or float, got str 'high'",
        ),
    ],
)
def test_an_edited_checkpoint_state_fails_naming_the_callback_and_the_entry(
    edit: dict[str, Any], error: type, message: str
):
    callback = make_callback()
    state = {**callback.state_dict(), **edit}
    state = {key: value for key, value in state.items() if value is not DELETED}
    with pytest.raises(error, match=re.escape(callback.state_key) + ".*" + re.escape(message)):
        callback.load_state_dict(state)


def test_the_state_key_tells_prompt_lists_apart_and_keeps_the_0_1_form():
    joined, split = make_callback(prompts=["a\nb"]), make_callback(prompts=["a", "b"])
    assert joined.state_key != split.state_key
    # 0.1.0 wrote this key for these arguments: its checkpoints must still find their state
    assert split.state_key == (
        "DiversityCallback{'prefix': 'diversity', 'prompts': 'fcd127ffa101', "
        "'samples_per_prompt': 3, 'seed': 0}"
    )


def test_the_state_key_follows_a_replaced_evaluator_or_prefix():
    """The key is cached (Lightning reads it several times a step), never stale."""
    callback = make_callback()
    first = callback.state_key
    callback.evaluator.prefix = "other"
    assert "'prefix': 'other'" in callback.state_key
    callback.evaluator = make_callback(prompts=["a", "b"]).evaluator
    assert callback.state_key not in (first, make_callback().state_key)
    assert callback.state_key == make_callback(prompts=["a", "b"]).state_key


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"prompts": []}, ValueError, "at least one prompt"),
        ({"prompts": ["a", 3]}, TypeError, "must hold strings, got int 3"),
        ({"prompts": "missing.txt"}, FileNotFoundError, "no file at 'missing.txt'"),
        (
            {"samples_per_condition": 0},
            ValueError,
            "`samples_per_condition` must be an integer >= 1, got 0",
        ),
        ({"every_n_train_steps": -2}, ValueError, "`every_n_train_steps` must be an integer >= 1"),
        ({"every_n_epochs": 1.5}, ValueError, "`every_n_epochs` must be an integer >= 1, got 1.5"),
        ({"batch_size": 0}, ValueError, "`batch_size`"),
        ({"seed": -1}, ValueError, "`seed` must be an integer >= 0, got -1"),
        ({"value_range": "[0,255]"}, ValueError, r"`value_range` must be \"\[-1,1\]\""),
        ({"vendi_orders": (1, -1)}, ValueError, '`q` must be a number >= 0 or "inf", got -1'),
        ({"embedder": object()}, TypeError, "`embedder` must have a method embed_images"),
        ({"sce": True, "embedder": torch.nn.Identity()}, TypeError, "embed_images"),
        ({"sample_fn": 3}, TypeError, "`sample_fn` must be callable, got int"),
        (
            {"on_error": "ignore"},
            ValueError,
            '`on_error` must be "raise" or "warn", got \'ignore\'',
        ),
        ({"prefix": ""}, ValueError, "`prefix` must be a non-empty string"),
        (
            {"vendi_kernel": "gaussian"},
            ValueError,
            r"invalid Vendi kernel options \(vendi_kernel='gaussian', vendi_sigma=None, "
            r"vendi_num_features=None\): kernel='gaussian' needs a bandwidth `sigma`",
        ),
        (
            {"sce": True, "samples_per_condition": 1},
            ValueError,
            "`sce=True` needs `samples_per_condition` >= 2",
        ),
        (
            {"per_condition": True, "samples_per_condition": 1},
            ValueError,
            "`per_condition=True` needs .* `samples_per_condition` >= 2",
        ),
        ({"prompts": None}, ValueError, "give exactly one of `prompts`"),
        ({"class_labels": [1, 2]}, ValueError, r"got \['prompts', 'class_labels'\]"),
        ({"sce": True, "sce_kwargs": {"kernel": "rbf"}}, ValueError, "`kernel` must be one of"),
    ],
)
def test_invalid_arguments_are_rejected_with_the_argument_named(
    kwargs: dict, error: type, match: str
):
    with pytest.raises(error, match=match):
        make_callback(**kwargs)


def test_arguments_of_0_1_still_work_under_their_new_names_with_a_warning():
    with pytest.warns(FutureWarning, match="`samples_per_prompt` is now `samples_per_condition`"):
        callback = DiversityCallback(PROMPTS, samples_per_prompt=2, embedder=PixelEmbedder())
    assert callback.evaluation_set.samples_per_condition == 2
    with pytest.warns(FutureWarning, match="`image_range` is now `value_range`"):
        callback = make_callback(image_range="[0,1]", on_validation_end=True)
    assert callback.evaluator.sample_embedder.value_range == "[0,1]" and callback.after_validation
    with pytest.raises(TypeError, match="give `value_range` or its former name `image_range`"):
        make_callback(image_range="[0,1]", value_range="[0,1]")


def test_the_0_1_conditional_option_is_now_per_condition_with_a_warning():
    with pytest.warns(FutureWarning, match="`conditional` is now `per_condition`"):
        callback = make_callback(conditional=False)
    assert "per_prompt_vendi" not in callback.evaluator.metrics
    with pytest.raises(TypeError, match="give `per_condition` or its former name `conditional`"):
        make_callback(conditional=False, per_condition=True)


def test_a_0_1_checkpoint_resumes_with_its_per_condition_keys_renamed():
    callback = make_callback()
    old_rows = [
        {"step": 2, "epoch": 0, "diversity/vendi_q1": 3.0, "diversity/conditional_vendi_q1": 1.5},
        {"step": 4, "epoch": 0, "diversity/class_conditional_vendi_qinf": 1.25},
    ]
    callback.load_state_dict({"last_step": 4, "history": old_rows})  # as 0.1 wrote it
    assert [{k: v for k, v in row.items() if k != "global_step"} for row in callback.history] == [
        {"step": 2, "epoch": 0, "diversity/vendi_q1": 3.0, "diversity/per_prompt_vendi_q1": 1.5},
        {"step": 4, "epoch": 0, "diversity/per_class_vendi_qinf": 1.25},
    ]


def test_sce_needs_an_embedder_that_embeds_texts():
    class ImagesOnly:
        def embed_images(self, images: Tensor) -> Tensor:
            return images.flatten(1)

    with pytest.raises(ValueError, match="`sce=True` needs an embedder with embed_texts"):
        make_callback(embedder=ImagesOnly(), sce=True)


def test_an_embedder_expecting_another_value_range_is_rejected():
    from diversity_callbacks import CLIPEmbedder

    embedder = CLIPEmbedder(pretrained=None, model_kwargs=TINY_CLIP, value_range="[-1,1]")
    with pytest.raises(ValueError, match=r"must take images in \[0, 1\].*value_range='\[-1,1\]'"):
        make_callback(embedder=embedder)
