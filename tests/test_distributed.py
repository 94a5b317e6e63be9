"""Rank/world helpers: sharding, the torchrun environment, and real 2-process gloo collectives."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from hypothesis import given
from hypothesis import strategies as st

from utils.distributed import (
    World,
    all_agree,
    all_reduce_sum,
    backend_for,
    barrier,
    broadcast_module,
    gather_to_main,
    process_group,
    world_from_env,
)


@given(st.integers(1, 7), st.integers(0, 50), st.integers(0, 200))
def test_shards_partition_the_indices(size, start, n):
    indices = list(range(start, start + n))
    shards = [World(rank=r, size=size).shard(indices) for r in range(size)]
    assert sorted(i for s in shards for i in s) == indices
    for r, shard in enumerate(shards):
        assert all(i % size == r for i in shard)
        assert shard == sorted(shard)


def test_world_from_env():
    assert world_from_env({}) == World(0, 1, 0)
    w = world_from_env({'RANK': '3', 'WORLD_SIZE': '4', 'LOCAL_RANK': '1'})
    assert (w.rank, w.size, w.local_rank, w.is_main, w.is_distributed) == (3, 4, 1, False, True)
    assert world_from_env({'RANK': '0', 'WORLD_SIZE': '2'}).local_rank == 0


@pytest.mark.parametrize('env', [{'WORLD_SIZE': 'two'}, {'RANK': '2', 'WORLD_SIZE': '2'},
                                 {'WORLD_SIZE': '0'}, {'RANK': '-1', 'WORLD_SIZE': '2'}])
def test_world_from_env_rejects_malformed(env):
    with pytest.raises(ValueError, match='torchrun environment'):
        world_from_env(env)


def test_backend_choice():
    assert backend_for(torch.device('cpu')) == 'gloo'
    assert backend_for(torch.device('cuda', 0)) == 'nccl'


def test_world_of_one_is_a_no_op():
    world = World()
    x = torch.arange(4, dtype=torch.float64)
    y = all_reduce_sum(x, world)
    assert torch.equal(x, y) and y is not x
    assert all_agree(True, world) and not all_agree(False, world)
    module = torch.nn.Linear(2, 2)
    before = module.weight.detach().clone()
    broadcast_module(module, world)
    barrier(world)
    assert torch.equal(module.weight, before)
    assert gather_to_main({'a': 1}, world) == {'a': 1}
    with process_group(world) as w:
        assert w == world and not torch.distributed.is_initialized()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _worker(rank: int, size: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    world = World(rank=rank, size=size, local_rank=rank)
    with process_group(world) as w:
        x = torch.tensor([1e-9 * (rank + 1), 2.0 ** 40 + rank], dtype=torch.float64)
        total = all_reduce_sum(x, w)
        agree_all = all_agree(True, w)
        agree_one_false = all_agree(rank != 1, w)
        torch.manual_seed(100 + rank)                 # a different module on every rank
        module = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
        module[1].running_mean.fill_(rank + 1.0)
        broadcast_module(module, w)
        state = {k: v.clone() for k, v in module.state_dict().items()}
        gathered = gather_to_main({f'r{rank}': torch.full((rank + 1,), float(rank))}, w)
        torch.save((rank, total, agree_all, agree_one_false, state, gathered), os.path.join(out_dir, f'{rank}.pt'))
    assert not torch.distributed.is_initialized()


@pytest.mark.slow
def test_two_process_gloo_collectives(tmp_path):
    mp.start_processes(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True, start_method='spawn')
    got = [torch.load(tmp_path / f'{rank}.pt', weights_only=False) for rank in range(2)]
    expected = torch.tensor([1e-9 + 2e-9, 2.0 ** 41 + 1], dtype=torch.float64)
    torch.manual_seed(100)
    reference = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    reference[1].running_mean.fill_(1.0)
    assert sorted(got[0][5]) == ['r0', 'r1'] and got[1][5] == {}
    assert torch.equal(got[0][5]['r1'], torch.tensor([1.0, 1.0]))
    for _, total, agree_all, agree_one_false, state, _ in got:
        assert total.dtype == torch.float64 and torch.equal(total, expected)
        assert agree_all is True and agree_one_false is False
        for key, value in reference.state_dict().items():
            assert torch.equal(state[key], value), key
