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
                    mask_id=mask, spare_slots="none")
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
                    mask_id=99, pack=True, spare_slots="none")
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


def _batches(examples, lengths, batch_size, **kwargs):
  """Converted and batched as the pipeline does it (finish_batch included)."""
  ds = tf.data.Dataset.from_generator(
      lambda: iter(examples),
      output_signature={"inputs": tf.TensorSpec([None], tf.int32),
                        "targets": tf.TensorSpec([None], tf.int32)})
  converter = ElmerFeatureConverter(**kwargs)
  batched = converter(ds, lengths).batch(batch_size).map(
      converter.finish_batch)
  return [{k: v.numpy() for k, v in b.items()} for b in batched]


def test_spare_slots_fill_to_decoder_length_with_ignored_labels():
  """The default: `<mask>` slots after the target up to the run's length,
  attended (not `<pad>`), their labels padding with weight 0."""
  (out,) = _convert([{"inputs": [11, 2], "targets": [21, 22, 2]}],
                    {"inputs": 3, "targets": 6}, pad_id=1, bos_id=0,
                    mask_id=99)
  np.testing.assert_array_equal(out["decoder_input_tokens"],
                                [0, 99, 99, 99, 99, 99])
  np.testing.assert_array_equal(out["decoder_target_tokens"],
                                [21, 22, 2, 1, 1, 1])
  np.testing.assert_array_equal(out["decoder_loss_weights"],
                                [1, 1, 1, 0, 0, 0])


def test_spare_labels_eos_trains_every_spare_slot_to_end():
  (out,) = _convert([{"inputs": [11, 2], "targets": [21, 2]}],
                    {"inputs": 3, "targets": 5}, pad_id=1, bos_id=0,
                    mask_id=99, spare_labels="eos", eos_id=2)
  np.testing.assert_array_equal(out["decoder_input_tokens"],
                                [0, 99, 99, 99, 99])
  np.testing.assert_array_equal(out["decoder_target_tokens"], [21, 2, 2, 2, 2])
  np.testing.assert_array_equal(out["decoder_loss_weights"], [1, 1, 1, 1, 1])


def test_batch_spare_slots_stop_at_the_batch_longest_target():
  """The released code's `nar_padding`: shorter targets get slots up to the
  longest target of their batch; beyond it, padding."""
  examples = [{"inputs": [11, 2], "targets": [21, 2]},
              {"inputs": [12, 2], "targets": [22, 23, 24, 2]},
              {"inputs": [13, 2], "targets": [25, 2]},
              {"inputs": [14, 2], "targets": [2]}]
  first, second = _batches(examples, {"inputs": 3, "targets": 7}, 2,
                           pad_id=1, bos_id=0, mask_id=99,
                           spare_slots="batch")
  np.testing.assert_array_equal(first["decoder_input_tokens"],
                                [[0, 99, 99, 99, 1, 1, 1],
                                 [0, 99, 99, 99, 1, 1, 1]])
  np.testing.assert_array_equal(first["decoder_loss_weights"],
                                [[1, 1, 0, 0, 0, 0, 0],
                                 [1, 1, 1, 1, 0, 0, 0]])
  np.testing.assert_array_equal(second["decoder_input_tokens"],
                                [[0, 99, 1, 1, 1, 1, 1],
                                 [0, 99, 1, 1, 1, 1, 1]])


def test_packed_spare_slots_belong_to_the_last_example():
  """A packed row's trailing slots join its last example: that segment id
  (so they attend, and are attended, only within it) and its positions
  continued; earlier examples keep exactly their own slots."""
  examples = [{"inputs": [11, 12, 2], "targets": [21, 22, 2]},
              {"inputs": [13, 2], "targets": [23, 2]}]
  (out,) = _convert(examples, {"inputs": 7, "targets": 8}, pad_id=1, bos_id=0,
                    mask_id=99, pack=True)
  np.testing.assert_array_equal(out["decoder_input_tokens"],
                                [0, 99, 99, 0, 99, 99, 99, 99])
  np.testing.assert_array_equal(out["decoder_segment_ids"],
                                [1, 1, 1, 2, 2, 2, 2, 2])
  np.testing.assert_array_equal(out["decoder_positions"],
                                [0, 1, 2, 0, 1, 2, 3, 4])
  np.testing.assert_array_equal(out["decoder_loss_weights"],
                                [1, 1, 1, 1, 1, 0, 0, 0])
  np.testing.assert_array_equal(out["encoder_segment_ids"],
                                [1, 1, 1, 2, 2, 0, 0])


def test_unknown_spare_settings_are_named():
  with pytest.raises(ValueError, match="spare_slots='all'.*decoder_length"):
    ElmerFeatureConverter(pad_id=1, bos_id=0, mask_id=99, spare_slots="all")
  with pytest.raises(ValueError, match="spare_labels='pad'"):
    ElmerFeatureConverter(pad_id=1, bos_id=0, mask_id=99, spare_labels="pad")
