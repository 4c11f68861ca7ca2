"""A generator sharded with FSDP2 (fully_shard) evaluated on 2 gloo ranks: every rank makes the
same forwards (uneven and empty shares padded with throw-away calls), no rank hangs, and the
values are those of the unsharded generator."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from diversity_callbacks import DiversityEvaluator
from tests.helpers.distributed import run_distributed
from tests.helpers.trainer import PROMPTS, PixelEmbedder


class Generator(nn.Module):
    """Noise and a prompt embedding -> a (3, 8, 8) image in [-1, 1]."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)  # the same weights on every rank and in the reference
        self.embed = nn.Embedding(len(PROMPTS), 8)
        self.hidden = nn.Sequential(nn.Linear(12, 32), nn.Tanh())
        self.out = nn.Linear(32, 3 * 8 * 8)
        self.calls = 0

    def forward(self, noise: Tensor, ids: Tensor) -> Tensor:
        hidden = self.hidden(torch.cat([noise, self.embed(ids)], dim=1))
        return torch.tanh(self.out(hidden)).view(-1, 3, 8, 8)

    def generate(self, prompts: list[str], generators: list[torch.Generator]) -> Tensor:
        self.calls += 1
        noise = torch.stack([torch.randn(4, generator=g) for g in generators])
        return self(noise, torch.tensor([PROMPTS.index(p) for p in prompts]))


def shard(module: Generator, world_size: int) -> Generator:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (world_size,))
    for part in (module.embed, module.hidden, module.out, module):
        fully_shard(part, mesh=mesh)
    return module


def evaluator(num_prompts: int, per_prompt: int = 1) -> DiversityEvaluator:
    # one sample per batch: with 3 samples rank 0 draws 1 batch and rank 1 draws 2; with 1,
    # rank 0 draws none
    return DiversityEvaluator(
        PROMPTS[:num_prompts], per_prompt, batch_size=1, embedder=PixelEmbedder(), sce=False
    )


def on_two_ranks(rank: int, world_size: int) -> dict:
    """Both share patterns, then the refused setup, in one launch of the ranks."""
    results = {}
    for num_prompts in (3, 1):
        module = shard(Generator(), world_size)
        result = evaluator(num_prompts).evaluate(module.generate, module=module, progress=False)
        results[num_prompts] = (result.scalars, module.calls)
    module = Generator()
    module.out.weight.ds_id = 0  # how DeepSpeed ZeRO-3 marks a partitioned parameter
    try:
        evaluator(3).evaluate(module.generate, module=module, progress=False)
    except NotImplementedError as error:
        results["zero3"] = str(error)
    return results


@pytest.fixture(scope="module")
def ranks() -> list[dict]:
    return run_distributed(on_two_ranks)


@pytest.mark.timeout(300)  # a rank left waiting in a forward would hang: fail instead
@pytest.mark.parametrize(("num_prompts", "calls"), [(3, 2), (1, 1)])
def test_uneven_and_empty_shares_finish_with_the_unsharded_values(
    ranks: list[dict], num_prompts: int, calls: int
):
    module = Generator()
    expected = evaluator(num_prompts).evaluate(module.generate, module=module).scalars
    for result in ranks:
        scalars, made = result[num_prompts]
        assert made == calls  # every rank made as many forwards as the busiest one
        assert scalars.keys() == expected.keys()
        for key, value in expected.items():
            if not key.endswith("eval_seconds"):
                assert scalars[key] == pytest.approx(value, rel=1e-6), key


def test_an_unsupported_sharding_is_refused_naming_it_and_what_to_do(ranks: list[dict]):
    for result in ranks:
        assert "sharded by DeepSpeed ZeRO-3 is not supported" in result["zero3"]
        assert "Evaluate an unsharded copy instead" in result["zero3"]


def failing_on_rank_one(module: Generator, rank: int, before_forward: bool):
    """``module.generate``, except that rank 1's 2nd call raises before or after its forward."""

    def sample(prompts: list[str], generators: list[torch.Generator]) -> Tensor:
        failing = rank == 1 and module.calls == 1
        if failing and before_forward:
            module.calls += 1
            raise RuntimeError("no noise today")
        images = module.generate(prompts, generators)
        return images[:0] if failing else images  # no image: fails the evaluator's check

    return sample


def failures_on_two_ranks(rank: int, world_size: int) -> dict:
    """Rank 1 fails in its 2nd of 3 calls; then sharded sampling without `module=`."""
    import time

    from diversity_callbacks import EvaluationError

    results = {}
    for before_forward in (True, False):
        module = shard(Generator(), world_size)
        start = time.perf_counter()
        try:
            evaluator(3, per_prompt=2).evaluate(  # 3 batches per rank
                failing_on_rank_one(module, rank, before_forward), module=module, progress=False
            )
        except EvaluationError as error:
            results[before_forward] = (str(error), time.perf_counter() - start)
    module = shard(Generator(), world_size)
    result = evaluator(3).evaluate(module.generate, progress=False)  # no module=
    results["no module"] = (result.scalars, module.calls)
    return results


@pytest.fixture(scope="module")
def failing_ranks() -> list[dict]:
    return run_distributed(failures_on_two_ranks)


@pytest.mark.timeout(300)  # a rank left waiting in a forward would hang: fail instead
@pytest.mark.parametrize("before_forward", [True, False])
def test_a_rank_failing_in_a_call_stops_every_rank_in_seconds_naming_it(
    failing_ranks: list[dict], before_forward: bool
):
    (own, own_seconds), (other, other_seconds) = (r[before_forward] for r in failing_ranks[::-1])
    reason = "no noise today" if before_forward else "one image per generator"
    assert "diversity evaluation failed while sampling" in own and reason in own
    assert "samples 4..4" in own  # rank 1's 2nd batch
    assert "failed on rank 1 while sampling" in other and reason in other
    assert max(own_seconds, other_seconds) < 30  # not the process group's 120 s timeout


@pytest.mark.timeout(300)
def test_a_sharded_generator_without_module_keeps_in_step(failing_ranks: list[dict]):
    module = Generator()
    expected = evaluator(3).evaluate(module.generate, module=module).scalars
    for result in failing_ranks:
        scalars, made = result["no module"]
        assert made == 2  # rank 0's one batch and one throw-away call; rank 1's two batches
        for key, value in expected.items():
            if not key.endswith("eval_seconds"):
                assert scalars[key] == pytest.approx(value, rel=1e-6), key


@pytest.mark.skipif(not torch.cuda.is_available(), reason="Lightning's FSDP strategies need CUDA")
@pytest.mark.parametrize("strategy", ["fsdp", "fsdp2"])
def test_the_callback_samples_a_module_under_lightnings_fsdp_strategies(strategy: str):
    import lightning as L
    from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy

    from diversity_callbacks import DiversityCallback
    from tests.helpers.trainer import TinyGenerator, tiny_data

    class Sharded(TinyGenerator):
        def configure_model(self) -> None:  # FSDP2: Lightning applies no wrapping of its own
            if strategy == "fsdp2":
                from torch.distributed.fsdp import fully_shard

                fully_shard(self.net, mesh=self.device_mesh["data_parallel"])

    chosen = FSDPStrategy() if strategy == "fsdp" else ModelParallelStrategy()
    callback = DiversityCallback(
        PROMPTS, 2, embedder=PixelEmbedder(), every_n_train_steps=2, sce=False
    )
    trainer = L.Trainer(
        accelerator="cuda",
        devices=1,
        strategy=chosen,
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=[callback],
    )
    trainer.fit(Sharded(), tiny_data())
    assert [row["step"] for row in callback.history] == [0, 2]
