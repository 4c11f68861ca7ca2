"""0.1 arguments and result keys: they keep working with a FutureWarning, or fail naming the
new name; nothing of 0.1 silently changes meaning."""

from __future__ import annotations

import warnings

import pytest

from diversity_callbacks.utilities.deprecations import (
    RENAMED,
    check_current_key,
    renamed_arguments,
    renamed_key,
    renamed_options,
)


def test_renamed_options_warn_once_each_and_take_the_new_names():
    with pytest.warns(FutureWarning) as caught:
        options = renamed_options({"samples_per_prompt": 2, "image_range": "[0,1]", "seed": 3})
    assert options == {"seed": 3, "samples_per_condition": 2, "value_range": "[0,1]"}
    assert [str(w.message) for w in caught] == [
        "`samples_per_prompt` is now `samples_per_condition`",
        "`image_range` is now `value_range`",
    ]


def test_current_options_pass_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert renamed_options({"samples_per_condition": 2}) == {"samples_per_condition": 2}


def test_an_option_under_both_names_is_refused():
    with pytest.raises(TypeError, match="give `value_range` or its former name `image_range`"):
        renamed_options({"image_range": "[0,1]", "value_range": "[0,1]"})


def test_renamed_arguments_fill_the_new_keyword_from_the_old_one():
    with pytest.warns(FutureWarning, match="`log_spectrum` is now `spectrum`"):
        values = renamed_arguments("f", {"log_spectrum": True}, spectrum=None, seed=0)
    assert values == {"spectrum": True, "seed": 0}
    assert renamed_arguments("f", {}, spectrum=None) == {"spectrum": None}


def test_renamed_arguments_refuse_unknown_keywords_and_both_names():
    with pytest.raises(TypeError, match="f\\(\\) got an unexpected keyword argument 'colour'"):
        renamed_arguments("f", {"colour": 1}, spectrum=None)
    with pytest.raises(TypeError, match="f\\(\\) got an unexpected keyword argument 'image_range'"):
        renamed_arguments("f", {"image_range": 1}, spectrum=None)  # not one of f's arguments
    with pytest.raises(TypeError, match="give `spectrum` or its former name `log_spectrum`"):
        renamed_arguments("f", {"log_spectrum": True}, spectrum=False)


def test_every_renamed_argument_has_a_new_name_of_its_own():
    assert len(set(RENAMED.values())) == len(RENAMED)
    assert not set(RENAMED) & set(RENAMED.values())


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("diversity/conditional_vendi_q1", "diversity/per_prompt_vendi_q1"),
        ("diversity/class_conditional_vendi_qinf", "diversity/per_class_vendi_qinf"),
        ("conditional_vendi_q2", "per_prompt_vendi_q2"),
        ("a/b/conditional_vendi_q1", "a/b/per_prompt_vendi_q1"),
        ("diversity/vendi_q1", "diversity/vendi_q1"),
        ("diversity/conditional_vendi_q1/extra", "diversity/conditional_vendi_q1/extra"),
        ("diversity/information_vendi_q1", "diversity/information_vendi_q1"),
    ],
)
def test_0_1_result_keys_get_their_new_names_and_others_stay(old: str, new: str):
    assert renamed_key(old) == new


def test_a_0_1_key_given_as_an_argument_fails_naming_the_new_key():
    check_current_key("diversity/per_prompt_vendi_q1", "monitor")
    with pytest.raises(
        ValueError,
        match=r"`monitor` names the 0.1 key 'diversity/conditional_vendi_q1', .* now logged as "
        r"'diversity/per_prompt_vendi_q1'",
    ):
        check_current_key("diversity/conditional_vendi_q1", "monitor")
