"""``wrapgrad.to_sde``: turn the residual blocks of a ResNet-style model into SDE steps.

The user's model is never edited: the converted :class:`~wrapgrad.sde.model.NeuralSDE` holds a
deep copy of it (parameters, buffers, flags; ``.grad`` cleared) in which each residual block is
wrapped in a :class:`~wrapgrad.sde.blocks.StochasticBlock`. Training the converted model leaves
the user's model bitwise as it was.

Which modules are residual blocks (outermost matches only, the model itself excluded):

* found automatically: a submodule with convolutions ``conv1`` and ``conv2`` and a shortcut, a
  child ``shortcut`` or an attribute ``downsample`` (a module or None): He et al.'s (2016)
  ``BasicBlock`` / ``Bottleneck`` as torchvision, timm and wrapgrad's ``small_resnet`` write them;
* or marked by the user: ``blocks=["layer1.0", "layer2"]`` (qualified names) or
  ``blocks=lambda name, module: ...`` (a predicate). A marked module must return the next state
  as one tensor.

The noise is resolved by name through the plugin registry (``PerturberSpec(target="state")``:
``brownian``, ``attribution_shaped``), or given as a :class:`~wrapgrad.protocols.StatePerturber`
object.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from typing import Any

import attrs
from torch import nn

from wrapgrad.checks import (
    check_nonnegative,
    check_positive,
    check_positive_int,
    check_seed,
    describe,
)
from wrapgrad.errors import UnknownNameError, WrapgradTypeError, WrapgradValueError
from wrapgrad.options import Part, route
from wrapgrad.registry import get_registry
from wrapgrad.sde.blocks import StochasticBlock
from wrapgrad.sde.model import NeuralSDE

__all__ = ["DEFAULT_SIGMA", "SDEConfig", "find_residual_blocks", "is_residual_block", "to_sde"]

#: The paper's noise constant σ (Jha et al. 2022, "Experimental Results").
DEFAULT_SIGMA = 0.5

_LOOKED_FOR = (
    "submodules with convolutions `conv1` and `conv2` and a shortcut (a child `shortcut` or an "
    "attribute `downsample`), the He et al. BasicBlock/Bottleneck pattern of torchvision, timm "
    "and wrapgrad's small_resnet"
)


def _frozen_dict(value: Any, argument: str = "options") -> tuple[tuple[str, Any], ...]:
    if value is None:
        return ()
    if isinstance(value, tuple) and all(isinstance(v, tuple) and len(v) == 2 for v in value):
        return value  # already frozen (attrs.evolve)
    if not isinstance(value, Mapping):
        raise WrapgradTypeError(f"{argument}: expected a dict, got {describe(value)}")
    return tuple(sorted(dict(value).items()))


def _check_blocks(instance: Any, attribute: Any, value: Any) -> None:
    if value is None or callable(value) or isinstance(value, str):
        return
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return
    raise WrapgradTypeError(
        f"blocks: expected None (find them), a module name, a list of names or a predicate "
        f"(name, module) -> bool, got {describe(value)}"
    )


def _check_method(instance: Any, attribute: Any, value: Any) -> None:
    if isinstance(value, str):
        get_registry().get("explainer", value, argument="guide_method")
    elif not callable(value):
        raise WrapgradTypeError(
            f"guide_method: expected an explainer name or an explainer, got {describe(value)}"
        )


@attrs.frozen(kw_only=True)
class SDEConfig:
    """How :func:`to_sde` converts a model (every option but ``sigma`` and ``seed``)."""

    noise: Any = "brownian"
    """The state perturber: a registered name (``"brownian"``, ``"attribution_shaped"``) or a
    :class:`~wrapgrad.protocols.StatePerturber` object."""
    noise_options: tuple[tuple[str, Any], ...] = attrs.field(
        default=(), converter=lambda v: _frozen_dict(v, "noise_options")
    )
    """Options for the named perturber's factory (e.g. ``outlier_quantile``), given as a dict."""
    dt: float | None = attrs.field(
        default=None,
        converter=lambda v: None if v is None else check_positive(v, "dt"),
    )
    """The time step δt of each block; None: ``1 / L`` for ``L`` converted blocks, the paper's
    unit time horizon (the network integrates t from 0 to 1), so the noise accumulated over the
    network has variance Σ² whatever its depth."""
    blocks: Any = attrs.field(default=None, validator=_check_blocks)
    """None (find the residual blocks), names, or a predicate ``(name, module) -> bool``."""
    guide_method: Any = attrs.field(default="saliency", validator=_check_method)
    """The explainer whose maps shape the noise (any :func:`wrapgrad.wrap` method). Saliency by
    default: one backward pass per example and round (Integrated Gradients costs ``n_steps``)."""
    guide_options: tuple[tuple[str, Any], ...] = attrs.field(
        default=(), converter=lambda v: _frozen_dict(v, "guide_options")
    )
    """Options for :func:`wrapgrad.wrap` of the guide explainer (e.g. ``{"n_steps": 16}``)."""
    guide_batch_size: int = attrs.field(
        default=256, converter=lambda v: check_positive_int(v, "guide_batch_size")
    )
    """Examples per explainer call when computing guide maps."""
    mc_samples: int = attrs.field(
        default=0, converter=lambda v: check_positive_int(v, "mc_samples", minimum=0)
    )
    """Monte-Carlo draws at inference (eval mode): 0 (default) = noise off, the plain network."""
    inference_seed: int | None = attrs.field(
        default=None, converter=lambda v: check_seed(v, "inference_seed")
    )
    """Seed of the Monte-Carlo inference draws; None: ``seed + 1``."""


_CONFIG_FIELDS = frozenset(a.name for a in attrs.fields(SDEConfig))


def is_residual_block(module: nn.Module) -> bool:
    """The automatic rule: convolutions ``conv1`` and ``conv2`` and a shortcut (a child
    ``shortcut`` or an attribute ``downsample``, which torchvision sets to None when the shape
    is kept)."""
    convs = all(
        isinstance(module._modules.get(n), nn.modules.conv._ConvNd) for n in ("conv1", "conv2")
    )
    return convs and ("shortcut" in module._modules or hasattr(module, "downsample"))


def find_residual_blocks(model: nn.Module, blocks: Any = None) -> list[str]:
    """The qualified names of the blocks to convert, in ``named_modules`` order.

    Args:
        model: the model (read only).
        blocks: None (the automatic rule, :func:`is_residual_block`), a name or list of names,
            or a predicate ``(name, module) -> bool`` (outermost matches only).
    """
    names = {name: m for name, m in model.named_modules() if name}
    if blocks is None or callable(blocks):
        rule = (lambda _n, m: is_residual_block(m)) if blocks is None else blocks
        found: list[str] = []
        for name, module in names.items():
            if any(name.startswith(f + ".") for f in found):
                continue
            if rule(name, module):
                found.append(name)
        if not found:
            if blocks is None:
                raise WrapgradValueError(
                    f"model: found no residual block to convert in {type(model).__name__}: looked "
                    f"for {_LOOKED_FOR}; mark the blocks with blocks=['layer1', ...] or "
                    f"blocks=lambda name, module: ..."
                )
            raise WrapgradValueError(
                f"blocks: the predicate matched no submodule of {type(model).__name__}"
            )
        return found
    wanted = [blocks] if isinstance(blocks, str) else list(dict.fromkeys(blocks))
    if not wanted:
        raise WrapgradValueError("blocks: expected at least one module name, got an empty list")
    for name in wanted:
        if name == "":
            raise WrapgradValueError(
                "blocks: the model itself cannot be a block; name its residual submodules"
            )
        if name not in names:
            raise UnknownNameError("blocks", name, names, what="module")
    for name in wanted:
        for other in wanted:
            if other != name and name.startswith(other + "."):
                raise WrapgradValueError(
                    f"blocks: {name!r} lies inside {other!r}; mark one of them"
                )
    order = list(names)
    return sorted(wanted, key=order.index)


def _state_perturbers() -> dict[str, Any]:
    return {n: s for n, s in get_registry().specs("perturber").items() if s.target == "state"}


def _resolve_noise(noise: Any, sigma: float | None, options: dict[str, Any]) -> Any:
    if isinstance(noise, str):
        try:
            spec = get_registry().get("perturber", noise, argument="noise")
        except UnknownNameError:
            raise UnknownNameError(
                "noise", noise, _state_perturbers(), what="state perturber"
            ) from None
        if spec.target != "state":
            raise WrapgradValueError(
                f"noise: {spec.name!r} is an {spec.target} perturber; expected a state perturber "
                f"({', '.join(sorted(_state_perturbers())) or 'none is installed'})"
            )
        return spec.factory(sigma=DEFAULT_SIGMA if sigma is None else sigma, **options)
    if getattr(noise, "target", None) != "state" or not callable(getattr(noise, "increment", None)):
        raise WrapgradTypeError(
            f"noise: expected a state perturber name or an object with target == 'state', "
            f"is_zero and increment(state, dt, *, generator, guide), got {describe(noise)}"
        )
    if sigma is not None:
        raise WrapgradValueError(
            f"sigma: the noise object {noise!r} carries its own Σ; leave sigma out"
        )
    if options:
        raise WrapgradValueError(
            f"noise_options: options go to a named perturber's factory; {noise!r} is built already"
        )
    return noise


def _route_options(noise: Any, options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split ``to_sde``'s options between the config and the named perturber's factory."""
    parts = [Part("to_sde", _CONFIG_FIELDS)]
    explicit: dict[str, dict[str, Any]] = {}
    if isinstance(noise, str):
        try:
            spec = get_registry().get("perturber", noise, argument="noise")
            names, open_ = spec.option_names()
            parts.append(Part("noise", names - {"sigma"}, open_))
        except UnknownNameError:
            pass  # reported by _resolve_noise with the state perturbers only
    if "noise_options" in options:
        explicit["noise"] = dict(_frozen_dict(options.pop("noise_options"), "noise_options"))
    routed = route(
        options, parts, explicit=explicit, argument="options", extra_known={"sigma", "seed"}
    )
    return routed["to_sde"], routed.get("noise", {})


def to_sde(
    model: nn.Module, sigma: float | None = None, seed: int | None = None, **options: Any
) -> NeuralSDE:
    """A neural-SDE copy of a ResNet-style model (Jha et al. 2022): each residual block becomes
    one Euler-Maruyama step ``x_{k+1} = Φ_k(x_k) + Σ √δt ξ_k`` of ``dx = G dt + Σ dB_t``.

    Example::

        import wrapgrad
        sde = wrapgrad.to_sde(resnet, sigma=0.5, seed=0)                        # Brownian
        sde = wrapgrad.to_sde(resnet, noise="attribution_shaped", seed=0)       # shaped
        sde = wrapgrad.to_sde(net, blocks=["encoder.0", "encoder.1"], dt=0.1)   # marked blocks

    Args:
        model: any ``nn.Module`` with residual blocks; never edited.
        sigma: Σ, the noise constant (default 0.5, the paper's); 0 gives the plain network bit
            for bit. Not with a perturber object (it carries its own).
        seed: the seed of the model's generator (None: a fresh one, recorded in ``.seed``).
        **options: the fields of :class:`SDEConfig` (``noise``, ``dt``, ``blocks``,
            ``guide_method``, ``guide_options``, ``guide_batch_size``, ``mc_samples``,
            ``inference_seed``, ``noise_options``) and the named perturber's own options (e.g.
            ``outlier_quantile=0.99`` of ``attribution_shaped``). An unknown option is an error
            naming the closest known ones.

    Returns:
        A :class:`~wrapgrad.sde.model.NeuralSDE` holding copies of ``model``'s weights, in
        ``model``'s training mode.
    """
    if not isinstance(model, nn.Module):
        raise WrapgradTypeError(f"model: expected a torch.nn.Module, got {describe(model)}")
    if sigma is not None:
        sigma = check_nonnegative(sigma, "sigma")
    seed = check_seed(seed)
    if seed is None:
        seed = int.from_bytes(os.urandom(8), "little") % 2**62
    options = dict(options)
    noise = options.get("noise", "brownian")
    config_options, noise_options = _route_options(noise, options)
    config = SDEConfig(**config_options)
    perturber = _resolve_noise(config.noise, sigma, noise_options)
    config = attrs.evolve(config, noise_options=noise_options)
    names = find_residual_blocks(model, config.blocks)
    try:
        net = copy.deepcopy(model)
    except Exception as exc:
        raise WrapgradTypeError(
            f"model: could not copy {type(model).__name__} ({type(exc).__name__}: {exc}); "
            f"to_sde converts a copy so that the model itself is never edited"
        ) from exc
    for p in net.parameters():
        p.grad = None
    for index, name in enumerate(names):
        parent_name, _, child = name.rpartition(".")
        parent = net.get_submodule(parent_name) if parent_name else net
        setattr(parent, child, StochasticBlock(getattr(parent, child), index, name))
    dt = config.dt if config.dt is not None else 1.0 / len(names)
    sde = NeuralSDE(net, tuple(names), perturber, dt=dt, seed=seed, config=config)
    sde.training = model.training
    return sde
