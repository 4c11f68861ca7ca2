"""Tokens per second of ``TransformersSampler`` next to ``model.generate`` on the same batch.

Both decode the same left-padded batch of prompts with the same model, sampling with
temperature 1 for exactly ``--new-tokens`` tokens (no end-of-sequence stop: ``generate`` gets
``min_new_tokens``, the sampler ``stop_at_eos=False``), in alternating calls in one process;
each reports its fastest call (slower calls measure the others' load on the machine). The
sampler draws every row from its own generator (one exponential draw per row and token);
``generate`` draws the batch from the global stream. The ratio column is the sampler's share of
``generate``'s throughput.

Rows: random GPT-2 models from configs (a tiny one, a 4-layer 256-wide one, and GPT-2 small's
shape), batch 16, 16-token prompts, on CPU; with CUDA, the same on the GPU.

Run: ``python benchmarks/bench_text.py [--calls 5] [--new-tokens 64] [--threads N]``.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import torch

from diversity_callbacks import TransformersSampler

MODELS = {
    "tiny (2 x 32)": {"n_embd": 32, "n_layer": 2, "n_head": 2},
    "small (4 x 256)": {"n_embd": 256, "n_layer": 4, "n_head": 4},
    "GPT-2 small shape (12 x 768)": {"n_embd": 768, "n_layer": 12, "n_head": 12},
}
VOCAB = 1000


class _Tokenizer:
    """Integer prompts: the benchmark measures decoding, not tokenisation."""

    pad_token_id = 0
    eos_token_id = VOCAB - 1

    def __call__(self, prompt: str) -> dict[str, list[int]]:
        return {"input_ids": [int(t) for t in prompt.split()]}

    def decode(self, tokens: list[int], skip_special_tokens: bool = True) -> str:
        return " ".join(map(str, tokens))


def fastest(function: Callable[[], object], calls: int, device: torch.device) -> float:
    best = float("inf")
    for _ in range(calls):
        start = time.perf_counter()
        function()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def row(name: str, config: dict, device: torch.device, args: argparse.Namespace) -> str:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    end = VOCAB - 1
    config = GPT2Config(
        vocab_size=VOCAB, n_positions=256, bos_token_id=end, eos_token_id=end, **config
    )
    model = GPT2LMHeadModel(config)
    model = model.eval().to(device)
    lengths = [args.prompt_tokens - (i % 4) for i in range(args.batch)]  # padding to handle
    prompts = [
        " ".join(str(1 + (7 * i + j) % (VOCAB - 2)) for j in range(n))
        for i, n in enumerate(lengths)
    ]
    sampler = TransformersSampler(
        model, _Tokenizer(), max_new_tokens=args.new_tokens, stop_at_eos=False
    )
    ids = torch.zeros(args.batch, max(lengths), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, prompt in enumerate(prompts):
        tokens = _Tokenizer()(prompt)["input_ids"]
        ids[i, -len(tokens) :] = torch.tensor(tokens)
        mask[i, -len(tokens) :] = 1
    ids, mask = ids.to(device), mask.to(device)

    def ours() -> None:
        generators = [torch.Generator(device).manual_seed(i) for i in range(args.batch)]
        sampler(prompts, generators)

    @torch.no_grad()
    def theirs() -> None:
        model.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=True,
            top_k=0,
            max_new_tokens=args.new_tokens,
            min_new_tokens=args.new_tokens,
            pad_token_id=0,
        )

    ours(), theirs()  # warm-up
    times = {"ours": [], "theirs": []}
    for _ in range(args.calls):  # interleaved: both see the same load
        times["ours"].append(fastest(ours, 1, device))
        times["theirs"].append(fastest(theirs, 1, device))
    tokens = args.batch * args.new_tokens
    ours_rate, their_rate = tokens / min(times["ours"]), tokens / min(times["theirs"])
    return (
        f"| {name} | {device.type} | {ours_rate:,.0f} | {their_rate:,.0f} | "
        f"{ours_rate / their_rate:.2f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(f"batch {args.batch}, {args.prompt_tokens}-token prompts, {args.new_tokens} new tokens")
    print("| model | device | sampler tokens/s | generate tokens/s | ratio |")
    print("| --- | --- | ---: | ---: | ---: |")
    for device in devices:
        for name in args.models:
            print(row(name, MODELS[name], device, args), flush=True)
    print(f"load average: {os.getloadavg()}, threads: {args.threads}")


if __name__ == "__main__":
    main()
