"""The model-unchanged guard: every explainer call runs inside :class:`ModelGuard`.

wrapgrad never edits a user's model (weight noise goes through
:func:`torch.func.functional_call`), but third-party explainers may, and a Captum method that
raises half-way can leave hooks behind. The guard watches, without copying a single weight:

* each parameter's and buffer's **identity** (a replaced tensor is put back), its ``dtype``,
  device, ``requires_grad`` and ``.grad`` (identity and version);
* each tensor's **version counter** (``tensor._version``): every in-place write bumps it, also a
  write through a ``detach()``-ed view or a ``state_dict()`` tensor (they share the counter), so
  an in-place change of a weight is detected without holding its value;
* each module's ``training`` flag and registered hooks (forward, forward-pre, backward,
  backward-pre, state-dict), and the global grad mode.

On exit it restores identities, flags, hooks and grad mode (zennit's rule: every change undone
in ``finally``), also when the call raised. A weight changed *in place* cannot be restored
without a copy, so the default guard raises :class:`~wrapgrad.errors.ModelMutatedError` naming
the tensor. The one exception are buffers of modules in training mode (BatchNorm running
statistics), which a forward pass updates by design: the guard copies those small buffers and
restores them silently.

What the version counter cannot see: writes through ``tensor.data`` (``p.data.add_(1)``) and
raw storage writes (``p.untyped_storage()``, NumPy views of CPU tensors) do not bump it. The
full value snapshot catches those too, at the cost of one copy of the model per call:
``mode="restore"`` / ``"verify"`` / ``"silent"`` (or ``wrap(..., guard="restore")``).
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from typing import Any

import torch
from torch import Tensor, nn

from wrapgrad.errors import ModelMutatedError, WrapgradValueError, WrapgradWarning

__all__ = ["GUARD_MODES", "ModelGuard", "ModelSnapshot", "ModelState"]

#: mode -> (copies values, what a restorable change does: "warn", "raise" or "ignore").
GUARD_MODES: dict[str, tuple[bool, str]] = {
    "check": (False, "warn"),
    "restore": (True, "warn"),
    "verify": (True, "raise"),
    "silent": (True, "ignore"),
}

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


def _version(t: Tensor | None) -> int | None:
    return None if t is None else int(t._version)


def _meta(t: Tensor | None) -> tuple[Any, ...] | None:
    return None if t is None else (tuple(t.shape), t.dtype, t.device)


class _Slot:
    """One parameter or buffer slot of one module, as it was."""

    __slots__ = (
        "grad",
        "grad_value",
        "grad_version",
        "kind",
        "meta",
        "module",
        "name",
        "requires_grad",
        "tensor",
        "value",
        "version",
        "where",
    )

    def __init__(
        self, module: nn.Module, name: str, tensor: Tensor | None, kind: str, where: str, copy: bool
    ) -> None:
        self.module, self.name, self.tensor, self.kind, self.where = (
            module,
            name,
            tensor,
            kind,
            where,
        )
        self.version = _version(tensor)
        self.meta = _meta(tensor)
        self.requires_grad = bool(tensor is not None and tensor.requires_grad)
        self.grad = None if tensor is None or kind == "buffer" else tensor.grad
        self.grad_version = _version(self.grad)
        self.value: Tensor | None = None
        if copy and tensor is not None:
            with torch.no_grad():
                self.value = tensor.detach().clone()
        self.grad_value: Tensor | None = None

    def store(self) -> dict[str, Tensor | None]:
        return self.module._parameters if self.kind == "parameter" else self.module._buffers


class ModelState:
    """What a call could change in a module tree, recorded for :class:`ModelGuard`.

    Args:
        model: the module tree.
        values: also copy every parameter and gradient value (the full snapshot); buffers are
            always copied (they are small, and a forward pass in training mode updates them).
    """

    def __init__(self, model: nn.Module, *, values: bool = False) -> None:
        self.model = model
        self.values = values
        self.modules = [(name or "<root>", m) for name, m in model.named_modules()]
        self.training = [m.training for _, m in self.modules]
        self.hooks = [
            {k: OrderedDict(getattr(m, k)) for k in _HOOK_DICTS if hasattr(m, k)}
            for _, m in self.modules
        ]
        self.full_backward = [getattr(m, "_is_full_backward_hook", None) for _, m in self.modules]
        self.slots: list[_Slot] = []
        self._expected: set[str] = set()
        for (name, m), training in zip(self.modules, self.training, strict=True):
            for pname, p in m._parameters.items():
                slot = _Slot(m, pname, p, "parameter", f"{name}.{pname}", values)
                if values and p is not None and p.grad is not None:
                    slot.grad_value = p.grad.detach().clone()
                self.slots.append(slot)
            for bname, b in m._buffers.items():
                where = f"{name}.{bname}"
                # Buffers (running statistics, masks, counters) are small next to the weights and
                # a forward pass in training mode updates some by design: always copied.
                self.slots.append(_Slot(m, bname, b, "buffer", where, True))
                if training:
                    self._expected.add(where)
        self.grad_enabled = torch.is_grad_enabled()

    # -- comparing ---------------------------------------------------------------------------
    def expected(self, change: str) -> bool:
        """True for changes a plain forward pass makes by design: running statistics of modules
        in training mode (BatchNorm). They are restored like any other change, without a word."""
        return change.startswith("buffer ") and change.split(" ")[1] in self._expected

    def _value_changed(self, slot: _Slot) -> bool:
        t = slot.tensor
        assert t is not None
        if _meta(t) != slot.meta:
            return True
        if slot.value is not None:
            return not _same(t.detach(), slot.value)
        return _version(t) != slot.version

    def differences(self) -> list[str]:
        """What differs now from the record, one line per thing (empty if nothing)."""
        out: list[str] = []
        for (name, m), flag in zip(self.modules, self.training, strict=True):
            if m.training != flag:
                out.append(f"{name}.training changed from {flag} to {m.training}")
        for (name, m), hooks in zip(self.modules, self.hooks, strict=True):
            for k, saved in hooks.items():
                now = getattr(m, k)
                if list(now.keys()) != list(saved.keys()) or any(
                    now[h] is not saved[h] for h in saved
                ):
                    out.append(f"{name}.{k} changed ({len(saved)} -> {len(now)} hooks)")
        for slot in self.slots:
            now = slot.store().get(slot.name)
            if now is not slot.tensor:
                out.append(f"{slot.kind} {slot.where} was replaced")
                continue
            if now is None:
                continue
            if slot.kind == "parameter" and now.requires_grad != slot.requires_grad:
                out.append(
                    f"parameter {slot.where}.requires_grad changed from {slot.requires_grad} "
                    f"to {now.requires_grad}"
                )
            if self._value_changed(slot):
                out.append(f"{slot.kind} {slot.where} changed value")
            if slot.kind == "parameter" and self._grad_changed(slot):
                out.append(f"parameter {slot.where}.grad changed")
        if torch.is_grad_enabled() != self.grad_enabled:
            out.append("global grad mode changed")
        return out

    def _grad_changed(self, slot: _Slot) -> bool:
        grad = slot.tensor.grad  # type: ignore[union-attr]
        if grad is not slot.grad:
            if slot.grad_value is not None and grad is not None:
                return not _same(grad.detach(), slot.grad_value)
            return True
        if grad is None:
            return False
        if slot.grad_value is not None:
            return not _same(grad.detach(), slot.grad_value)
        return _version(grad) != slot.grad_version

    def unrestorable(self) -> list[str]:
        """Tensors changed in place that the record holds no copy of."""
        out = []
        for slot in self.slots:
            t = slot.tensor
            if t is None or slot.value is not None or slot.store().get(slot.name) is not t:
                continue
            if _meta(t) != slot.meta or _version(t) != slot.version:
                out.append(f"{slot.kind} {slot.where}")
            elif (
                slot.kind == "parameter"
                and slot.grad is not None
                and t.grad is slot.grad
                and slot.grad_value is None
                and _version(slot.grad) != slot.grad_version
            ):
                out.append(f"parameter {slot.where}.grad")
        return out

    # -- restoring ---------------------------------------------------------------------------
    def restore(self) -> None:
        """Put back everything the record can: flags, hooks, identities, ``requires_grad``,
        gradients, grad mode, and every value it holds a copy of."""
        torch.set_grad_enabled(self.grad_enabled)
        for (_, m), flag in zip(self.modules, self.training, strict=True):
            # Set the flag directly: calling m.train() would recurse and could run user overrides.
            m.training = flag
        for (_, m), hooks, full in zip(self.modules, self.hooks, self.full_backward, strict=True):
            for k, saved in hooks.items():
                now = getattr(m, k)
                if list(now.items()) != list(saved.items()):
                    now.clear()
                    now.update(saved)
            if hasattr(m, "_is_full_backward_hook"):
                m._is_full_backward_hook = full
        with torch.no_grad():
            for slot in self.slots:
                store = slot.store()
                if store.get(slot.name) is not slot.tensor:
                    store[slot.name] = slot.tensor
                t = slot.tensor
                if t is None:
                    continue
                if slot.value is not None:
                    if _meta(t) != slot.meta:
                        t.data = slot.value.clone()
                    elif not _same(t.detach(), slot.value):
                        t.detach().copy_(slot.value)
                if slot.kind != "parameter":
                    continue
                if t.requires_grad != slot.requires_grad:
                    t.requires_grad_(slot.requires_grad)
                if slot.grad_value is not None:
                    if t.grad is None or not _same(t.grad, slot.grad_value):
                        t.grad = slot.grad_value.clone()
                elif t.grad is not slot.grad:
                    t.grad = slot.grad


class ModelSnapshot(ModelState):
    """The full value snapshot: :class:`ModelState` with a copy of every value (what
    ``mode="restore"``/``"verify"``/``"silent"`` use, and what tests compare against)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model, values=True)


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
    """Context manager that leaves a model as it found it, or says it cannot.

    Args:
        model: the module to protect.
        mode: ``"check"`` (default): no copy of the weights; identities, flags, hooks and
            gradients are restored (with a warning when a call that succeeded changed them), and
            an in-place change of a parameter or buffer (seen by its version counter) raises
            :class:`ModelMutatedError` naming it, since there is no copy to restore it from.
            ``"restore"``: the full value snapshot (one copy of the model per call): everything is
            restored, with a warning. ``"verify"``: the snapshot, restore, then raise
            :class:`ModelMutatedError` if a call that succeeded had changed the model.
            ``"silent"``: the snapshot, restore without a word. Running statistics that a forward
            pass in training mode updates by design are restored without a warning in every mode.
        warn: False silences the warnings of ``"check"``/``"restore"`` (used where wrapgrad itself
            sets flags, e.g. evaluation mode for calibration).

    >>> model = torch.nn.Linear(2, 1)
    >>> with ModelGuard(model):
    ...     out = model(torch.ones(1, 2))
    >>> with ModelGuard(model), torch.no_grad():
    ...     model.weight.mul_(2.0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    wrapgrad.errors.ModelMutatedError: the call changed the model in place and it could not be restored ...
    """

    def __init__(self, model: nn.Module, mode: str = "check", *, warn: bool = True) -> None:
        if mode not in GUARD_MODES:
            raise WrapgradValueError(
                f"mode: expected one of {', '.join(repr(m) for m in GUARD_MODES)}, got {mode!r}"
            )
        self.model = model
        self.mode = mode
        self.warn = warn
        self.state: ModelState | None = None
        self.changes: list[str] = []

    def __enter__(self) -> ModelGuard:
        self.state = ModelState(self.model, values=GUARD_MODES[self.mode][0])
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        state = self.state
        assert state is not None
        self.state = None
        self.changes = state.differences()
        lost = state.unrestorable()
        if self.changes:
            state.restore()
        if lost:
            raise ModelMutatedError(
                "the call changed the model in place and it could not be restored (the default "
                "guard keeps no copy of the weights; use guard='restore' for one): "
                + "; ".join(f"{t} changed value" for t in lost[:8])
                + (" ..." if len(lost) > 8 else "")
            )
        unexpected = [c for c in self.changes if not state.expected(c)]
        action = GUARD_MODES[self.mode][1]
        if not unexpected or exc_type is not None or action == "ignore":
            return
        text = "; ".join(unexpected[:8]) + (" ..." if len(unexpected) > 8 else "")
        if action == "raise":
            raise ModelMutatedError(f"the call changed the model (now restored): {text}")
        if self.warn:
            warnings.warn(
                f"the explainer changed the model; wrapgrad restored it: {text}",
                WrapgradWarning,
                stacklevel=2,
            )
