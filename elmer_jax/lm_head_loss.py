"""The tied LM head and its cross-entropy as one function with its own VJP.

The plain path materialises fp32 (batch, length, vocab) logits and, in the
backward pass, their gradient, each a full round trip through memory. Here
the logits stay in the compute dtype (bf16 on accelerators), every reduction
over the vocabulary is done in fp32, and the backward pass is `softmax -
one_hot` written elementwise (an iota compare, no scatter) followed by the two
matmuls of the head, laid out so that XLA:CPU never transposes the (tokens,
vocab) gradient. The vocabulary is padded to a multiple of `vocab_multiple`
at compute time only: padded columns get -inf logits (a -inf bias on zero
rows), so the result equals the unpadded head without a mask; parameters and
checkpoints are unchanged.
"""

import functools

import jax
import jax.numpy as jnp


def _padded(embedding: jax.Array, bias: jax.Array, multiple: int):
  """Zero rows and a -inf bias for the padded columns: their logits are
  -inf, their softmax 0, and their gradients reach nothing (zero rows), so
  no validity mask is needed anywhere."""
  vocab = embedding.shape[0]
  extra = -vocab % max(multiple, 1)
  return (jnp.pad(embedding, ((0, extra), (0, 0))),
          jnp.pad(bias, (0, extra), constant_values=-jnp.inf), vocab)


def _forward_parts(states, embedding, bias, targets, dtype, multiple,
                   label_smoothing):
  table, bias_padded, vocab = _padded(embedding, bias, multiple)
  logits = jnp.einsum("...d,vd->...v", states.astype(dtype),
                      table.astype(dtype),
                      preferred_element_type=dtype)
  logits = logits + bias_padded.astype(dtype)
  wide = logits.astype(jnp.float32)
  top = jnp.max(wide, axis=-1)
  log_z = top + jnp.log(jnp.sum(jnp.exp(wide - top[..., None]), axis=-1))
  # A gather, not a masked sum over the vocabulary: one less full pass.
  target_logit = jnp.take_along_axis(wide, targets[..., None], axis=-1)[..., 0]
  mean_logit = (jnp.sum(wide[..., :vocab], axis=-1) / vocab
                if label_smoothing else None)
  return logits, log_z, target_logit, mean_logit, top


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7))
def _head_loss(states, embedding, bias, targets, dtype, multiple,
               label_smoothing, z_loss):
  out, _ = _head_loss_fwd(states, embedding, bias, targets, dtype, multiple,
                          label_smoothing, z_loss)
  return out


def _head_loss_fwd(states, embedding, bias, targets, dtype, multiple,
                   label_smoothing, z_loss):
  logits, log_z, target_logit, mean_logit, top = _forward_parts(
      states, embedding, bias, targets, dtype, multiple, label_smoothing)
  nll = log_z - target_logit
  objective = nll
  if label_smoothing:
    objective = ((1.0 - label_smoothing) * nll
                 + label_smoothing * (log_z - mean_logit))
  z_term = z_loss * jnp.square(log_z)
  objective = objective + z_term
  # The target's logit is the maximum: no extra pass over the vocabulary
  # (an argmax is a full select and reduce, ~7% of a small step on a CPU).
  correct = (target_logit >= top).astype(jnp.float32)
  residuals = (states, embedding, bias, targets, logits, log_z)
  return (objective, nll, z_term, correct), residuals


def _head_loss_bwd(dtype, multiple, label_smoothing, z_loss, residuals,
                   cotangents):
  states, embedding, bias, targets, logits, log_z = residuals
  g_objective, g_nll, g_z, _ = cotangents
  vocab = embedding.shape[0]
  table, _, _ = _padded(embedding, bias, multiple)
  columns = jax.lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1)
  probs = jnp.exp(logits.astype(jnp.float32) - log_z[..., None])
  # d/dlogits of objective, nll and z-term, per token, as coefficients of
  # softmax, one_hot(target) and the uniform 1/V of label smoothing (padded
  # columns may hold any finite value: their table rows are zero and their
  # bias gradient is dropped).
  on_softmax = (g_objective * (1.0 + 2.0 * z_loss * log_z) + g_nll
                + g_z * 2.0 * z_loss * log_z)
  on_target = g_objective * (1.0 - label_smoothing) + g_nll
  d_logits = (probs * on_softmax[..., None]
              - jnp.where(columns == targets[..., None], on_target[..., None],
                          0.0))
  if label_smoothing:
    d_logits = d_logits - (g_objective * label_smoothing / vocab)[..., None]
  d_low = d_logits.astype(dtype)
  d_states = jnp.einsum("...v,vd->...d", d_low, table.astype(dtype),
                        preferred_element_type=jnp.float32)
  batch_axes = tuple(range(d_logits.ndim - 1))
  # states.T @ d_low as one 2-D product, then the (embed, vocab) result
  # transposed: written the other way XLA:CPU transposes the (tokens, vocab)
  # gradient first (1.02× a base step, 1.05× a small one, where tokens are 8×
  # the width); as a tensordot over the token axes its bf16 dot has no CPU
  # kernel.
  width, columns = states.shape[-1], d_low.shape[-1]
  d_table = jnp.matmul(states.astype(dtype).reshape(-1, width).T,
                       d_low.reshape(-1, columns),
                       preferred_element_type=jnp.float32).T
  d_bias = jnp.sum(d_logits, axis=batch_axes)[:vocab]
  return (d_states.astype(states.dtype),
          d_table[:vocab].astype(embedding.dtype), d_bias.astype(bias.dtype),
          None)


_head_loss.defvjp(_head_loss_fwd, _head_loss_bwd)


def head_cross_entropy(states: jax.Array, embedding: jax.Array,
                       bias: jax.Array, targets: jax.Array, *,
                       dtype: jnp.dtype = jnp.float32,
                       vocab_multiple: int = 128,
                       label_smoothing: float = 0.0, z_loss: float = 0.0
                       ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """Per-token (objective, cross-entropy, z-loss term, correct) of the tied
  head `states @ embedding.T + bias`, as `objectives.cross_entropy` and
  `argmax == targets` compute them from the plain head's logits, except that
  a target tied with another token at the maximum logit counts as correct.

  `states`: (..., embed); `embedding`: (vocab, embed); `targets`: (...) ids.
  """
  if targets.shape != states.shape[:-1]:
    raise ValueError(f"targets have shape {tuple(targets.shape)}; expected "
                     f"{tuple(states.shape[:-1])} (the states' token axes).")
  return _head_loss(states, embedding, bias, targets.astype(jnp.int32),
                    jnp.dtype(dtype), int(vocab_multiple),
                    float(label_smoothing), float(z_loss))
