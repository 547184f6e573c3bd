"""Low-precision copies of the weights that autocast casts, refreshed once per step.

Under `torch.autocast` every convolution and matmul weight is cast to bf16 in each forward (one
cast op per weight, recorded by autograd) and its gradient is cast back in the backward. On the
CPU these ~300 small ops per step cost more than the work they do. `WeightCopies` finds, from the
autograd graph of one ordinary step, the parameters whose only use is such a cast; from then on
the network runs (`torch.func.functional_call`) on bf16 leaf copies of them, refreshed with one
fused copy before each forward, and a hook moves each copy's gradient into
its float32 parameter as soon as the backward has produced it. The values are the same as
autocast's: the copy rounds like autocast's cast, the copy's gradient is summed in bf16 like the
cast's, and bf16 -> float32 is exact (tests/training/test_weight_copies.py). Single-process only:
DDP's gradient hooks sit on the float32 parameters (benchmarks/README.md has the step times).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


def autocast_cast_parameters(
    model: nn.Module, roots: Iterable[torch.Tensor], dtype: torch.dtype
) -> list[str]:
    """Names of the parameters of `model` that the graph behind `roots` uses only through one cast
    to `dtype` (autocast caches one cast per weight within a forward)."""
    uses: dict[int, list[torch.autograd.graph.Node]] = {}
    seen: set[int] = set()
    stack = [t.grad_fn for t in roots if t.grad_fn is not None]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        for child, _ in node.next_functions:
            if child is None:
                continue
            variable = getattr(child, "variable", None)
            if variable is not None:  # an AccumulateGrad: `node` uses a leaf
                uses.setdefault(id(variable), []).append(node)
            else:
                stack.append(child)
    names = []
    for name, param in model.named_parameters():
        users = uses.get(id(param), [])
        if len(users) == 1 and _is_cast_to(users[0], dtype):
            names.append(name)
    return names


def _is_cast_to(node: torch.autograd.graph.Node, dtype: torch.dtype) -> bool:
    return type(node).__name__ == "ToCopyBackward0" and node._input_metadata[0].dtype == dtype


class WeightCopies:
    """`dtype` leaf copies of `model`'s parameters `names`; `call` runs the model on them."""

    def __init__(self, model: nn.Module, names: list[str], dtype: torch.dtype):
        params = dict(model.named_parameters())
        self.names = list(names)
        self.params = [params[n] for n in self.names]
        self.copies = [
            torch.empty_like(p, dtype=dtype, memory_format=torch.preserve_format).requires_grad_()
            for p in self.params
        ]
        for param, copy in zip(self.params, self.copies):
            copy.register_post_accumulate_grad_hook(_gradient_to(param))

    def refresh(self) -> None:
        """Copy the current weights. Every call: the fused Adam kernel updates the parameters without
        bumping their version counters, so "has anything written to them" cannot be asked."""
        with torch.no_grad():
            torch._foreach_copy_(self.copies, self.params)

    def call(self, model: nn.Module, *args: object) -> object:
        self.refresh()
        return torch.func.functional_call(
            model, dict(zip(self.names, self.copies)), args, tie_weights=False, strict=False
        )


def _gradient_to(param: nn.Parameter):
    """Hook: add a copy's fresh gradient to `param.grad` in float32 and free the copy's."""

    def hook(copy: torch.Tensor) -> None:
        grad = copy.grad
        copy.grad = None
        with torch.no_grad():
            if param.grad is None:
                param.grad = grad.to(param.dtype)
            else:
                param.grad.add_(grad)

    return hook
