"""Fine-tune the tiny GPT-2 with a Hugging Face Trainer and the diversity callback; write this
rank's history to OUT/rank{r}.json. Run by tests/integrations/test_hf.py under
``torchrun --nproc_per_node 2`` (gloo on CPU)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch

from tests.helpers.hf_models import hf_trainer


def main() -> None:
    out = Path(sys.argv[1])
    torch.set_num_threads(1)  # two ranks share two cores
    rank = int(os.environ["RANK"])
    # each rank writes its own tokenizer and embedder files: no rank reads a half-written one
    trainer, callback = hf_trainer(out / f"files{rank}", ddp_backend="gloo")
    assert trainer.args.world_size == 2
    (out / f"rank{rank}.json").write_text(json.dumps(callback.history))


if __name__ == "__main__":
    main()
