"""Rank/world helpers for splitting work across processes started by torchrun.

A plain `python -m rewrite ...` is a world of one process and never touches torch.distributed.
Under `torchrun --nproc_per_node=K`, `process_group()` joins the K processes (gloo on CPU, nccl
on GPUs), and the helpers below split indices (i % K == rank), sum tensors across ranks and
broadcast a module's weights, each a no-op in a world of one.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ['all_agree', 'all_reduce_sum', 'backend_for', 'barrier', 'broadcast_module', 'gather_to_main',
           'process_group', 'World', 'world_from_env']


@dataclass(frozen=True)
class World:
    """This process's place among the processes of one run: rank in 0..size-1, local_rank on its host."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes shared outputs (caches, contact sheets)."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.size > 1

    def shard(self, indices: Iterable[int]) -> list[int]:
        """The indices this rank handles: those with i % size == rank (order kept)."""
        return [i for i in indices if i % self.size == self.rank]

    def device(self) -> torch.device:
        """cuda:local_rank when CUDA is available, else the CPU."""
        if torch.cuda.is_available():
            return torch.device('cuda', self.local_rank % torch.cuda.device_count())
        return torch.device('cpu')


def world_from_env(environ: Mapping[str, str] | None = None) -> World:
    """The World described by torchrun's RANK / WORLD_SIZE / LOCAL_RANK variables (a world of one if unset)."""
    env = os.environ if environ is None else environ
    try:
        size = int(env.get('WORLD_SIZE', '1'))
        rank = int(env.get('RANK', '0'))
        local_rank = int(env.get('LOCAL_RANK', str(rank)))
    except ValueError as e:
        raise ValueError(f'malformed torchrun environment (RANK/WORLD_SIZE/LOCAL_RANK): {e}') from None
    if size < 1 or not 0 <= rank < size or local_rank < 0:
        raise ValueError(f'malformed torchrun environment: RANK={rank}, WORLD_SIZE={size}, LOCAL_RANK={local_rank}')
    return World(rank=rank, size=size, local_rank=local_rank)


def backend_for(device: torch.device) -> str:
    """nccl for CUDA tensors, gloo otherwise."""
    return 'nccl' if device.type == 'cuda' else 'gloo'


@contextmanager
def process_group(world: World | None = None, timeout_s: float = 1800.0) -> Iterator[World]:
    """Joins the torchrun process group for the duration of the block when WORLD_SIZE > 1.

    Yields the World. The group is created only if this block created it and destroyed on exit.
    """
    world = world_from_env() if world is None else world
    created = False
    if world.is_distributed and not dist.is_initialized():
        device = world.device()
        if device.type == 'cuda':
            torch.cuda.set_device(device)
        dist.init_process_group(backend_for(device), rank=world.rank, world_size=world.size,
                                timeout=datetime.timedelta(seconds=timeout_s))
        created = True
    try:
        yield world
    finally:
        if created:
            dist.destroy_process_group()


def _collective_device() -> torch.device:
    """Where tensors must live for the current group's backend."""
    if dist.get_backend() == 'nccl':
        return torch.device('cuda', torch.cuda.current_device())
    return torch.device('cpu')


def barrier(world: World) -> None:
    """Waits for every rank (no-op in a world of one)."""
    if world.is_distributed:
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor, world: World) -> torch.Tensor:
    """The elementwise sum of `tensor` over all ranks (a new tensor on tensor's device; same dtype)."""
    if not world.is_distributed:
        return tensor.clone()
    buf = tensor.detach().to(_collective_device()).clone()
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return buf.to(tensor.device)


def all_agree(flag: bool, world: World) -> bool:
    """True only if `flag` is true on every rank (so all ranks take the same branch)."""
    if not world.is_distributed:
        return bool(flag)
    votes = all_reduce_sum(torch.tensor([0 if flag else 1], dtype=torch.int64), world)
    return int(votes.item()) == 0


def broadcast_module(module: torch.nn.Module, world: World, src: int = 0) -> None:
    """Copies every parameter and buffer of `module` on rank `src` into the other ranks' module, in place."""
    if not world.is_distributed:
        return
    with torch.no_grad():
        for tensor in list(module.parameters()) + list(module.buffers()):
            buf = tensor.detach().to(_collective_device()).clone()
            dist.broadcast(buf, src=src)
            tensor.copy_(buf.to(tensor.device))


def gather_to_main(items: dict, world: World) -> dict:
    """The union of every rank's dict (picklable values) on rank 0; the other ranks get {}."""
    if not world.is_distributed:
        return dict(items)
    parts = [None] * world.size if world.is_main else None
    dist.gather_object(items, parts, dst=0)
    return {k: v for part in parts for k, v in part.items()} if world.is_main else {}
