"""Trains the demo StyleGAN2 on procedural toy-church scenes, on the CPU, resumably.

    python -m utils.demo.train_gan --iters 15000            # resumes from the state file if present

The glow-rule demo model (scene family 'glow', see utils/demo/scenes.py) is fine-tuned from the shipped
church model's training state into its own state file (see utils/demo/weights/REFLECTION_TRAINING.md):

    python -m utils.demo.train_gan --family glow --init-from utils/demo/weights/toychurch64-train.pt \
        --state utils/demo/weights/glowchurch64-train.pt --export utils/demo/weights/glowchurch64.pt ...

Non-saturating logistic loss, lazy R1 on reals, EMA generator, Adam(0, 0.99) with lazy-regularisation
correction, style mixing. The generator is the project's own SeqStyleGAN2 (split modulated convs:
plain convolutions and depthwise blurs), so the shipped EMA weights load with load_seq_stylegan.
State (g, d, g_ema, optimisers, iteration) goes to one file, overwritten atomically.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from utils import imgviz
from utils.demo.scenedata import scenes_as_tensor
from utils.demo.scenes import FAMILIES
from utils.stylegan2 import SeqStyleGAN2, save_checkpoint
from utils.stylegan2.checkpoint import atomic_torch_save
from utils.stylegan2.discriminator import Discriminator
from utils.stylegan2.layers import DataBag
from utils.zdataset import z_sample_for_model

WEIGHTS = Path(__file__).resolve().parent / 'weights'
DEFAULT_LR = 0.002
DATA_OFFSET = 2_000_000          # training scenes never overlap the held-out scenes 0..999999


def build_models(args) -> tuple[SeqStyleGAN2, Discriminator]:
    channels = {2 ** r: args.channels for r in range(2, 7)}
    g = SeqStyleGAN2(args.size, style_dim=args.style_dim, n_mlp=args.n_mlp, channels=channels,
                     mconv='seq', noise_mode='random')
    d = Discriminator(args.size, {r: args.channels for r in channels})
    return g, d


def mixed_latents(g: SeqStyleGAN2, batch: int, mixing: float) -> DataBag:
    """A bag of per-layer latents w [B, n_latent, D], with style mixing at probability `mixing`."""
    z = torch.randn(2, batch, g.style_dim)
    w = g.style(DataBag(latent=z.reshape(2 * batch, -1))).latent.reshape(2, batch, -1)
    lat = w[0][:, None].repeat(1, g.n_latent, 1)
    if mixing > 0 and torch.rand(()) < mixing:
        cut = int(torch.randint(1, g.n_latent, ()))
        lat[:, cut:] = w[1][:, None]
    return DataBag(latent=lat)


def generate(g: SeqStyleGAN2, bag: DataBag) -> torch.Tensor:
    """Runs the synthesis part of g (after the mapping network) on a bag of latents."""
    for name, step in g.named_children():
        if name not in ('bag_in', 'style'):
            bag = step(bag)
    return bag


def requires_grad(model, flag: bool) -> None:
    for p in model.parameters():
        p.requires_grad_(flag)


def ema_update(g_ema, g, decay: float) -> None:
    with torch.no_grad():
        for pe, p in zip(g_ema.parameters(), g.parameters()):
            pe.lerp_(p, 1 - decay)
        for be, b in zip(g_ema.buffers(), g.buffers()):
            be.copy_(b)


@torch.no_grad()
def mapping_mean(g: SeqStyleGAN2, n: int = 4096) -> torch.Tensor:
    gen = torch.Generator().manual_seed(123)
    z = torch.randn(n, g.style_dim, generator=gen)
    return g.style(DataBag(latent=z)).latent.mean(0)


def export_generator(g_ema: SeqStyleGAN2, path: Path, **info) -> None:
    """Writes the EMA generator (const noise) in the checkpoint layout with its latent_avg."""
    g = copy.deepcopy(g_ema).eval()
    g.latents.latent_avg.copy_(mapping_mean(g))
    save_checkpoint(g, path, train_info=json.dumps(info))


def save_grid(g_ema: SeqStyleGAN2, path: Path, n: int = 64) -> None:
    """An 8-column grid of z-sample images 0..n-1 of the EMA generator (const noise)."""
    g = copy.deepcopy(g_ema).eval()
    g.noise_mode = 'const'
    with torch.no_grad():
        images = imgviz.to_uint8_batch(g(z_sample_for_model(g, n)))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(imgviz.tile(images, cols=8)).save(path)


def set_learning_rate(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group['lr'] = lr


def train(args) -> None:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    g, d = build_models(args)
    g_ema = copy.deepcopy(g).eval()
    requires_grad(g_ema, False)
    g_ratio, d_ratio = 1.0, args.d_reg_every / (args.d_reg_every + 1)
    lr = DEFAULT_LR if args.lr is None else args.lr
    g_opt = torch.optim.Adam(g.parameters(), lr=lr * g_ratio, betas=(0.0, 0.99 ** g_ratio))
    d_opt = torch.optim.Adam(d.parameters(), lr=lr * d_ratio, betas=(0.0, 0.99 ** d_ratio))
    state_path = Path(args.state)
    start, wall = 0, 0.0
    if state_path.is_file() and not args.restart:
        st = torch.load(state_path, map_location='cpu', weights_only=True)
        for obj, key in [(g, 'g'), (d, 'd'), (g_ema, 'g_ema'), (g_opt, 'g_optim'), (d_opt, 'd_optim')]:
            obj.load_state_dict(st[key])
        start, wall = int(st['iteration']), float(st['wall_seconds'])
        torch.set_rng_state(st['rng'])
        print(f'resumed from {state_path} at iteration {start}')
        if args.lr is not None:  # an explicit --lr overrides the rate stored with the optimisers
            set_learning_rate(g_opt, args.lr * g_ratio)
            set_learning_rate(d_opt, args.lr * d_ratio)
            print(f'learning rate set to {args.lr} (G) / {args.lr * d_ratio:g} (D)')
    elif args.init_from:
        # fine-tuning: every weight and optimiser moment from another run's state, iterations counted from 0
        st = torch.load(args.init_from, map_location='cpu', weights_only=True)
        for obj, key in [(g, 'g'), (d, 'd'), (g_ema, 'g_ema'), (g_opt, 'g_optim'), (d_opt, 'd_optim')]:
            obj.load_state_dict(st[key])
        print(f'initialised from {args.init_from} (its iteration {int(st["iteration"])}); fine-tuning from 0')
    decay = 0.5 ** (args.batch / (args.ema_kimg * 1000))
    bar = tqdm(range(start, args.iters), initial=start, total=args.iters, dynamic_ncols=True)
    t0 = time.time()
    for it in bar:
        idx = [DATA_OFFSET + (it * args.batch + j) % args.data_size for j in range(args.batch)]
        real = scenes_as_tensor(idx, args.size, args.family)
        if args.augment_flip:
            flip = torch.rand(args.batch) < 0.5
            real[flip] = real[flip].flip(-1)

        requires_grad(g, False)
        requires_grad(d, True)
        fake = generate(g, mixed_latents(g, args.batch, args.mixing))
        d_loss = F.softplus(-d(real)).mean() + F.softplus(d(fake)).mean()
        d_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        d_opt.step()
        r1 = torch.zeros(())
        if it % args.d_reg_every == 0:
            real.requires_grad_(True)
            pred = d(real)
            (grad,) = torch.autograd.grad(pred.sum(), real, create_graph=True)
            r1 = grad.pow(2).reshape(grad.shape[0], -1).sum(1).mean()
            d_opt.zero_grad(set_to_none=True)
            (args.r1 / 2 * r1 * args.d_reg_every + 0 * pred[0, 0]).backward()
            d_opt.step()

        requires_grad(g, True)
        requires_grad(d, False)
        fake = generate(g, mixed_latents(g, args.batch, args.mixing))
        g_loss = F.softplus(-d(fake)).mean()
        g_opt.zero_grad(set_to_none=True)
        g_loss.backward()
        g_opt.step()
        ema_update(g_ema, g, decay)

        bar.set_postfix(d=f'{d_loss.item():.3f}', g=f'{g_loss.item():.3f}', r1=f'{r1.item():.3f}')
        done = it + 1
        if done % args.save_every == 0 or done == args.iters:
            elapsed = wall + time.time() - t0
            atomic_torch_save({'g': g.state_dict(), 'd': d.state_dict(), 'g_ema': g_ema.state_dict(),
                               'g_optim': g_opt.state_dict(), 'd_optim': d_opt.state_dict(),
                               'iteration': done, 'wall_seconds': elapsed, 'rng': torch.get_rng_state(),
                               'args': json.dumps(vars(args))}, state_path)
            export_generator(g_ema, Path(args.export), iterations=done, wall_seconds=round(elapsed),
                             lr=g_opt.param_groups[0]['lr'],
                             **{k: v for k, v in vars(args).items() if k in
                                ('size', 'channels', 'style_dim', 'n_mlp', 'batch', 'r1', 'mixing',
                                 'family', 'init_from', 'ema_kimg')})
        if done % args.sample_every == 0 or done == args.iters:
            save_grid(g_ema, Path(args.samples) / f'iter{done:06d}.png')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--iters', type=int, default=15000)
    p.add_argument('--batch', type=int, default=16)
    p.add_argument('--size', type=int, default=64)
    p.add_argument('--channels', type=int, default=64)
    p.add_argument('--style-dim', type=int, default=128)
    p.add_argument('--n-mlp', type=int, default=4)
    p.add_argument('--lr', type=float, default=None,
                   help=f'Adam learning rate (default {DEFAULT_LR} for a new run; when resuming, the rate stored '
                        'with the optimisers unless given)')
    p.add_argument('--r1', type=float, default=2.0, help='R1 weight (0.2 let D win and G collapse early)')
    p.add_argument('--d-reg-every', type=int, default=16)
    p.add_argument('--mixing', type=float, default=0.9)
    p.add_argument('--ema-kimg', type=float, default=2.0,
                   help='EMA half-life of the exported generator in thousands of images (applies on resume too)')
    p.add_argument('--data-size', type=int, default=1_000_000)
    p.add_argument('--augment-flip', action='store_true')
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--save-every', type=int, default=250)
    p.add_argument('--sample-every', type=int, default=500)
    p.add_argument('--state', default=str(WEIGHTS / 'toychurch64-train.pt'))
    p.add_argument('--export', default='runs/demo/toychurch64-latest.pt',
                   help='EMA generator export (copy it to utils/demo/weights/toychurch64.pt to ship it)')
    p.add_argument('--samples', default='runs/demo-samples')
    p.add_argument('--restart', action='store_true', help='ignore an existing state file')
    p.add_argument('--family', default='church', choices=FAMILIES, help='scene family of the training data')
    p.add_argument('--init-from', default=None,
                   help='fine-tune: when the state file does not exist yet, start from this state file instead')
    return p.parse_args(argv)


if __name__ == '__main__':
    train(parse_args())
