"""The resumable trainer (utils/demo/train_gan.py): a resumed run takes an explicit --lr, and keeps the stored
rate without one; the state and export record what was used."""

import json

import pytest
import torch

from utils.demo import train_gan

TINY = ['--size', '16', '--channels', '8', '--style-dim', '8', '--n-mlp', '1', '--batch', '2',
        '--threads', '1', '--save-every', '1', '--sample-every', '1000', '--family', 'glow']


def run(tmp_path, iters: int, *extra: str) -> dict:
    args = train_gan.parse_args([*TINY, '--iters', str(iters), '--state', str(tmp_path / 'state.pt'),
                                 '--export', str(tmp_path / 'export.pt'), '--samples', str(tmp_path / 's'),
                                 *extra])
    train_gan.train(args)
    return torch.load(tmp_path / 'state.pt', weights_only=True)


def rates(state: dict) -> tuple[float, float]:
    return state['g_optim']['param_groups'][0]['lr'], state['d_optim']['param_groups'][0]['lr']


@pytest.mark.filterwarnings('ignore')
def test_resume_takes_an_explicit_learning_rate_and_keeps_the_stored_one_otherwise(tmp_path):
    d_ratio = 16 / 17                                      # --d-reg-every 16: D's lazy-regularisation factor
    first = run(tmp_path, 1)
    assert first['iteration'] == 1
    assert rates(first) == pytest.approx((train_gan.DEFAULT_LR, train_gan.DEFAULT_LR * d_ratio), rel=1e-12)

    lowered = run(tmp_path, 2, '--lr', '0.0005')            # resumes at 1, one more iteration
    assert lowered['iteration'] == 2
    assert rates(lowered) == pytest.approx((0.0005, 0.0005 * d_ratio), rel=1e-12)
    info = json.loads(torch.load(tmp_path / 'export.pt', weights_only=True)['train_info'])
    assert info['lr'] == pytest.approx(0.0005, rel=1e-12) and info['iterations'] == 2

    kept = run(tmp_path, 3)                                 # no --lr: the stored (lowered) rate stays
    assert kept['iteration'] == 3
    assert rates(kept) == pytest.approx((0.0005, 0.0005 * d_ratio), rel=1e-12)
