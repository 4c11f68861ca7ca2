"""A generator sharded with FSDP2 (fully_shard) evaluated on 2 gloo ranks: every rank makes the
same forwards (uneven and empty shares padded with throw-away calls), no rank hangs, and the
values are those of the unsharded generator."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from diversity_callbacks import DiversityEvaluator
from tests.distributed import run_distributed
from tests.lightning_helpers import PROMPTS, PixelEmbedder


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


def evaluator(num_prompts: int) -> DiversityEvaluator:
    # one sample per batch: with 3 samples rank 0 draws 1 batch and rank 1 draws 2; with 1,
    # rank 0 draws none
    return DiversityEvaluator(
        PROMPTS[:num_prompts], 1, batch_size=1, embedder=PixelEmbedder(), sce=False
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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="Lightning's FSDP strategies need CUDA")
@pytest.mark.parametrize("strategy", ["fsdp", "fsdp2"])
def test_the_callback_samples_a_module_under_lightnings_fsdp_strategies(strategy: str):
    import lightning as L
    from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy

    from diversity_callbacks import DiversityCallback
    from tests.lightning_helpers import TinyGenerator, tiny_data

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
