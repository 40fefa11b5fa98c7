"""ElmerFeatureConverter: task features → the model's inputs.

`decoder_input_tokens` is `<s>` followed by `<mask>` slots (one per target
token), not the shifted targets: ELMER predicts every target token at once.
With packing, the segment ids keep each example's (bidirectional) decoder
attention inside its own segment.

seqio pads and packs with 0; ELMER's vocabularies need their own pad id
(BART's is 1), so padding is found first (0, which is `<pad>` in our
SentencePiece models and `<s>` in BART's) and
then written with the vocabulary's ids. The one exception is BART's `<s>`
that starts an encoder input: position 0 always holds a token.
"""

from typing import Mapping

import seqio
import tensorflow as tf


class ElmerFeatureConverter(seqio.EncDecFeatureConverter):
  """Feature converter for ELMER's non-autoregressive decoder."""

  def __init__(self, pad_id: int, bos_id: int, mask_id: int,
               pack: bool = False, **kwargs):
    super().__init__(pack=pack, bos_id=bos_id, **kwargs)
    self._pad_id, self._mask_id = pad_id, mask_id

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
    return converted
