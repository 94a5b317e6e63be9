"""Running statistics over batches of feature vectors, mergeable across processes.

    stat = SecondMoment()
    for x in batches:          # x [N, C]
        stat.add(x)
    stat.moment()              # E[x x^T], float64 [C, C]
"""

from __future__ import annotations

import torch

__all__ = ['QuantileSample', 'SecondMoment', 'upper_block_gram']


class SecondMoment:
    """Uncentered second moment E[x x^T], plus E[x] and E[x^2] per unit, accumulated in float64.

    add(x [N, C]); merge(other) sums the accumulators of another instance (e.g. another rank).

    Precision, as guaranteed (u = 2^-24, the float32 unit roundoff; n = min(chunk, rows per add)):
    - float32 input: each chunk's x^T x is a float32 product (BLAS, any summation order), so each entry of
      a chunk's sum carries an error of at most gamma_n * sum_i |x_ia x_ib|, gamma_n = n u / (1 - n u)
      (2.4e-4 relative for n = 4096; rounding errors are random in practice, so about sqrt(n) u = 4e-6 is
      typical). The chunks' sums are added in float64. This applies to moment() and mean_square()
      (its diagonal); only the upper block-triangle of x^T x is computed (the product is symmetric), which
      with the float32 products keeps the statistics close to a bare forward pass.
    - mean(): sums accumulated in float64, exact up to float64 rounding, whatever the input dtype.
    - float64 input is multiplied in float64.
    """

    def __init__(self, state: dict | None = None, chunk: int = 4096, blocks: int = 4):
        self.count = 0
        self.sum_xxt: torch.Tensor | None = None       # upper block-triangle of sum x x^T
        self.sum_x: torch.Tensor | None = None
        self.chunk, self.blocks = chunk, blocks
        if state is not None:
            self.load_state_dict(state)

    def add(self, x: torch.Tensor) -> None:
        if x.dim() != 2:
            raise ValueError(f'SecondMoment.add expects [N, C], got shape {tuple(x.shape)}')
        x = x.detach()
        if not x.is_floating_point() or x.dtype not in (torch.float32, torch.float64):
            x = x.float()
        if self.sum_xxt is None:
            c = x.shape[1]
            self.sum_xxt = torch.zeros(c, c, dtype=torch.float64, device=x.device)
            self.sum_x = torch.zeros(c, dtype=torch.float64, device=x.device)
        for start in range(0, x.shape[0], self.chunk):
            part = x[start:start + self.chunk]
            self.sum_xxt += upper_block_gram(part, self.blocks).double()
            self.sum_x += part.sum(0, dtype=torch.float64)
        self.count += x.shape[0]

    def merge(self, other: SecondMoment) -> None:
        if other.sum_xxt is None:
            return
        if self.sum_xxt is None:
            self.sum_xxt, self.sum_x = other.sum_xxt.clone(), other.sum_x.clone()
        else:
            self.sum_xxt += other.sum_xxt.to(self.sum_xxt.device)
            self.sum_x += other.sum_x.to(self.sum_x.device)
        self.count += other.count

    def _need_data(self) -> None:
        if not self.count:
            raise ValueError('no samples were added to this SecondMoment')

    def moment(self) -> torch.Tensor:
        """E[x x^T], float64 [C, C]."""
        self._need_data()
        upper = torch.triu(self.sum_xxt)
        return (upper + torch.triu(self.sum_xxt, 1).t()) / self.count

    def mean(self) -> torch.Tensor:
        """E[x], float64 [C]."""
        self._need_data()
        return self.sum_x / self.count

    def mean_square(self) -> torch.Tensor:
        """E[x^2] per unit (the diagonal of the moment), float64 [C]."""
        return torch.diagonal(self.moment()).clone()

    def state_dict(self) -> dict:
        self._need_data()
        return {'count': self.count, 'sum_xxt': self.sum_xxt.cpu(), 'sum_x': self.sum_x.cpu()}

    def load_state_dict(self, state: dict) -> None:
        self.count = int(state['count'])
        self.sum_xxt = torch.as_tensor(state['sum_xxt'], dtype=torch.float64)
        self.sum_x = torch.as_tensor(state['sum_x'], dtype=torch.float64)


def upper_block_gram(x: torch.Tensor, blocks: int = 4) -> torch.Tensor:
    """x^T x [C, C] computed only on the row blocks' upper trapezoids (entries below the diagonal
    blocks are zero): x [N, C]."""
    c = x.shape[1]
    out = torch.zeros(c, c, dtype=x.dtype, device=x.device)
    size = -(-c // blocks)
    for start in range(0, c, size):
        out[start:start + size, start:] = x[:, start:start + size].t() @ x[:, start:]
    return out


class QuantileSample:
    """Per-unit quantiles from a fixed-size, deterministic subsample of the rows added.

    add(x [N, C]) keeps `per_batch` evenly spaced rows of each batch (up to `capacity` rows);
    quantiles(levels) -> [C, L]; normalize(x [C, N]) -> the empirical CDF value of each entry.
    """

    def __init__(self, capacity: int = 200_000, per_batch: int = 2048, resolution: int = 1000):
        self.capacity, self.per_batch, self.resolution = capacity, per_batch, resolution
        self.rows: list[torch.Tensor] = []
        self.kept = 0
        self._table: torch.Tensor | None = None

    def add(self, x: torch.Tensor) -> None:
        """Keeps `per_batch` evenly spaced rows of the batch x [N, C] (within the capacity)."""
        if self.kept < self.capacity:
            self.add_rows(self.batch_rows(x))

    def batch_rows(self, x: torch.Tensor) -> torch.Tensor:
        """The rows add(x) keeps of the batch x [N, C] (before the capacity), as a float32 CPU copy: what
        processes that each see some of the batches send to the one that merges them (in batch order)."""
        step = max(1, x.shape[0] // self.per_batch)
        # a copy: a view would keep every batch's whole key tensor alive
        return x.detach()[::step].to('cpu', torch.float32, copy=True)

    def add_rows(self, rows: torch.Tensor) -> None:
        """Keeps rows [M, C] of batch_rows as they are, up to the capacity (add_rows(batch_rows(x)) == add(x))."""
        if self.kept >= self.capacity:
            return
        rows = rows[: self.capacity - self.kept]
        self.rows.append(rows)
        self.kept += rows.shape[0]
        self._table = None

    def table(self) -> torch.Tensor:
        """Quantile values at `resolution + 1` evenly spaced levels: [C, resolution + 1]."""
        if self._table is None:
            if not self.rows:
                raise ValueError('no samples were added to this QuantileSample')
            data = torch.cat(self.rows).t().contiguous()
            levels = torch.linspace(0, 1, self.resolution + 1)
            self._table = torch.quantile(data, levels, dim=1).t().contiguous()
        return self._table

    def quantiles(self, levels) -> torch.Tensor:
        """Per-unit values at the given levels in [0, 1]: [C, L]."""
        levels = torch.as_tensor(levels, dtype=torch.float32)
        table = self.table()
        pos = levels * self.resolution
        lo = pos.floor().long().clamp(0, self.resolution)
        hi = (lo + 1).clamp(max=self.resolution)
        frac = pos - lo
        return table[:, lo] * (1 - frac) + table[:, hi] * frac

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """x [C, N] -> CDF level of each value under its unit's distribution, in [0, 1]."""
        table = self.table().to(x.device)
        idx = torch.searchsorted(table, x.float().contiguous(), right=True)
        return (idx.float() / (self.resolution + 1)).clamp(0, 1)

    def state_dict(self) -> dict:
        return {'table': self.table()}

    def load_state_dict(self, state: dict) -> None:
        self._table = torch.as_tensor(state['table'], dtype=torch.float32)
        self.resolution = self._table.shape[1] - 1
        self.rows = [torch.zeros(1)]
