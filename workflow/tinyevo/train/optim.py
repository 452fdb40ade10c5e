"""Momentum SGD and the cosine learning-rate schedule of the training loop, without
``torch.optim``.

Creating any ``torch.optim`` optimizer imports ``torch._dynamo`` (its methods are wrapped by
``torch._disable_dynamo``, which imports the compiler on first call): about 3 CPU seconds per
process on the 2-core development machine, more than a whole epoch of most trainings of the
pipeline, paid again by every training, validation and final-round job. The loop needs two
small pieces of ``torch.optim`` and nothing else, so they live here:

* :class:`SGD` is the update of ``torch.optim.SGD`` with ``dampening=0``, ``nesterov=False``,
  ``maximize=False`` on its single-tensor path (the path torch takes for CPU tensors)::

      g = grad + weight_decay * p            (when weight_decay != 0)
      b = g  (first step),  b = momentum * b + g  (later steps)     (when momentum != 0)
      p = p - lr * b

  step by step the same tensor operations, so a CPU training is bit-identical to one with
  ``torch.optim.SGD`` (tested). On CUDA torch would batch the same operations (``foreach``); the
  arithmetic per element is the same.
* :class:`CosineSchedule` is ``torch.optim.lr_scheduler.CosineAnnealingLR`` stepped once per
  epoch, with its recursive formula, so the learning rates equal torch's to the last bit.

Both keep ``param_groups`` (``GradScaler`` unscales through it) and ``state_dict`` /
``load_state_dict`` in torch's layout, so the checkpoints of earlier trainings still resume.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import torch

__all__ = ["SGD", "CosineSchedule"]


class SGD:
    """Momentum SGD with L2 weight decay over one parameter group (see the module docstring)."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float, momentum: float = 0.0,
                 weight_decay: float = 0.0):
        params = list(params)
        if not params:
            raise ValueError("SGD got an empty parameter list")
        for name, v in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay)):
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                raise ValueError(f"SGD {name} must be a finite number >= 0, got {v!r}")
        self.param_groups: list[dict[str, Any]] = [
            {"params": params, "lr": float(lr), "momentum": float(momentum), "weight_decay": float(weight_decay)}]
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.param_groups[0]["params"]:
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad.detach_()
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        group = self.param_groups[0]
        lr, momentum, wd = group["lr"], group["momentum"], group["weight_decay"]
        for p in group["params"]:
            if p.grad is None:
                continue
            g = p.grad
            if wd != 0:
                g = g.add(p, alpha=wd)
            if momentum != 0:
                st = self.state.setdefault(p, {})
                buf = st.get("momentum_buffer")
                if buf is None:
                    buf = torch.clone(g).detach()
                    st["momentum_buffer"] = buf
                else:
                    buf.mul_(momentum).add_(g)
                g = buf
            p.add_(g, alpha=-lr)

    def state_dict(self) -> dict[str, Any]:
        """torch's layout: ``state`` keyed by parameter index, ``param_groups`` with indices."""
        group = self.param_groups[0]
        state = {i: {"momentum_buffer": self.state[p]["momentum_buffer"]}
                 for i, p in enumerate(group["params"]) if "momentum_buffer" in self.state.get(p, {})}
        return {"state": state,
                "param_groups": [{**{k: v for k, v in group.items() if k != "params"},
                                  "dampening": 0.0, "nesterov": False, "maximize": False,
                                  "params": list(range(len(group["params"])))}]}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict` or from a ``torch.optim.SGD`` state dict of the same
        parameters; any other shape is an error, never a silent partial load."""
        group = self.param_groups[0]
        groups = sd.get("param_groups") if isinstance(sd, dict) else None
        if not groups or len(groups) != 1 or len(groups[0].get("params", ())) != len(group["params"]):
            raise ValueError("optimizer state does not match the model's parameters (one group of "
                             f"{len(group['params'])} tensors expected)")
        g = groups[0]
        if g.get("dampening", 0) != 0 or g.get("nesterov", False) or g.get("maximize", False):
            raise ValueError("optimizer state uses dampening, Nesterov or maximize, which this SGD does not")
        for k in ("lr", "momentum", "weight_decay"):
            group[k] = float(g[k])
        self.state = {}
        for idx, st in sd.get("state", {}).items():
            p = group["params"][int(idx)]
            buf = st.get("momentum_buffer")
            if buf is not None:
                if buf.shape != p.shape:
                    raise ValueError(f"momentum buffer {idx} has shape {tuple(buf.shape)}, its parameter "
                                     f"{tuple(p.shape)}")
                self.state[p] = {"momentum_buffer": buf.to(device=p.device, dtype=p.dtype).clone()}


class CosineSchedule:
    """``CosineAnnealingLR(optimizer, T_max)`` (``eta_min`` 0 unless given), :meth:`step` once
    per epoch after the epoch's optimizer steps; the learning rate lives in the optimizer's
    ``param_groups`` as with torch."""

    def __init__(self, optimizer: SGD, T_max: int, eta_min: float = 0.0):
        if not isinstance(T_max, int) or T_max < 1:
            raise ValueError(f"T_max must be an int >= 1, got {T_max!r}")
        self.optimizer = optimizer
        self.T_max = T_max
        self.eta_min = float(eta_min)
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]
        self.last_epoch = 0
        self._step_count = 1

    def step(self) -> None:
        self._step_count += 1
        self.last_epoch += 1
        e, t = self.last_epoch, self.T_max
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            lr = group["lr"]
            if (e - 1 - t) % (2 * t) == 0:
                group["lr"] = lr + (base - self.eta_min) * (1 - math.cos(math.pi / t)) / 2
            else:
                group["lr"] = ((1 + math.cos(math.pi * e / t)) / (1 + math.cos(math.pi * (e - 1) / t))
                               * (lr - self.eta_min) + self.eta_min)

    def state_dict(self) -> dict[str, Any]:
        return {"T_max": self.T_max, "eta_min": self.eta_min, "base_lrs": list(self.base_lrs),
                "last_epoch": self.last_epoch, "_step_count": self._step_count,
                "_last_lr": [g["lr"] for g in self.optimizer.param_groups]}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict` or a ``CosineAnnealingLR`` state dict."""
        if int(sd["T_max"]) != self.T_max:
            raise ValueError(f"schedule state has T_max {sd['T_max']}, this schedule {self.T_max}")
        self.eta_min = float(sd.get("eta_min", 0.0))
        self.base_lrs = [float(b) for b in sd["base_lrs"]]
        self.last_epoch = int(sd["last_epoch"])
        self._step_count = int(sd.get("_step_count", self.last_epoch + 1))
