"""Named salts of the random-key streams, and the key arithmetic of a fit's start.

Every use of randomness in a fit takes its own stream, ``jax.random.fold_in(seed_key, SALT)``,
so adding or removing one use leaves the others' draws as they were. The values are part of
what a seed means: changing one changes every fit's draws for that seed.
"""

from functools import partial

import jax

#: the steps of an optimisation loop (minibatches, SVI's Monte Carlo draws)
STEPS = 1
#: the validation rows held out for early stopping
VALIDATION = 2
#: an anchored ensemble's prior draws and perturbed targets
ANCHORS = 3
#: SVI's start, steps and posterior draws
SVI = 3
#: NUTS chains: their starts and transitions
NUTS = 4
#: the Laplace approximation's posterior draws
LAPLACE = 5
#: MCLMC chains: their starts, tuning and steps
MCLMC = 6
#: the evidence tuning behind the MAP starts of a hierarchical model's chains (inside a sampler's stream)
NOISE_START = 7
#: SG-MCMC chains: their starts, preconditioners, minibatches and noise
SGMCMC = 8


@partial(jax.jit, static_argnums=(2,))
def stream(key: jax.Array, salt: int, num: int) -> tuple[jax.Array, ...]:
    """``jax.random.split(jax.random.fold_in(key, salt), num)`` as a tuple: a salted stream's first ``num``
    keys, as one compiled program (run op by op, its operations compile one program each)."""
    return tuple(jax.random.split(jax.random.fold_in(key, salt), num))

