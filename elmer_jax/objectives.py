"""Exit-layer sampling, the LPLM and soft-exit losses, per-layer metrics.

Metrics come back as sums (and counts) so that microbatches, devices and hosts
can be added up before dividing; `summarize` turns them into the numbers people
read.
"""

from typing import Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

EXIT_SAMPLING = ("iid", "permutation")


def sample_exit_layers(rng: jax.Array, shape: tuple[int, int],
                       num_layers: int, method: str = "iid",
                       segment_ids: Optional[jax.Array] = None) -> jax.Array:
  """Draws an exit layer in 0..num_layers-1 for every decoder token.

  `iid`: uniform and independent per token (the released ELMER code).
  `permutation`: within each sequence every layer is used equally often (counts
  differ by at most one), in random order (the paper). A sequence is a row, or
  a segment of a packed row when `segment_ids` is given; segment 0 (padding)
  is balanced on its own and so does not disturb the real tokens.
  """
  if method not in EXIT_SAMPLING:
    raise ValueError(f"Exit sampling method {method!r}; expected one of "
                     f"{EXIT_SAMPLING}.")
  if num_layers < 1:
    raise ValueError(f"num_layers must be >= 1, got {num_layers}.")
  if method == "iid":
    return jax.random.randint(rng, shape, 0, num_layers, jnp.int32)
  if segment_ids is None:
    segment_ids = jnp.ones(shape, jnp.int32)
  if tuple(segment_ids.shape) != tuple(shape):
    raise ValueError(f"segment_ids has shape {tuple(segment_ids.shape)}; "
                     f"expected {tuple(shape)}.")
  order_rng, offset_rng = jax.random.split(rng)
  length = shape[1]
  noise = jax.random.uniform(order_rng, shape)
  # Sort each row by (segment, random key): every segment becomes a run of
  # positions in random order, and a token's rank in its run picks its layer.
  order = jnp.lexsort((noise, segment_ids), axis=-1)
  sorted_segments = jnp.take_along_axis(segment_ids, order, axis=-1)
  index = jnp.broadcast_to(jnp.arange(length), shape)
  starts = jnp.concatenate(
      [jnp.ones((shape[0], 1), bool),
       sorted_segments[:, 1:] != sorted_segments[:, :-1]], axis=-1)
  run_start = jax.lax.cummax(jnp.where(starts, index, 0), axis=1)
  # A random offset per segment decides which layers get the extra token.
  offsets = jax.random.randint(offset_rng, shape, 0, num_layers, jnp.int32)
  segment_offset = jnp.take_along_axis(
      offsets, jnp.clip(sorted_segments, 0, length - 1), axis=-1)
  sorted_exits = (index - run_start + segment_offset) % num_layers
  return jnp.take_along_axis(sorted_exits, jnp.argsort(order, axis=-1),
                             axis=-1).astype(jnp.int32)


def cross_entropy(logits: jax.Array, targets: jax.Array,
                  label_smoothing: float = 0.0, z_loss: float = 0.0
                  ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Per-token (objective, cross-entropy, z-loss term), all fp32.

  Label smoothing spreads `label_smoothing` uniformly over the vocabulary;
  z-loss adds `z_loss * logsumexp(logits)**2` to keep the softmax normaliser
  near one (PaLM).
  """
  logits = logits.astype(jnp.float32)
  log_z = jax.nn.logsumexp(logits, axis=-1)
  # The target's logit as a masked sum, not take_along_axis: the gather's
  # backward is a scatter, which XLA:CPU then writes transposed for the LM
  # head's weight gradient, a fifth of the small config's step.
  columns = jax.lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1)
  nll = log_z - jnp.sum(jnp.where(columns == targets[..., None], logits, 0.0),
                        axis=-1)
  objective = nll
  if label_smoothing:
    objective = ((1.0 - label_smoothing) * nll - label_smoothing * jnp.mean(
        logits - log_z[..., None], axis=-1))
  z_term = z_loss * jnp.square(log_z)
  return objective + z_term, nll, z_term


def lplm_loss(logits: jax.Array, targets: jax.Array, weights: jax.Array,
              exit_layers: jax.Array, num_layers: int, *,
              label_smoothing: float = 0.0, z_loss: float = 0.0
              ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Token-mean loss of each token at its exit layer; padding has weight 0.

  `logits` are the exit-state logits (`ElmerOutput.logits`). Returns the loss
  and metric sums (see `summarize`).
  """
  objective, nll, z_term = cross_entropy(logits, targets, label_smoothing,
                                         z_loss)
  correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
  return lplm_sums(objective, nll, z_term, correct, weights, exit_layers,
                   num_layers)


def lplm_sums(objective: jax.Array, nll: jax.Array, z_term: jax.Array,
              correct: jax.Array, weights: jax.Array, exit_layers: jax.Array,
              num_layers: int) -> tuple[jax.Array, dict[str, jax.Array]]:
  """`lplm_loss` from per-token (objective, cross-entropy, z-term, correct),
  e.g. those of `lm_head_loss.head_cross_entropy`."""
  weights = weights.astype(jnp.float32)
  per_layer = jax.nn.one_hot(exit_layers, num_layers) * weights[..., None]
  sums = {
      "loss_sum": jnp.sum(objective * weights),
      "cross_entropy_sum": jnp.sum(nll * weights),
      "z_loss_sum": jnp.sum(z_term * weights),
      "correct_sum": jnp.sum(correct * weights),
      "weight_sum": jnp.sum(weights),
      "exit_layer_sum": jnp.sum(exit_layers * weights),
      "layer_cross_entropy_sum": jnp.einsum("...,...l->l", nll, per_layer),
      "layer_correct_sum": jnp.einsum("...,...l->l", correct, per_layer),
      "layer_weight_sum": jnp.sum(per_layer, axis=tuple(range(nll.ndim))),
  }
  loss = sums["loss_sum"] / jnp.maximum(sums["weight_sum"], 1e-8)
  return loss, sums


def soft_exit_loss(layer_logits: jax.Array, targets: jax.Array,
                   weights: jax.Array, *, label_smoothing: float = 0.0,
                   z_loss: float = 0.0
                   ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Fine-tuning loss as released: the mean over layers of each off-ramp's
  token-mean loss. `layer_logits` is (layers, batch, length, vocab).

  Every layer scores the same tokens, so that mean equals the token mean of
  each token's layer-mean loss, and `loss_sum` adds across microbatches.
  `cross_entropy` and `accuracy` describe the output (the last layer, which
  inference reads); per layer they are under `layer_{l}/` in `summarize`.
  """
  num_layers = layer_logits.shape[0]
  objective, nll, z_term = cross_entropy(layer_logits, targets[None],
                                         label_smoothing, z_loss)
  weights = weights.astype(jnp.float32)
  correct = (jnp.argmax(layer_logits, axis=-1) == targets[None]).astype(
      jnp.float32)
  per_layer = lambda x: jnp.einsum("l...,...->l", x, weights)
  weight_sum = jnp.sum(weights)
  layer_nll, layer_correct = per_layer(nll), per_layer(correct)
  sums = {
      "loss_sum": jnp.sum(per_layer(objective)) / num_layers,
      "cross_entropy_sum": layer_nll[-1],
      "z_loss_sum": jnp.sum(per_layer(z_term)) / num_layers,
      "correct_sum": layer_correct[-1],
      "weight_sum": weight_sum,
      "exit_layer_sum": (num_layers - 1) * weight_sum,
      "layer_cross_entropy_sum": layer_nll,
      "layer_correct_sum": layer_correct,
  }
  loss = sums["loss_sum"] / jnp.maximum(weight_sum, 1e-8)
  return loss, sums


def summarize(sums: Mapping[str, jax.Array]) -> dict[str, float]:
  """Metric sums → means: loss, accuracy, average exit layer, per layer.

  LPLM sums (with `layer_weight_sum`) give per exit layer entries
  `exit_layer_{l}/...`, where a layer no token used reports NaN rather than a
  misleading zero; soft-exit sums (every token scored at every layer) give
  per off-ramp entries `layer_{l}/...`.
  """
  s = {k: np.asarray(v, np.float64) for k, v in sums.items()}
  total = max(float(s["weight_sum"]), 1e-8)
  out = {
      "loss": float(s["loss_sum"]) / total,
      "cross_entropy": float(s["cross_entropy_sum"]) / total,
      "z_loss": float(s["z_loss_sum"]) / total,
      "accuracy": float(s["correct_sum"]) / total,
      "average_exit_layer": float(s["exit_layer_sum"]) / total,
  }
  by_exit = "layer_weight_sum" in s
  counts = (s["layer_weight_sum"] if by_exit else
            np.full(len(s["layer_cross_entropy_sum"]), s["weight_sum"]))
  prefix = "exit_layer" if by_exit else "layer"
  for layer, count in enumerate(counts):
    mean = (lambda key: float(s[key][layer]) / count if count else float("nan"))
    out[f"{prefix}_{layer}/cross_entropy"] = mean("layer_cross_entropy_sum")
    out[f"{prefix}_{layer}/accuracy"] = mean("layer_correct_sum")
    if by_exit:
      out[f"{prefix}_{layer}/fraction"] = float(count) / total
  return out
