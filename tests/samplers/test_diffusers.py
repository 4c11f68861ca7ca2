"""DiffusersSampler on tiny random-weight pipelines built offline: Stable Diffusion and SDXL,
LoRA weights being the ones sampled, the callback without value_range, DDP parity, the errors."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("peft")

from diversity_callbacks import DiffusersSampler, DiversityCallback, DiversityEvaluator
from tests.helpers.diffusion import (
    PipelineModule,
    dummy_data,
    tiny_sd_pipeline,
    tiny_sdxl_pipeline,
    write_tokenizer,
)
from tests.helpers.distributed import launch_script
from tests.helpers.docs import python_blocks
from tests.helpers.trainer import PROMPTS, QUIET, PixelEmbedder

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tests" / "scripts" / "sample_diffusers.py"
FAST = {"num_inference_steps": 2, "guidance_scale": 1.0}  # no guidance: one UNet pass per step


def seeded(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="module")
def sd(tokenizer_dir: Path):
    return tiny_sd_pipeline(tokenizer_dir)


@pytest.fixture(scope="module")
def sdxl(tokenizer_dir: Path):
    return tiny_sdxl_pipeline(tokenizer_dir)


@pytest.mark.parametrize("family", ["sd", "sdxl"])
def test_each_sample_depends_on_its_prompt_and_own_generator_only(family, request):
    pipeline = request.getfixturevalue(family)
    pipeline.set_progress_bar_config(disable=False, desc="mine")
    sampler = DiffusersSampler(pipeline, **FAST, negative_prompt="blurry")
    prompts = ["a red square", "a blue circle", "a red square"]
    images = sampler(prompts, seeded(0, 1, 2))
    assert images.shape == (3, 3, 32, 32) and images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1 and images.std() > 0.05
    # one generator per sample, not one stream for the batch: a sample alone is the same sample
    alone = sampler(prompts[1:2], seeded(1))
    torch.testing.assert_close(alone[0], images[1], atol=1e-4, rtol=0)
    assert (images[0] - images[2]).abs().max() > 0.1  # same prompt, other seed
    # the bar was off during the calls (the evaluator draws its own); the user's setting is back
    assert pipeline._progress_bar_config == {"disable": False, "desc": "mine"}
    pipeline.set_progress_bar_config(disable=True)


def test_evaluator_scores_an_sdxl_pipeline_with_the_declared_range(sdxl):
    sampler = DiffusersSampler(sdxl, **FAST, height=32, width=32)
    evaluator = DiversityEvaluator(
        PROMPTS[:2], 2, embedder=PixelEmbedder(), value_range=sampler.value_range, batch_size=4
    )
    scalars = evaluator.evaluate(sampler, progress=False).scalars
    assert 1.0 < scalars["diversity/vendi_q1"] <= 4.0
    assert math.isfinite(scalars["diversity/sce"])


def test_the_callback_samples_the_modules_pipeline_in_unit_range_without_value_range(sd):
    import lightning as L

    callback = DiversityCallback(
        PROMPTS[:2],
        samples_per_condition=2,
        sample_fn=DiffusersSampler("pipeline", **FAST),
        embedder=PixelEmbedder(),
        every_n_train_steps=1,
    )
    assert callback.evaluator.sample_embedder.value_range == "[0,1]"
    L.Trainer(**QUIET, max_steps=1, callbacks=[callback]).fit(PipelineModule(sd), dummy_data(2))
    assert [row["global_step"] for row in callback.history] == [0, 1]
    # the pipeline is frozen: both evaluations drew the same images
    assert callback.history[0]["diversity/vendi_q1"] == callback.history[1]["diversity/vendi_q1"]


@pytest.mark.slow  # three samplings of a pipeline with a LoRA adapter
def test_a_lora_update_of_the_modules_unet_changes_the_samples(tokenizer_dir):
    from peft import LoraConfig

    module = PipelineModule(tiny_sd_pipeline(tokenizer_dir))
    module.unet.add_adapter(LoraConfig(r=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    sampler = DiffusersSampler("pipeline", **FAST)
    before = sampler.bind(module)(PROMPTS[:2], seeded(0, 1))
    lora = [p for name, p in module.unet.named_parameters() if "lora_B" in name]
    assert lora  # B starts at zero: the adapter is a no-op until trained
    torch.testing.assert_close(before, sampler.bind(module)(PROMPTS[:2], seeded(0, 1)))
    with torch.no_grad():
        for weight in lora:
            weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
    after = sampler.bind(module)(PROMPTS[:2], seeded(0, 1))
    assert (after - before).abs().max() > 0.05
    module.unet.disable_adapters()
    torch.testing.assert_close(sampler.bind(module)(PROMPTS[:2], seeded(0, 1)), before)


@pytest.mark.slow  # a DDP training run, one process per rank, and a single-device one
def test_two_ddp_ranks_log_what_one_device_logs(tmp_path: Path):
    sys.path.insert(0, str(REPO / "tests" / "scripts"))
    try:
        from sample_diffusers import run
    finally:
        sys.path.remove(str(REPO / "tests" / "scripts"))
    ranks = launch_script(SCRIPT, tmp_path / "ddp", devices=2)
    single = run(tmp_path / "single", devices=1)["history"]  # in this process
    assert [row["global_step"] for row in single] == [0, 1]
    for rank in ranks:
        assert [row.keys() for row in rank["history"]] == [row.keys() for row in single]
        for row, expected in zip(rank["history"], single, strict=True):
            for key, value in expected.items():
                if not key.endswith("eval_seconds"):
                    assert math.isfinite(value)
                    assert row[key] == pytest.approx(value, rel=1e-6, abs=0), key
    assert single[0]["diversity/vendi_q1"] > 1.5  # the images differ: parity is not trivial


@pytest.mark.slow  # 25 guided denoising steps
def test_the_readme_snippet_runs_as_written(sd, monkeypatch, tmp_path):
    monkeypatch.setattr("diversity_callbacks.embedders.clip.CLIPEmbedder", PixelEmbedder)
    monkeypatch.chdir(tmp_path)
    (block,) = python_blocks("docs/integrations/diffusers.md")
    # the snippet's 25 guided steps on a 1-batch epoch: three steps, the baseline at the start
    # and the final model at the end
    namespace = {"prompts": PROMPTS[:1], "model": PipelineModule(sd), "train_loader": dummy_data(2)}
    exec(block, namespace)
    history = namespace["diversity"].history
    assert [row["global_step"] for row in history] == [0, 3]
    assert all(1.0 < row["diversity/vendi_q1"] <= 4.0 for row in history)


# ---------------------------------------------------------------- errors


class _Pipeline:
    """A stand-in with a pipeline's surface; its call returns ``result``."""

    def __init__(self, result=None) -> None:
        self.result = result
        self.components: dict = {}
        self.bar_during_call: dict | None = None

    def set_progress_bar_config(self, **config) -> None:
        self._progress_bar_config = config

    def __call__(
        self,
        prompt=None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        num_inference_steps: int = 50,
        eta: float = 0.0,
        **kwargs,
    ):
        self.bar_during_call = dict(self._progress_bar_config)
        return self.result


class _OneGeneratorPipeline(_Pipeline):
    def __call__(self, prompt=None, generator: torch.Generator | None = None, output_type="pil"):
        return None


class _NoOutputTypePipeline(_Pipeline):
    def __call__(self, prompt=None, generator=None):
        return None


def test_a_pipeline_that_cannot_take_a_list_of_generators_is_refused():
    with pytest.raises(TypeError, match=r"cannot take a list of generators.*Generator"):
        DiffusersSampler(_OneGeneratorPipeline())


def test_a_pipeline_without_output_type_or_not_a_pipeline_is_refused():
    with pytest.raises(TypeError, match=r"its call has no \['output_type'\] argument"):
        DiffusersSampler(_NoOutputTypePipeline())
    with pytest.raises(TypeError, match=r"`pipeline` must be a diffusers pipeline.*got int"):
        DiffusersSampler(3)
    with pytest.raises(ValueError, match=r"`pipeline` must be a pipeline or the name .*'a b'"):
        DiffusersSampler("a b")


@pytest.mark.parametrize(
    ("result", "got"),
    [
        ([object()], "list"),
        (type("Output", (), {"images": torch.zeros(1, 32, 32, 3)}), r"\(1, 32, 32, 3\)"),
    ],
)
def test_a_pipeline_that_cannot_return_tensors_names_what_it_returned(result, got):
    sampler = DiffusersSampler(_Pipeline((result,) if isinstance(result, list) else result))
    with pytest.raises(TypeError, match=rf"_Pipeline cannot return tensors: .* returned {got}"):
        sampler(["a red square"], seeded(0))


def test_an_option_the_pipeline_call_does_not_name_is_refused_with_the_valid_ones(sd):
    # the pipelines' **kwargs would take it without a word and sample without it
    with pytest.raises(
        TypeError,
        match=r"`pipeline` \(_Pipeline\) has no call argument \['not_an_arg'\]: the options of "
        r"its call are \['eta', 'num_inference_steps'\]",
    ):
        DiffusersSampler(_Pipeline(), not_an_arg=1)
    with pytest.raises(TypeError, match=r"no call argument \['guidance_scale'\]"):
        DiffusersSampler(_Pipeline(), guidance_scale=7.5)
    DiffusersSampler(_Pipeline(), eta=0.5)  # a named option passes
    with pytest.raises(
        TypeError,
        match=r"`pipeline` \(StableDiffusionPipeline\) has no call "
        r"argument \['etta'\]: .*'eta', 'guidance_rescale', 'guidance_scale'",
    ):
        DiffusersSampler(sd, etta=0.0)
    # a module attribute is checked when it is first read
    sampler = DiffusersSampler("pipeline", etta=0.0)
    with pytest.raises(
        TypeError,
        match=r"PipelineModule.pipeline \(StableDiffusionPipeline\) "
        r"has no call argument \['etta'\]",
    ):
        sampler.bind(PipelineModule(sd))(["a red square"], seeded(0))


def test_the_progress_bar_is_off_during_the_call_and_the_users_setting_is_back_after():
    pipeline = _Pipeline(type("Output", (), {"images": torch.zeros(1, 3, 8, 8)}))
    pipeline.set_progress_bar_config(desc="mine")
    DiffusersSampler(pipeline)(["a red square"], seeded(0))
    assert pipeline.bar_during_call == {"desc": "mine", "disable": True}
    assert pipeline._progress_bar_config == {"desc": "mine"}
    pipeline.result = None  # a failing call puts the setting back too
    with pytest.raises(TypeError, match=r"cannot return tensors"):
        DiffusersSampler(pipeline)(["a red square"], seeded(0))
    assert pipeline._progress_bar_config == {"desc": "mine"}


def test_a_missing_attribute_names_the_modules_pipelines(sd):
    module = PipelineModule(sd)
    with pytest.raises(
        AttributeError,
        match=r"`pipeline`='pipe': PipelineModule has no such attribute \(attributes holding a pipeline: \['pipeline'\]\)",
    ):
        DiffusersSampler("pipe").bind(module)(["a red square"], seeded(0))
    with pytest.raises(TypeError, match=r"names a LightningModule attribute"):
        DiffusersSampler("pipeline")(["a red square"], seeded(0))
    module.not_a_pipeline = 3
    with pytest.raises(
        TypeError, match=r"PipelineModule.not_a_pipeline must be a diffusers pipeline"
    ):
        DiffusersSampler("not_a_pipeline").bind(module)(["a red square"], seeded(0))


def test_conditions_generators_and_options_are_checked():
    sampler = DiffusersSampler(_Pipeline())
    with pytest.raises(TypeError, match=r"conditions must be a list of prompts .* got Tensor"):
        sampler(torch.tensor([0]), seeded(0))
    with pytest.raises(
        ValueError, match=r"`generators` must hold one generator per prompt, 2 in all, got 1"
    ):
        sampler(["a", "b"], seeded(0))
    with pytest.raises(TypeError, match=r"takes \(prompts, generators\) .* got 1 arguments"):
        sampler(["a"])
    with pytest.raises(ValueError, match=r"`prompts` must hold at least one prompt, got an empty"):
        sampler([], [])
    # one generator for all samples would make them share one noise stream
    with pytest.raises(
        TypeError,
        match=r"`generators` must be a list of torch.Generator, one per prompt .* got Generator",
    ):
        sampler(["a"], torch.Generator().manual_seed(0))
    with pytest.raises(TypeError, match=r"got a list holding \['int'\]"):
        sampler(["a"], [0])
    with pytest.raises(ValueError, match=r"num_inference_steps"):
        DiffusersSampler(_Pipeline(), num_inference_steps=0)
    with pytest.raises(TypeError, match=r"`guidance_scale` must be a number, got '7'"):
        DiffusersSampler(_Pipeline(), guidance_scale="7")
    with pytest.raises(TypeError, match=r"`negative_prompt` must be a string, got \['x'\]"):
        DiffusersSampler(_Pipeline(), negative_prompt=["x"])
    with pytest.raises(ValueError, match=r"`call_kwargs` must not set \['num_images_per_prompt'\]"):
        DiffusersSampler(_Pipeline(), num_images_per_prompt=2)


def test_without_diffusers_the_error_says_what_to_install(monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "diffusers" else find_spec(name, *a),
    )
    with pytest.raises(ImportError, match=r'pip install "diversity-callbacks\[diffusers\]"'):
        DiffusersSampler("pipeline")


@pytest.mark.slow  # a whole training run of the example
def test_the_lora_example_runs_offline_and_its_samples_follow_the_training(tmp_path: Path):
    import importlib.util

    import wandb

    spec = importlib.util.spec_from_file_location(
        "diffusers_lora", REPO / "examples/diffusers_lora.py"
    )
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    threads = torch.get_num_threads()
    args = ["--steps", "4", "--eval-every", "2", "--prompts", "2", "--samples-per-prompt", "2"]
    args += ["--dataset-size", "16", "--batch-size", "4", "--output-dir", str(tmp_path)]
    try:
        summary = example.main([*args, "--threads", str(threads)])
    finally:
        torch.set_num_threads(threads)
        wandb.finish()  # a run left open would refuse the next test's run after teardown
        wandb.teardown()
    history = summary["history"]
    assert [row["global_step"] for row in history] == [0, 2, 4]
    # only the LoRA weights train, and the samples move with them
    assert history[0]["diversity/vendi_q1"] != history[-1]["diversity/vendi_q1"]
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert list((tmp_path / "wandb").glob("offline-run-*"))
    header = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"diversity/sce", "diversity/vendi_q1", "train/loss"} <= set(header)


@pytest.mark.slow  # a whole (short) training run of the example
def test_the_dreambooth_option_trains_on_the_instance_images_and_logs_the_copy_rate(
    tmp_path: Path,
):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "diffusers_lora", REPO / "examples/diffusers_lora.py"
    )
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    threads = torch.get_num_threads()
    args = ["--dreambooth", "3", "--full-unet", "--steps", "2", "--eval-every", "2"]
    args += ["--samples-per-prompt", "2", "--batch-size", "4", "--wandb-mode", "disabled"]
    try:
        summary = example.main([*args, "--output-dir", str(tmp_path), "--threads", str(threads)])
    finally:
        torch.set_num_threads(threads)
    assert len(example.training_pairs(example.parse_args(args))) == 3
    history = summary["history"]
    assert [row["global_step"] for row in history] == [0, 2]
    assert all(0 <= row["diversity/copy_rate"] <= 1 for row in history)
    assert "diversity/authenticity" in history[-1]
    assert list((tmp_path / "reference_cache").glob("*.pt"))  # embedded once, cached


def test_the_0_1_module_first_call_still_samples_the_module_with_a_future_warning(sd):
    module = PipelineModule(sd)
    sampler = DiffusersSampler("pipeline", **FAST)
    bound = sampler.bind(module)(["a red square"], seeded(0))
    with pytest.warns(FutureWarning, match=r"DiffusersSampler.bind\(module\)\(prompts"):
        old = sampler(module, ["a red square"], seeded(0))
    torch.testing.assert_close(old, bound)
