"""Model snapshots, the model-unchanged guard and functional views of a model.

wrapgrad never edits a user's model: weight noise is applied by evaluating the model with other
tensors through :func:`torch.func.functional_call` (:class:`FunctionalView`). Third-party explainers
may still touch it, and a Captum method that raises half-way can leave hooks behind, so every
explainer call runs inside :class:`ModelGuard`, which snapshots

* each parameter's and buffer's identity, value (bitwise), dtype, device and ``requires_grad``,
* each parameter's ``.grad``,
* each module's ``training`` flag and registered hooks (forward, forward-pre, backward,
  backward-pre, state-dict),
* the global grad mode,

and on exit restores all of it, also when the call raised (zennit's rule: every change undone in
``finally``).
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from wrapgrad.errors import ModelMutatedError, WrapgradValueError, WrapgradWarning

__all__ = ["FunctionalView", "ModelGuard", "ModelSnapshot", "model_device"]

_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
)


class ModelSnapshot:
    """Everything about a module tree that a call could change, captured by value."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.modules = [(name, m) for name, m in model.named_modules(remove_duplicate=True)]
        self.training = [m.training for _, m in self.modules]
        self.hooks = [
            {k: OrderedDict(getattr(m, k)) for k in _HOOK_DICTS if hasattr(m, k)}
            for _, m in self.modules
        ]
        self.is_full_backward_hook = [
            getattr(m, "_is_full_backward_hook", None) for _, m in self.modules
        ]
        self.params: list[
            tuple[nn.Module, str, Tensor | None, Tensor | None, bool, Tensor | None]
        ] = []
        self.buffers: list[tuple[nn.Module, str, Tensor | None, Tensor | None]] = []
        with torch.no_grad():
            for _, m in self.modules:
                for pname, p in m._parameters.items():
                    value = None if p is None else p.detach().clone()
                    grad = None if p is None or p.grad is None else p.grad.detach().clone()
                    rg = False if p is None else p.requires_grad
                    self.params.append((m, pname, p, value, rg, grad))
                for bname, b in m._buffers.items():
                    value = None if b is None else b.detach().clone()
                    self.buffers.append((m, bname, b, value))
        self.grad_enabled = torch.is_grad_enabled()
        self._training_buffers = {
            f"{name or '<root>'}.{b}"
            for (name, m), flag in zip(self.modules, self.training, strict=True)
            if flag
            for b in m._buffers
        }

    # ------------------------------------------------------------------------------------------
    def expected(self, change: str) -> bool:
        """True for changes a plain forward pass makes by design: running statistics of modules
        in training mode (BatchNorm). They are restored like any other change, without a word."""
        return change.startswith("buffer ") and change.split(" ")[1] in self._training_buffers

    def differences(self) -> list[str]:
        """What differs now from the snapshot, one line per thing (empty if nothing)."""
        out: list[str] = []
        names = {id(m): n or "<root>" for n, m in self.modules}
        for (name, m), flag in zip(self.modules, self.training, strict=True):
            if m.training != flag:
                out.append(f"{name or '<root>'}.training changed from {flag} to {m.training}")
        for (name, m), hooks in zip(self.modules, self.hooks, strict=True):
            for k, saved in hooks.items():
                now = getattr(m, k)
                if list(now.keys()) != list(saved.keys()) or any(
                    now[h] is not saved[h] for h in saved
                ):
                    out.append(f"{name or '<root>'}.{k} changed ({len(saved)} -> {len(now)} hooks)")
        for m, pname, p, value, rg, grad in self.params:
            where = f"{names[id(m)]}.{pname}"
            now = m._parameters.get(pname)
            if now is not p:
                out.append(f"parameter {where} was replaced")
                continue
            if p is None:
                continue
            if p.requires_grad != rg:
                out.append(
                    f"parameter {where}.requires_grad changed from {rg} to {p.requires_grad}"
                )
            if not _same(p.detach(), value):
                out.append(f"parameter {where} changed value")
            if (p.grad is None) != (grad is None) or (
                grad is not None and not _same(p.grad.detach(), grad)
            ):
                out.append(f"parameter {where}.grad changed")
        for m, bname, b, value in self.buffers:
            where = f"{names[id(m)]}.{bname}"
            now = m._buffers.get(bname)
            if now is not b:
                out.append(f"buffer {where} was replaced")
            elif b is not None and not _same(b, value):
                out.append(f"buffer {where} changed value")
        if torch.is_grad_enabled() != self.grad_enabled:
            out.append("global grad mode changed")
        return out

    def restore(self) -> None:
        """Put everything back as it was when the snapshot was taken."""
        torch.set_grad_enabled(self.grad_enabled)
        for (_, m), flag in zip(self.modules, self.training, strict=True):
            # Set the flag directly: calling m.train() would recurse and could run user overrides.
            m.training = flag
        for (_, m), hooks, full in zip(
            self.modules, self.hooks, self.is_full_backward_hook, strict=True
        ):
            for k, saved in hooks.items():
                now = getattr(m, k)
                if list(now.items()) != list(saved.items()):
                    now.clear()
                    now.update(saved)
            if hasattr(m, "_is_full_backward_hook"):
                m._is_full_backward_hook = full
        with torch.no_grad():
            for m, pname, p, value, rg, grad in self.params:
                if m._parameters.get(pname) is not p:
                    m._parameters[pname] = p
                if p is None or value is None:
                    continue
                if p.shape != value.shape or p.dtype != value.dtype or p.device != value.device:
                    p.data = value.clone()
                elif not _same(p.detach(), value):
                    p.detach().copy_(value)
                if p.requires_grad != rg:
                    p.requires_grad_(rg)
                if grad is None:
                    p.grad = None
                elif p.grad is None or not _same(p.grad, grad):
                    p.grad = grad.clone()
            for m, bname, b, value in self.buffers:
                if m._buffers.get(bname) is not b:
                    m._buffers[bname] = b
                if b is None or value is None:
                    continue
                if b.shape != value.shape or b.dtype != value.dtype or b.device != value.device:
                    b.data = value.clone()
                elif not _same(b, value):
                    b.copy_(value)


def _same(a: Tensor, b: Tensor | None) -> bool:
    if b is None:
        return False
    if a.shape != b.shape or a.dtype != b.dtype or a.device != b.device:
        return False
    # Bitwise: NaN == NaN, and -0.0 differs from +0.0.
    if a.is_floating_point() or a.is_complex():
        return bool(
            torch.equal(
                a.view(torch.uint8) if a.is_contiguous() else a.contiguous().view(torch.uint8),
                b.view(torch.uint8) if b.is_contiguous() else b.contiguous().view(torch.uint8),
            )
        )
    return bool(torch.equal(a, b))


class ModelGuard:
    """Context manager that leaves a model exactly as it found it.

    Args:
        model: the module to protect.
        mode: ``"restore"`` (default): restore on exit, and warn if a call that succeeded had
            changed the model (running statistics that a forward pass in training mode updates
            by design are restored without a warning); ``"verify"``: restore, then raise :class:`ModelMutatedError` if a call
            that succeeded had changed it; ``"silent"``: restore without a word.

    Example::

        with ModelGuard(model):
            attributions = captum_method.attribute(x, target=y)
    """

    def __init__(self, model: nn.Module, mode: str = "restore") -> None:
        if mode not in ("restore", "verify", "silent"):
            raise WrapgradValueError(
                f"mode: expected 'restore', 'verify' or 'silent', got {mode!r}"
            )
        self.model = model
        self.mode = mode
        self.snapshot: ModelSnapshot | None = None
        self.changes: list[str] = []

    def __enter__(self) -> ModelGuard:
        self.snapshot = ModelSnapshot(self.model)
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        assert self.snapshot is not None
        self.changes = self.snapshot.differences()
        if self.changes:
            self.snapshot.restore()
        unexpected = [c for c in self.changes if not self.snapshot.expected(c)]
        self.snapshot = None
        if not unexpected or exc_type is not None or self.mode == "silent":
            return
        text = "; ".join(unexpected[:8]) + (" ..." if len(unexpected) > 8 else "")
        if self.mode == "verify":
            raise ModelMutatedError(f"the call changed the model (now restored): {text}")
        warnings.warn(
            f"the explainer changed the model; wrapgrad restored it: {text}",
            WrapgradWarning,
            stacklevel=2,
        )


def model_device(model: Callable[..., Any]) -> torch.device | None:
    """The device of a module's first parameter or buffer (None if it has neither)."""
    if isinstance(model, nn.Module):
        for t in model.parameters():
            return t.device
        for t in model.buffers():
            return t.device
    return None


class FunctionalView(nn.Module):
    """The user's model evaluated with other parameter/buffer tensors, without touching it.

    ``FunctionalView(model, params)(x)`` is ``torch.func.functional_call(model, params, (x,))``.
    The model is registered as a sub-module so that hook-based attribution methods (DeepLift,
    GuidedBackprop, layer methods) find its layers; the view itself holds no parameters.

    Args:
        model: the user's model.
        tensors: replacement tensors by qualified name (parameters and/or buffers); names not
            given keep the model's own tensors.
    """

    def __init__(self, model: nn.Module, tensors: Mapping[str, Tensor] | None = None) -> None:
        super().__init__()
        self.model = model
        self.tensors = dict(tensors or {})
        self.training = model.training

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if not self.tensors:
            return self.model(*args, **kwargs)
        return torch.func.functional_call(
            self.model, self.tensors, args, kwargs, tie_weights=True, strict=False
        )
