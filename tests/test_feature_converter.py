"""ElmerFeatureConverter on hand-made examples, with BART's and SP's ids."""

import numpy as np
import pytest
import tensorflow as tf

from elmer_jax.data.feature_converter import ElmerFeatureConverter


def _convert(examples, lengths, **kwargs):
  ds = tf.data.Dataset.from_generator(
      lambda: iter(examples),
      output_signature={"inputs": tf.TensorSpec([None], tf.int32),
                        "targets": tf.TensorSpec([None], tf.int32)})
  converter = ElmerFeatureConverter(**kwargs)
  return [{k: v.numpy() for k, v in ex.items()}
          for ex in converter(ds, lengths)]


@pytest.mark.parametrize("pad,bos,mask", [(1, 0, 50264), (0, 3, 4)])
def test_unpacked_example_has_mask_slots_and_vocabulary_padding(pad, bos, mask):
  (out,) = _convert([{"inputs": [11, 12, 13, 2], "targets": [21, 22, 2]}],
                    {"inputs": 6, "targets": 5}, pad_id=pad, bos_id=bos,
                    mask_id=mask)
  np.testing.assert_array_equal(out["encoder_input_tokens"],
                                [11, 12, 13, 2, pad, pad])
  np.testing.assert_array_equal(out["decoder_input_tokens"],
                                [bos, mask, mask, pad, pad])
  np.testing.assert_array_equal(out["decoder_target_tokens"],
                                [21, 22, 2, pad, pad])
  np.testing.assert_array_equal(out["decoder_loss_weights"], [1, 1, 1, 0, 0])
  assert set(out) == {"encoder_input_tokens", "decoder_input_tokens",
                      "decoder_target_tokens", "decoder_loss_weights"}


def test_packed_examples_restart_slots_and_keep_segments():
  examples = [{"inputs": [11, 12, 2], "targets": [21, 22, 2]},
              {"inputs": [13, 2], "targets": [23, 2]}]
  (out,) = _convert(examples, {"inputs": 7, "targets": 7}, pad_id=1, bos_id=0,
                    mask_id=99, pack=True)
  np.testing.assert_array_equal(out["encoder_input_tokens"],
                                [11, 12, 2, 13, 2, 1, 1])
  np.testing.assert_array_equal(out["encoder_segment_ids"],
                                [1, 1, 1, 2, 2, 0, 0])
  np.testing.assert_array_equal(out["decoder_input_tokens"],
                                [0, 99, 99, 0, 99, 1, 1])
  np.testing.assert_array_equal(out["decoder_target_tokens"],
                                [21, 22, 2, 23, 2, 1, 1])
  np.testing.assert_array_equal(out["decoder_segment_ids"],
                                [1, 1, 1, 2, 2, 0, 0])
  np.testing.assert_array_equal(out["decoder_positions"],
                                [0, 1, 2, 0, 1, 0, 0])
  np.testing.assert_array_equal(out["decoder_loss_weights"],
                                [1, 1, 1, 1, 1, 0, 0])
