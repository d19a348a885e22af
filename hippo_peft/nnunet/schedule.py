"""Learning-rate schedule for transformer training: linear warm-up, then nnU-Net's poly decay."""
from __future__ import annotations

from torch.optim.lr_scheduler import _LRScheduler


class WarmupPolyLRScheduler(_LRScheduler):
    """lr = initial_lr * (step+1)/warmup during warm-up, then initial_lr * (1 - t)^exponent with t the fraction
    of post-warm-up steps done. Stepped like nnU-Net's PolyLRScheduler (``step(current_epoch)``).

    ``initial_lr`` is the first parameter group's peak rate; every other group follows the same curve at its own
    ratio to the first (from the groups' ``lr`` when the scheduler is made), so adapter and decoder groups keep
    their rates' ratio throughout."""

    def __init__(self, optimizer, initial_lr: float, max_steps: int, warmup_steps: int = 0, exponent: float = 0.9):
        if max_steps <= 0 or not 0 <= warmup_steps < max_steps:
            raise ValueError(f"Need 0 <= warmup_steps < max_steps, got warmup_steps={warmup_steps}, "
                             f"max_steps={max_steps}.")
        self.initial_lr, self.max_steps, self.warmup_steps, self.exponent = initial_lr, max_steps, warmup_steps, exponent
        self.ctr = 0
        super().__init__(optimizer, -1)

    def factor_at(self, step: int) -> float:
        """The multiplier of every group's start rate at ``step``."""
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        t = (step - self.warmup_steps) / (self.max_steps - self.warmup_steps)
        return max(1 - t, 0.0) ** self.exponent

    def step(self, current_step=None):
        if current_step is None or current_step == -1:
            current_step = self.ctr
            self.ctr += 1
        factor, first = self.factor_at(current_step), self.optimizer.param_groups[0]["initial_lr"]
        scale = self.initial_lr / first if first else 1.0
        for group in self.optimizer.param_groups:
            group["lr"] = factor * group["initial_lr"] * scale
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]
