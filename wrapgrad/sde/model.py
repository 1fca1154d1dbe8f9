"""The converted model: a network whose residual blocks are Euler-Maruyama steps of an SDE.

:func:`wrapgrad.to_sde` builds a :class:`NeuralSDE`; see :mod:`wrapgrad.sde.blocks` for the
step and :mod:`wrapgrad.sde.normalise` for the attribution-shaped noise.

Random numbers: the model owns a CPU ``torch.Generator`` seeded with ``seed``. Each noisy
training pass draws one 62-bit seed from it and runs its blocks on a fresh generator with that
seed on the inputs' device, so draws never touch torch's global RNG and the whole random state
is one generator, saved in ``state_dict()`` (``_extra_state``) and restored by
``load_state_dict`` (resume == uninterrupted).

Modes:

* training (``model.train()``): per-example noise in every converted block;
* inference (``model.eval()``), ``mc_samples == 0`` (default): no noise, the plain network;
* inference with ``mc_samples = M > 0``: the Monte-Carlo estimate of the SDE classifier
  ``u(x) = E[softmax(z(x, ξ))]`` over ``M`` seeded draws (Feynman-Kac; Wang, Shi, Osher 2019):
  the output is ``log((1/M) Σ_m softmax(z_m))``, log-probabilities of the averaged softmax, which
  are valid logits (their softmax is the average) and keep ``cross_entropy`` and ``argmax``
  meaningful. Draw ``m`` is the same for every call and is shared by every example of a batch
  (common random numbers), so the averaged model is a deterministic function of each input,
  whatever batch it comes in; gradient explainers (Integrated Gradients batches its steps) see
  one smooth function.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from wrapgrad.checks import check_bool, check_finite, check_positive_int, describe
from wrapgrad.errors import WrapgradTypeError, WrapgradValueError
from wrapgrad.sde.blocks import NoisePass
from wrapgrad.sde.guide import GuideStore

__all__ = ["NeuralSDE"]


def _device_generator(seed: int, device: torch.device) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


class NeuralSDE(nn.Module):
    """A copy of a ResNet-style model whose residual blocks inject SDE noise (Jha et al. 2022).

    Built by :func:`wrapgrad.to_sde`; the user's model is never touched (``net`` holds copies of
    its weights).

    Attributes:
        net: the converted network (its blocks are :class:`~wrapgrad.sde.blocks.StochasticBlock`).
        blocks: the qualified names of the converted blocks in ``net``, in order.
        perturber: the :class:`~wrapgrad.protocols.StatePerturber` (``Σ``).
        dt: the time step ``δt`` of every block.
        seed: the seed of the model's generator.
        config: the :class:`~wrapgrad.sde.convert.SDEConfig` it was built with.
        generator: the CPU generator every training draw comes from.
    """

    def __init__(
        self,
        net: nn.Module,
        blocks: tuple[str, ...],
        perturber: Any,
        *,
        dt: float,
        seed: int,
        config: Any,
    ) -> None:
        super().__init__()
        self.net = net
        self.blocks = tuple(blocks)
        self.perturber = perturber
        self.dt = float(dt)
        self.seed = int(seed)
        self.config = config
        self.generator = _device_generator(self.seed, torch.device("cpu"))
        self.inference_seed = int(
            config.inference_seed if config.inference_seed is not None else self.seed + 1
        )
        self._mc_samples = int(config.mc_samples)
        self.guide_store = GuideStore()
        self._explicit_guide: tuple[tuple[int, ...], Tensor] | None = None
        # Not submodules: their parameters must not be trained, saved or moved with the model.
        self.__dict__["_guide_model"] = None
        self.__dict__["_guide_explain"] = None

    # -- public state -------------------------------------------------------------------------
    @property
    def sigma(self) -> float | None:
        """``Σ`` of the perturber (None if it has no ``sigma``)."""
        return getattr(self.perturber, "sigma", None)

    @property
    def mc_samples(self) -> int:
        """Monte-Carlo draws at inference (0: noise off in eval mode)."""
        return self._mc_samples

    @mc_samples.setter
    def mc_samples(self, value: int) -> None:
        self._mc_samples = check_positive_int(value, "mc_samples", minimum=0)

    @property
    def needs_guide(self) -> bool:
        """True when the perturber is shaped by a guide map."""
        return bool(getattr(self.perturber, "needs_guide", False))

    @property
    def guide_model(self) -> nn.Module | None:
        """The frozen copy whose attributions make the guide maps (None before the first
        :meth:`refresh_guide`: the first round's noise is then unshaped, i.e. Brownian)."""
        return self._guide_model

    def rng_state(self) -> Tensor:
        """The generator's state (also in ``state_dict()``)."""
        return self.generator.get_state()

    def set_rng_state(self, state: Tensor) -> None:
        """Restore a state from :meth:`rng_state`."""
        self.generator.set_state(state)

    def get_extra_state(self) -> dict[str, Any]:
        return {
            "generator": self.generator.get_state(),
            "seed": self.seed,
            "inference_seed": self.inference_seed,
        }

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.seed = int(state["seed"])
        self.inference_seed = int(state["inference_seed"])

    def to_plain(self) -> nn.Module:
        """A copy of the network with the stochastic blocks replaced by their deterministic
        blocks: the user's architecture (same parameter names) with this model's weights."""
        plain = copy.deepcopy(self.net)
        for name in self.blocks:
            parent_name, _, child = name.rpartition(".")
            parent = plain.get_submodule(parent_name) if parent_name else plain
            setattr(parent, child, getattr(parent, child).block)
        return plain

    # -- guide maps ---------------------------------------------------------------------------
    def _prepare(self, maps: Tensor) -> Tensor:
        prepare = getattr(self.perturber, "prepare_guide", None)
        return maps.detach() if prepare is None else prepare(maps.detach())

    @staticmethod
    def _check_maps(maps: Any, argument: str = "guide") -> Tensor:
        if not isinstance(maps, Tensor) or not maps.is_floating_point() or maps.dim() < 2:
            raise WrapgradTypeError(
                f"{argument}: expected a floating-point tensor of per-example maps (B, ...), got "
                f"{describe(maps)}"
            )
        check_finite(maps, argument)
        return maps

    def set_guide(self, maps: Tensor | None) -> None:
        """Use ``maps`` (per-example attribution maps of the inputs' shape) as the guide of every
        following forward pass, until ``set_guide(None)``. A pass whose inputs do not have the
        maps' shape raises. See also :meth:`guided`."""
        if maps is None:
            self._explicit_guide = None
            return
        maps = self._check_maps(maps)
        self._explicit_guide = (tuple(maps.shape), self._prepare(maps))

    @contextlib.contextmanager
    def guided(self, maps: Tensor) -> Iterator[NeuralSDE]:
        """``with model.guided(maps): model(x)``: :meth:`set_guide` for the block only."""
        previous = self._explicit_guide
        self.set_guide(maps)
        try:
            yield self
        finally:
            self._explicit_guide = previous

    def add_guide(self, inputs: Tensor, maps: Tensor) -> None:
        """Store ``maps[i]`` as the guide of example ``inputs[i]`` wherever it appears in a later
        batch (by content, see :mod:`wrapgrad.sde.guide`)."""
        maps = self._check_maps(maps)
        if not isinstance(inputs, Tensor) or tuple(inputs.shape) != tuple(maps.shape):
            raise WrapgradValueError(
                f"guide: expected maps of the inputs' shape "
                f"{tuple(inputs.shape) if isinstance(inputs, Tensor) else describe(inputs)}, got "
                f"{tuple(maps.shape)}"
            )
        self.guide_store.put(inputs, self._prepare(maps))

    def refresh_guide(
        self, inputs: Tensor | None = None, target: Tensor | None = None, *, keep: bool = False
    ) -> Tensor | None:
        """Start a new round of the iterative training (Jha et al. 2022, Figure 2): freeze a copy
        of the current weights as the guide model, forget the stored maps, and (with ``inputs``)
        compute and store the maps of ``inputs`` now, for ``target`` (default: the guide model's
        predicted classes). Returns those raw maps (None without ``inputs``).

        With ``keep=True`` the maps of examples not in ``inputs`` are kept (a partial refresh:
        they stay those of an earlier round's guide model).

        Examples not stored are computed on demand, for their predicted class, the first time a
        batch holds them, and stored if the model is in training mode (at inference, e.g. inside
        an attack that makes new inputs at every step, they are computed and not kept)."""
        self._set_guide_model(self.to_plain())
        if not check_bool(keep, "keep"):
            self.guide_store.clear()
        if inputs is None:
            return None
        maps = self.compute_guide(inputs, target)
        self.guide_store.put(inputs, self._prepare(maps))
        return maps

    def _set_guide_model(self, guide_model: nn.Module) -> None:
        guide_model.eval()
        guide_model.requires_grad_(False)
        self.__dict__["_guide_model"] = guide_model
        self.__dict__["_guide_explain"] = None

    def guide_state(self) -> dict[str, Any]:
        """The guide model's weights and the stored maps, as plain tensors (for a training
        checkpoint; :meth:`load_guide_state` restores them). Not part of ``state_dict()``."""
        keys, maps = self.guide_store.items()
        guide = self._guide_model
        return {
            "weights": None if guide is None else dict(guide.state_dict()),
            "keys": keys,
            "maps": maps,
        }

    def load_guide_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`guide_state`: the guide model (this model's architecture with the saved
        weights; none if none was saved) and the stored maps."""
        weights = state.get("weights")
        if weights is None:
            self.__dict__["_guide_model"] = None
            self.__dict__["_guide_explain"] = None
        else:
            guide_model = self.to_plain()
            guide_model.load_state_dict(weights)
            self._set_guide_model(guide_model)
        self.guide_store.restore(state["keys"], state["maps"])

    def compute_guide(self, inputs: Tensor, target: Tensor | None = None) -> Tensor:
        """The guide explainer's maps of ``inputs`` on the guide model (no noise, eval mode), in
        batches of ``config.guide_batch_size``; ``target`` defaults to its predicted classes."""
        if self._guide_model is None:
            raise WrapgradValueError(
                "guide: no guide model yet; call refresh_guide() after a round of training"
            )
        if not isinstance(inputs, Tensor):
            raise WrapgradTypeError(f"inputs: expected a tensor, got {describe(inputs)}")
        model = self._guide_model
        device = inputs.device
        if next(model.parameters(), torch.empty(0)).device != device:
            model.to(device)
            self.__dict__["_guide_explain"] = None
        explain = self._guide_explain
        if explain is None:
            from wrapgrad.wrapping import wrap

            explain = wrap(model, self.config.guide_method, **dict(self.config.guide_options))
            self.__dict__["_guide_explain"] = explain
        size = self.config.guide_batch_size
        out = []
        with torch.enable_grad():
            for start in range(0, inputs.shape[0], size):
                x = inputs[start : start + size].detach()
                if target is None:
                    with torch.no_grad():
                        t = model(x).argmax(dim=1)
                elif isinstance(target, Tensor) and target.dim() > 0:
                    t = target[start : start + size]
                else:
                    t = target
                out.append(explain(x, target=t).detach())
        return torch.cat(out)

    def _guide_for(self, x: Any) -> Tensor | None:
        if self._explicit_guide is not None:
            shape, prepared = self._explicit_guide
            if not isinstance(x, Tensor) or tuple(x.shape) != shape:
                raise WrapgradValueError(
                    f"guide: expected maps of the inputs' shape "
                    f"{tuple(x.shape) if isinstance(x, Tensor) else describe(x)}, got {shape}"
                )
            return prepared.to(x.device)
        if self._guide_model is None:
            return None
        if not isinstance(x, Tensor):
            raise WrapgradTypeError(
                f"inputs: a guided SDE needs a tensor as the first input, got {describe(x)}"
            )
        found, keys = self.guide_store.lookup(x)
        missing = [i for i, m in enumerate(found) if m is None]
        if missing:
            idx = torch.tensor(missing, device=x.device)
            prepared = self._prepare(self.compute_guide(x.index_select(0, idx)))
            if self.training:  # not at inference: attacks and metrics make endless new inputs
                self.guide_store.put(x.index_select(0, idx), prepared, [keys[i] for i in missing])
            for j, i in enumerate(missing):
                found[i] = prepared[j]
        return torch.stack([m.to(x.device) for m in found])  # type: ignore[union-attr]

    # -- forward ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _noise(self, noise_pass: NoisePass) -> Iterator[None]:
        blocks = [self.net.get_submodule(name) for name in self.blocks]
        for b in blocks:
            b.noise_pass = noise_pass
        try:
            yield
        finally:
            for b in blocks:
                b.noise_pass = None

    def _device(self, x: Any) -> torch.device:
        if isinstance(x, Tensor):
            return x.device
        p = next(self.net.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.perturber.is_zero or not (self.training or self._mc_samples > 0):
            return self.net(*args, **kwargs)
        x = args[0] if args else None
        guide = self._guide_for(x) if self.needs_guide else None
        device = self._device(x)
        if self.training:
            seed = int(torch.randint(0, 2**62, (1,), generator=self.generator))
            noise_pass = NoisePass(self.perturber, self.dt, _device_generator(seed, device), guide)
            with self._noise(noise_pass):
                return self.net(*args, **kwargs)
        # The same M seeds on every call: the averaged model is one deterministic function.
        source = _device_generator(self.inference_seed, torch.device("cpu"))
        seeds = torch.randint(0, 2**62, (self._mc_samples,), generator=source).tolist()
        logps = []
        for seed in seeds:
            noise_pass = NoisePass(
                self.perturber, self.dt, _device_generator(seed, device), guide, shared=True
            )
            with self._noise(noise_pass):
                z = self.net(*args, **kwargs)
            if not isinstance(z, Tensor) or z.dim() < 2:
                raise WrapgradValueError(
                    f"mc_samples: Monte-Carlo inference averages class probabilities and needs "
                    f"scores of shape (B, K); the network returned {describe(z)}"
                )
            logps.append(torch.log_softmax(z, dim=1))
        return torch.logsumexp(torch.stack(logps), dim=0) - math.log(len(logps))

    def extra_repr(self) -> str:
        noise = getattr(self.perturber, "name", type(self.perturber).__name__)
        return (
            f"noise={noise}, sigma={self.sigma}, dt={self.dt:g}, blocks={len(self.blocks)}, "
            f"mc_samples={self._mc_samples}, seed={self.seed}"
        )
