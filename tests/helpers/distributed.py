"""Run a function in real torch.distributed processes (gloo backend, CPU) from a test.

Each rank runs ``fn(rank, world_size, *args)`` in its own spawned process; the return values come
back to the test in rank order. An exception on any rank fails the test with that rank's traceback.
Functions must be defined at module level so the spawned processes can import them.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD_SIZE = 2


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_distributed(
    fn: Callable[..., Any], *args: Any, world_size: int = WORLD_SIZE, timeout: float = 120
) -> list[Any]:
    """Run ``fn(rank, world_size, *args)`` on ``world_size`` gloo ranks; return their results.

    A collective that waits more than ``timeout`` seconds for another rank fails the run.
    """
    with tempfile.TemporaryDirectory() as folder:
        mp.spawn(
            _worker,
            args=(world_size, free_port(), folder, fn, args, timeout),
            nprocs=world_size,
            join=True,
        )
        return [
            torch.load(os.path.join(folder, f"{rank}.pt"), weights_only=False)
            for rank in range(world_size)
        ]


def _worker(
    rank: int,
    world_size: int,
    port: int,
    folder: str,
    fn: Callable[..., Any],
    args: tuple,
    timeout: float,
) -> None:
    torch.set_num_threads(1)  # two ranks on two cores
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=timeout),
    )
    try:
        result = fn(rank, world_size, *args)
        torch.save(result, os.path.join(folder, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


def launch_script(
    script: Path, out: Path, devices: int, *flags: str, timeout: int = 240
) -> list[dict]:
    """Run ``script OUT --devices N FLAGS`` as Lightning's DDP launcher wants it (a fresh process:
    it re-runs ``sys.argv`` per extra device); return each rank's ``OUT/rank{r}.json``."""
    env = {
        **os.environ,
        "PYTHONWARNINGS": "ignore",
        "OMP_NUM_THREADS": "1",
        "WANDB_MODE": "offline",
    }
    done = subprocess.run(
        [sys.executable, str(script), str(out), "--devices", str(devices), *flags],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return [json.loads((out / f"rank{rank}.json").read_text()) for rank in range(devices)]
