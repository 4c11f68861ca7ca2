"""The README's "Large models" snippet runs as written."""

from __future__ import annotations

import torch

from tests.readme import python_blocks


def test_the_ema_snippet_samples_the_averaged_copy():
    namespace: dict = {}
    (block,) = python_blocks("Large models: sharded generators")
    exec(block, namespace)
    ema, decoder = namespace["ema"], namespace["decoder"]
    assert ema.model is not decoder
    with torch.no_grad():
        decoder.linear.weight.add_(1.0)
    before = ema.model.linear.weight.clone()
    ema.update(decoder)  # moves a thousandth of the way to the changed weights
    expected = before + 0.001 * (decoder.linear.weight - before)
    assert torch.allclose(ema.model.linear.weight, expected)
    # the callback's call samples the copy, not the trained module
    generators = [torch.Generator().manual_seed(0)]
    sampled = ema(None, None, generators)
    generators = [torch.Generator().manual_seed(0)]
    assert torch.equal(sampled, ema.model.generate(None, generators))
    generators = [torch.Generator().manual_seed(0)]
    assert not torch.equal(sampled, decoder.generate(None, generators))
