"""Networks: a plain multilayer perceptron in flax.linen.

Any ``flax.linen.Module`` that maps ``(n, features)`` to ``(n, outputs)`` can be lifted by
:class:`bnn.BNN`; :class:`MLP` is the common case.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "tanh": jnp.tanh,
    "relu": nn.relu,
    "gelu": nn.gelu,
    "sigmoid": nn.sigmoid,
    "softplus": nn.softplus,
    "silu": nn.silu,
    "elu": nn.elu,
    "identity": lambda a: a,
}


def activation_fn(activation: str | Callable) -> Callable:
    """Resolve an activation given by name (see ``ACTIVATIONS``) or as a callable."""
    if callable(activation):
        return activation
    if isinstance(activation, str) and activation in ACTIVATIONS:
        return ACTIVATIONS[activation]
    raise ValueError(
        f"`activation` must be a callable or one of {sorted(ACTIVATIONS)}; got {activation!r}."
    )


class MLP(nn.Module):
    """Fully connected network: ``Dense → activation → … → Dense`` (no activation on the output).

    Attributes:
      features: units of each layer, the last being the number of outputs.
        ``features=(1,)`` has no hidden layer: it is linear regression.
      activation: name (``"tanh"``, ``"relu"``, …) or a callable ``array -> array``.
      kernel_init, bias_init: Flax initialisers (used by MLE / MAP as the starting point,
        and by hand-drawn prior functions).

    Parameters are named ``Dense_0.kernel`` (shape ``(features_in, features[0])``),
    ``Dense_0.bias``, ``Dense_1.kernel``, …

    Example:
      >>> net = MLP(features=(10, 10, 1), activation="tanh")
      >>> variables = net.init(jax.random.PRNGKey(0), jnp.zeros((1, 1)))
      >>> net.apply(variables, jnp.ones((5, 1))).shape
      (5, 1)
    """

    features: Sequence[int]
    activation: str | Callable = "tanh"
    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable = nn.initializers.zeros

    def __post_init__(self):
        features = tuple(self.features) if isinstance(self.features, (list, tuple)) else None
        if not features or not all(isinstance(f, int) and not isinstance(f, bool) and f >= 1 for f in features):
            raise ValueError(f"`features` must be a non-empty tuple of ints >= 1; got {self.features!r}.")
        object.__setattr__(self, "features", features)
        activation_fn(self.activation)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = activation_fn(self.activation)
        for i, width in enumerate(self.features):
            x = nn.Dense(width, kernel_init=self.kernel_init, bias_init=self.bias_init)(x)
            if i < len(self.features) - 1:
                x = act(x)
        return x


class Polynomial(nn.Module):
    """Polynomial regression ``f(x) = Σₖ cₖ xᵏ`` (k = 0…degree) as a Flax module.

    A model that is linear in its parameters (one array ``"coefficients"`` of shape
    ``(degree + 1, outputs)``): with a Normal prior and Gaussian noise its posterior is
    Gaussian in closed form. Inputs must have one feature.
    """

    degree: int = 3
    outputs: int = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if x.shape[-1] != 1:
            raise ValueError(f"Polynomial takes one input feature; got inputs of shape {x.shape}.")
        powers = x ** jnp.arange(self.degree + 1, dtype=x.dtype)[None, :]  # (n, degree + 1)
        coefficients = self.param("coefficients", nn.initializers.normal(0.1), (self.degree + 1, self.outputs))
        return powers @ coefficients
