"""Forward hooks as context managers: trace, edit and stop, removing only our own handles.

Three things the editor needs from a running model, in the spirit of baukit's ``nethook``:

* read the input (a key ``k``) and/or output of modules — :class:`Trace`, :class:`TraceDict`;
* add a (differentiable) vector to a module's output at chosen tokens — :func:`add_to_output`;
* abort the forward pass once the last module of interest has run — ``stop=True``,
  :func:`stop_after`; the :class:`StopForward` exception this raises is caught by the context.

Every handle is registered on ``__enter__`` and removed on ``__exit__`` (which always runs, also
after an exception); hooks registered by anyone else are never touched. Modules whose output is a
tuple (transformer blocks) are handled: edits apply to the first element.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterable, Sequence

import torch
from torch import nn

from .errors import ShapeError


class StopForward(Exception):
    """Raised inside a forward pass to end it early; caught by the tracing context manager."""


def _first_input(args: tuple, kwargs: dict):
    """The module's main input: its first positional argument, else its first tensor kwarg."""
    if args:
        return args[0]
    return next((value for value in kwargs.values() if isinstance(value, torch.Tensor)), None)


def _first_output(output):
    return output[0] if isinstance(output, (tuple, list)) else output


def _replace_first_output(output, first):
    if isinstance(output, tuple):
        return (first,) + output[1:]
    if isinstance(output, list):
        return [first] + output[1:]
    return first


class Trace(contextlib.AbstractContextManager):
    """Within ``with Trace(module) as t:``, ``t.input`` / ``t.output`` hold the module's last
    input / (first) output. ``edit_output(output) -> output`` may replace the output before it
    is recorded and passed on; ``stop=True`` ends the forward pass right after the module."""

    def __init__(self, module: nn.Module, retain_input: bool = False, retain_output: bool = True,
                 stop: bool = False, edit_output: Callable | None = None):
        self.module = module
        self.retain_input, self.retain_output = retain_input, retain_output
        self.stop, self.edit_output = stop, edit_output
        self.input = None
        self.output = None
        self._handles: list = []

    def _pre_hook(self, module, args, kwargs):
        self.input = _first_input(args, kwargs)

    def _hook(self, module, args, output):
        if self.edit_output is not None:
            output = self.edit_output(output)
        if self.retain_output:
            self.output = _first_output(output)
        if self.stop:
            raise StopForward
        return output

    def __enter__(self) -> "Trace":
        try:
            if self.retain_input:
                self._handles.append(
                    self.module.register_forward_pre_hook(self._pre_hook, with_kwargs=True))
            self._handles.append(self.module.register_forward_hook(self._hook))
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Remove this trace's hooks (idempotent)."""
        while self._handles:
            self._handles.pop().remove()

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.close()
        return exc_type is not None and issubclass(exc_type, StopForward)


class TraceDict(dict, contextlib.AbstractContextManager):
    """``{name: Trace}`` for several modules of ``model``, entered and exited together.

    ``edit_output(output, name) -> output`` edits each module's output. ``stop=True`` ends the
    forward pass as soon as every named module has run once (whatever order ``names`` has).
    """

    def __init__(self, model: nn.Module, names: Iterable[str], retain_input: bool = False,
                 retain_output: bool = True, stop: bool = False,
                 edit_output: Callable | None = None):
        super().__init__()
        self._modules = {name: model.get_submodule(name) for name in dict.fromkeys(names)}
        for name, module in self._modules.items():
            edit = None if edit_output is None else _bind_name(edit_output, name)
            self[name] = Trace(module, retain_input, retain_output, edit_output=edit)
        self.stop = stop
        self._seen: set[str] = set()
        self._stack = contextlib.ExitStack()

    def _stop_hook(self, name: str):
        def hook(module, args, output):
            self._seen.add(name)
            if self._seen.issuperset(self._modules):
                self._seen.clear()
                raise StopForward
        return hook

    def __enter__(self) -> "TraceDict":
        with contextlib.ExitStack() as stack:
            for name, trace in self.items():
                stack.enter_context(trace)
                if self.stop:  # registered after the trace's hook, so it runs after it
                    handle = self._modules[name].register_forward_hook(self._stop_hook(name))
                    stack.callback(handle.remove)
            self._stack = stack.pop_all()
        self._seen.clear()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._stack.close()
        return exc_type is not None and issubclass(exc_type, StopForward)


def _bind_name(edit_output: Callable, name: str) -> Callable:
    return lambda output: edit_output(output, name)


def stop_after(module: nn.Module) -> Trace:
    """Context manager that ends any forward pass right after ``module`` has run."""
    return Trace(module, retain_output=False, stop=True)


def _position_index(positions) -> tuple[torch.Tensor, torch.Tensor]:
    index = torch.as_tensor(positions, dtype=torch.long)
    if index.ndim != 2 or index.shape[1] != 2:
        raise ShapeError(f"positions must be n (batch, token) pairs, got shape "
                         f"{tuple(index.shape)}")
    return index[:, 0], index[:, 1]


@contextlib.contextmanager
def add_to_output(module: nn.Module, positions: Sequence[tuple[int, int]] | torch.Tensor,
                  delta: torch.Tensor):
    """Add ``delta[i]`` to the module's (first) output at ``positions[i] = (batch, token)``.

    ``delta: (n, d)`` may require grad: the sum is out of place, so gradients flow to it.
    Positions may repeat (the deltas then add up).
    """
    rows, cols = _position_index(positions)
    if delta.ndim != 2 or delta.shape[0] != rows.shape[0]:
        raise ShapeError(f"delta has shape {tuple(delta.shape)}; need ({rows.shape[0]}, d), one "
                         "row per (batch, token) position")

    def edit(output):
        hidden = _first_output(output)
        if hidden.shape[-1] != delta.shape[1]:
            raise ShapeError(f"delta has width {delta.shape[1]} but the output of "
                             f"{type(module).__name__} has width {hidden.shape[-1]}")
        index = (rows.to(hidden.device), cols.to(hidden.device))
        edited = hidden.index_put(index, delta.to(hidden.device, hidden.dtype), accumulate=True)
        return _replace_first_output(output, edited)

    with Trace(module, retain_output=False, edit_output=edit):
        yield


__all__ = ["StopForward", "Trace", "TraceDict", "add_to_output", "stop_after"]
