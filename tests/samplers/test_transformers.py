"""TransformersSampler on a tiny random GPT-2 built offline: a completion depends on its own seed
only (alone, batched, reordered, at world sizes 1 and 2, sharded), the decoding options, a peft
adapter being the one sampled, and the errors."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from diversity_callbacks import DiversityEvaluator, TransformersSampler, lexical_metrics
from tests.helpers.distributed import run_distributed
from tests.helpers.text import PROMPTS, char_tokenizer, tiny_gpt2
from tests.helpers.trainer import LetterEmbedder


def seeded(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    return char_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="module")
def model():
    return tiny_gpt2()


def reference_completion(model, tokenizer, prompt: str, generator, steps: int, eos: int) -> str:
    """One prompt alone, no KV cache, no padding, torch.multinomial with its own generator."""
    ids = tokenizer(prompt)["input_ids"]
    new = []
    for _ in range(steps):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids + new])).logits[0, -1]
        token = int(torch.multinomial(logits.softmax(-1), 1, generator=generator))
        new.append(token)
        if token == eos:
            break
    return tokenizer.decode(new, skip_special_tokens=True)


def test_a_completion_is_torch_multinomial_with_its_own_generator_alone_or_batched(
    model, tokenizer
):
    sampler = TransformersSampler(model, tokenizer, max_new_tokens=20)
    prompts = [*PROMPTS, PROMPTS[0]]
    batched = sampler(prompts, seeded(0, 1, 2, 3))
    eos = model.config.eos_token_id
    expected = [
        reference_completion(model, tokenizer, p, g, 20, eos)
        for p, g in zip(prompts, seeded(0, 1, 2, 3), strict=True)
    ]
    assert batched == expected
    assert sampler(prompts[1:2], seeded(1)) == batched[1:2]  # alone
    assert sampler(prompts[::-1], seeded(3, 2, 1, 0)) == batched[::-1]  # reordered
    assert sampler(prompts, seeded(0, 1, 2, 3)) == batched  # again
    assert batched[0] != batched[3]  # same prompt, other seed
    assert all(isinstance(text, str) for text in batched)


def test_greedy_decoding_equals_generate_with_left_padding(model, tokenizer):
    sampler = TransformersSampler(model, tokenizer, max_new_tokens=12, do_sample=False)
    tokenizer.pad_token = tokenizer.eos_token
    batch = tokenizer(PROMPTS, padding=True, padding_side="left", return_tensors="pt")
    output = model.generate(
        **batch, do_sample=False, max_new_tokens=12, pad_token_id=tokenizer.eos_token_id
    )
    new = output[:, batch["input_ids"].shape[1] :]
    expected = tokenizer.batch_decode(new, skip_special_tokens=True)
    assert sampler(PROMPTS, seeded(0, 1, 2)) == expected
    # top-k 1 and a tiny nucleus leave the most likely token only
    for options in ({"top_k": 1}, {"top_p": 1e-6}):
        top = TransformersSampler(model, tokenizer, max_new_tokens=12, **options)
        assert top(PROMPTS, seeded(5, 6, 7)) == expected


def test_stop_strings_cut_the_completion_before_them(model, tokenizer):
    free = TransformersSampler(model, tokenizer, max_new_tokens=30, stop_at_eos=False)
    texts = free(PROMPTS * 3, seeded(*range(9)))
    stop = next(c for c in "aeiou" if sum(c in t for t in texts) >= 2)
    cut = TransformersSampler(
        model, tokenizer, max_new_tokens=30, stop_strings=[stop, "zz"], stop_at_eos=False
    )
    for text, short in zip(texts, cut(PROMPTS * 3, seeded(*range(9))), strict=True):
        assert short == text.split(stop)[0]


def test_temperature_and_top_k_change_the_draws(model, tokenizer):
    base = TransformersSampler(model, tokenizer, max_new_tokens=16)(PROMPTS, seeded(0, 1, 2))
    for options in ({"temperature": 0.3}, {"top_k": 3}, {"top_p": 0.5}):
        other = TransformersSampler(model, tokenizer, max_new_tokens=16, **options)
        assert other(PROMPTS, seeded(0, 1, 2)) != base


def test_a_peft_adapter_on_the_modules_model_is_the_one_sampled(tokenizer):
    peft = pytest.importorskip("peft")
    module = torch.nn.Module()
    module.model = peft.get_peft_model(
        tiny_gpt2(), peft.LoraConfig(r=4, target_modules=["c_attn"], init_lora_weights=True)
    )
    sampler = TransformersSampler("model", tokenizer, max_new_tokens=16)
    before = sampler.bind(module)(PROMPTS, seeded(0, 1, 2))
    assert before == TransformersSampler(tiny_gpt2(), tokenizer, max_new_tokens=16)(
        PROMPTS, seeded(0, 1, 2)
    )  # LoRA's B starts at zero
    with torch.no_grad():
        for name, weight in module.model.named_parameters():
            if "lora_B" in name:
                weight.normal_(0, 1.0, generator=torch.Generator().manual_seed(0))
    assert sampler.bind(module)(PROMPTS, seeded(0, 1, 2)) != before
    with module.model.disable_adapter():
        assert sampler.bind(module)(PROMPTS, seeded(0, 1, 2)) == before
    # model=None: the module given is the model (what the Trainer adapter passes)
    assert (
        TransformersSampler(None, tokenizer, max_new_tokens=16).bind(module.model.get_base_model())(
            PROMPTS, seeded(0, 1, 2)
        )
        != before
    )


def test_sampling_restores_the_models_training_mode(model, tokenizer):
    model.train()
    try:
        eval_mode = TransformersSampler(model, tokenizer, max_new_tokens=8)(
            PROMPTS, seeded(0, 1, 2)
        )
        assert model.training and all(m.training for m in model.modules())
    finally:
        model.eval()
    assert eval_mode == TransformersSampler(model, tokenizer, max_new_tokens=8)(
        PROMPTS, seeded(0, 1, 2)
    )  # dropout was off while sampling


def test_bad_options_and_calls_name_the_argument(model, tokenizer):
    with pytest.raises(ValueError, match=r"`temperature` must be a number > 0, got 0"):
        TransformersSampler(model, tokenizer, temperature=0)
    with pytest.raises(ValueError, match=r"`top_p` must be a number in \(0, 1\] or None, got 1.5"):
        TransformersSampler(model, tokenizer, top_p=1.5)
    with pytest.raises(ValueError, match=r"max_new_tokens"):
        TransformersSampler(model, tokenizer, max_new_tokens=0)
    with pytest.raises(TypeError, match=r"`stop_strings` must be a sequence of non-empty strings"):
        TransformersSampler(model, tokenizer, stop_strings="\n")
    with pytest.raises(TypeError, match=r"`tokenizer` is required"):
        TransformersSampler(model)
    sampler = TransformersSampler(model, tokenizer)
    with pytest.raises(ValueError, match=r"prompts\[1\] \(''\) tokenizes to no token"):
        sampler(["a", ""], seeded(0, 1))
    with pytest.raises(TypeError, match=r"conditions must be a list of prompts .* got NoneType"):
        sampler(None, seeded(0))
    with pytest.raises(ValueError, match=r"one generator per prompt, 2 in all, got 1"):
        sampler(["a", "b"], seeded(0))
    module = torch.nn.Module()
    module.lm = model
    with pytest.raises(
        AttributeError, match=r"`model`='model': Module has no such attribute .*\['lm'\]"
    ):
        TransformersSampler("model", tokenizer).bind(module)(["a"], seeded(0))
    with pytest.raises(TypeError, match=r"samples the caller's module"):
        TransformersSampler("model", tokenizer)(["a"], seeded(0))


# ---------------------------------------------------------------- world sizes, FSDP


def evaluator() -> DiversityEvaluator:
    # 3 prompts x 3 samples in batches of 2: a prompt's samples straddle the ranks
    return DiversityEvaluator(
        PROMPTS,
        3,
        embedder=LetterEmbedder(),
        value_range=None,
        batch_size=2,
        metrics=lexical_metrics(tokenizer=list),
        sce=False,
    )


def scores(sharded: bool, world_size: int, folder: str) -> dict[str, float]:
    # one folder per process: two ranks writing and reading the same files race
    tokenizer = char_tokenizer(Path(folder) / f"tokenizer{world_size}-{os.getpid()}")
    model = tiny_gpt2()
    if sharded:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh("cpu", (world_size,))
        for block in model.transformer.h:
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
    sampler = TransformersSampler(model, tokenizer, max_new_tokens=24, stop_strings=["."])
    result = evaluator().evaluate(sampler, module=model, progress=False)
    return {k: v for k, v in result.scalars.items() if not k.endswith("eval_seconds")}


def on_two_ranks(rank: int, world_size: int, folder: str) -> dict:
    return {sharded: scores(sharded, world_size, folder) for sharded in (False, True)}


@pytest.mark.slow  # two processes
@pytest.mark.timeout(300)  # a rank left waiting in a sharded forward would hang: fail instead
def test_two_ranks_and_fsdp2_score_what_one_process_scores(tmp_path: Path):
    single = scores(False, 1, str(tmp_path))
    assert single["diversity/vendi_q1"] > 1.5 and 0 < single["diversity/self_bleu"] < 1
    assert set(single) >= {"diversity/distinct_1", "diversity/distinct_4"}
    for rank in run_distributed(on_two_ranks, str(tmp_path)):
        for sharded, values in rank.items():
            assert values.keys() == single.keys()
            for key, value in single.items():
                assert math.isclose(values[key], value, rel_tol=1e-9), (sharded, key)
