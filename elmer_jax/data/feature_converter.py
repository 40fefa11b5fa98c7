"""ElmerFeatureConverter: task features → the model's inputs.

`decoder_input_tokens` is `<s>` followed by `<mask>` slots (one per target
token), not the shifted targets: ELMER predicts every target token at once.
With packing, the segment ids keep each example's (bidirectional) decoder
attention inside its own segment.

Spare slots: as in the released code, the decoder also gets `<mask>` slots
beyond the target's `</s>`, attended like the real ones, so that the model
learns to end its output among more slots than it needs (what max-length
decoding gives it). `spare_slots` says how many: up to the run's
`decoder_length` (`decoder_length`), up to the batch's longest target
(`batch`, the released code's `nar_padding`), or none (`none`, the padded
slots are `<pad>` and masked out). Their labels are ignored (`ignore`, the
released code) or trained to `</s>` (`spare_labels='eos'`). Packed rows give
their trailing slots to the row's last example (its segment, its positions).

seqio pads and packs with 0; ELMER's vocabularies need their own pad id
(BART's is 1), so padding is found first (0, which is `<pad>` in our
SentencePiece models and `<s>` in BART's) and
then written with the vocabulary's ids. The one exception is BART's `<s>`
that starts an encoder input: position 0 always holds a token.
"""

from typing import Mapping, Optional

import seqio
import tensorflow as tf

SPARE_SLOTS = ("decoder_length", "batch", "none")
SPARE_LABELS = ("ignore", "eos")


class ElmerFeatureConverter(seqio.EncDecFeatureConverter):
  """Feature converter for ELMER's non-autoregressive decoder."""

  def __init__(self, pad_id: int, bos_id: int, mask_id: int,
               pack: bool = False, spare_slots: str = "decoder_length",
               spare_labels: str = "ignore", eos_id: Optional[int] = None,
               **kwargs):
    super().__init__(pack=pack, bos_id=bos_id, **kwargs)
    if spare_slots not in SPARE_SLOTS:
      raise ValueError(f"spare_slots={spare_slots!r} (TrainConfig."
                       f"spare_slots); expected one of {SPARE_SLOTS}.")
    if spare_labels not in SPARE_LABELS:
      raise ValueError(f"spare_labels={spare_labels!r} (TrainConfig."
                       f"spare_labels); expected one of {SPARE_LABELS}.")
    if spare_labels == "eos" and eos_id is None:
      raise ValueError("spare_labels='eos' needs the vocabulary's eos_id.")
    self._pad_id, self._mask_id, self._eos_id = pad_id, mask_id, eos_id
    self._spare_slots, self._spare_labels = spare_slots, spare_labels

  def _valid(self, features: Mapping[str, tf.Tensor], key: str) -> tf.Tensor:
    if self.pack:
      return features[f"{key}_segment_ids"] > 0
    # Position 0 is never padding (every feature ends with `</s>`); it may
    # hold BART's `<s>`, whose id is 0.
    first = tf.range(tf.shape(features[key])[0]) == 0
    return (features[key] != seqio.PAD_ID) | first

  def _convert_example(
      self, features: Mapping[str, tf.Tensor]) -> Mapping[str, tf.Tensor]:
    targets, inputs = features["targets"], features["inputs"]
    valid_targets = self._valid(features, "targets")
    if self.pack:
      positions = features["targets_positions"]
    else:
      positions = tf.range(tf.shape(targets)[0])
    slots = tf.where(positions == 0, self.bos_id, self._mask_id)
    converted = {
        "encoder_input_tokens": tf.where(self._valid(features, "inputs"),
                                         inputs, self._pad_id),
        "decoder_input_tokens": tf.where(valid_targets, slots, self._pad_id),
        "decoder_target_tokens": tf.where(valid_targets, targets,
                                          self._pad_id),
        "decoder_loss_weights": tf.cast(valid_targets, tf.int32),
    }
    converted.update({k: features[k] for k in self._passthrough_features})
    if self.pack:
      for side, key in (("encoder", "inputs"), ("decoder", "targets")):
        converted[f"{side}_segment_ids"] = features[f"{key}_segment_ids"]
        converted[f"{side}_positions"] = features[f"{key}_positions"]
    if self._spare_slots == "decoder_length":
      rows = {k: v[None] for k, v in converted.items()}
      converted = {k: v[0] for k, v in self.fill_spare_slots(rows).items()}
    return converted

  def finish_batch(self, batch: Mapping[str, tf.Tensor]
                   ) -> Mapping[str, tf.Tensor]:
    """Applied to each batch: spare slots up to the batch's longest target
    under `spare_slots='batch'`; otherwise the batch as it is."""
    if self._spare_slots != "batch":
      return batch
    used = batch["decoder_input_tokens"] != self._pad_id
    position = tf.range(tf.shape(used)[1])[None, :]
    longest = tf.reduce_max(tf.where(used, position + 1, 0))
    return self.fill_spare_slots(batch, longest)

  def fill_spare_slots(self, rows: Mapping[str, tf.Tensor],
                       limit: Optional[tf.Tensor] = None
                       ) -> dict[str, tf.Tensor]:
    """`rows` (batch, length) with `<mask>` slots after each row's last
    target token, up to `limit` (default: the row length)."""
    inputs = rows["decoder_input_tokens"]
    length = tf.shape(inputs)[1]
    position = tf.range(length)[None, :]
    used = inputs != self._pad_id
    end = tf.reduce_max(tf.where(used, position + 1, 0), axis=1)
    limit = length if limit is None else limit
    spare = (position >= end[:, None]) & (position < limit)
    out = dict(rows)
    first = tf.where(position == 0, self.bos_id, self._mask_id)
    out["decoder_input_tokens"] = tf.where(spare, first, inputs)
    if self._spare_labels == "eos":
      out["decoder_target_tokens"] = tf.where(
          spare, self._eos_id, rows["decoder_target_tokens"])
      out["decoder_loss_weights"] = tf.where(
          spare, 1, rows["decoder_loss_weights"])
    if self.pack:
      last = tf.maximum(end - 1, 0)
      segments, positions = (rows["decoder_segment_ids"],
                             rows["decoder_positions"])
      last_segment = tf.gather(segments, last, batch_dims=1)
      last_position = tf.gather(positions, last, batch_dims=1)
      out["decoder_segment_ids"] = tf.where(spare, last_segment[:, None],
                                            segments)
      out["decoder_positions"] = tf.where(
          spare, last_position[:, None] + position - last[:, None], positions)
    return out
