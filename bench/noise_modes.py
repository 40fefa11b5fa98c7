"""Statistics of the two noise modes on the bundled sample: masked fraction
of words, `<mask>`/random slots per 100 words, mean words per span, output
length. Prints JSON.

  python bench/noise_modes.py [--chunks=200] [--length=512]

`exact` (default) covers exactly ceil(30%) of the words with
non-overlapping spans; `fairseq` places spans as the released code's
fairseq DenoisingDataset does (overlapping, so fewer words end up masked).
"""

import json

from absl import app, flags
import numpy as np
import seqio
import tensorflow as tf

from elmer_jax.data import noising
from elmer_jax.data.vocab_tables import vocab_tables
from tasks import pretraining

_CHUNKS = flags.DEFINE_integer("chunks", 200, "512-token chunks to noise.")
_LENGTH = flags.DEFINE_integer("length", 512, "Tokens per chunk.")


def _chunks(vocab, count, length):
  chunks = []
  with open(pretraining.SAMPLE_JSONL) as f:
    for line in f:
      ids = vocab.encode(json.loads(line)["text"])
      chunks += [np.array(ids[i:i + length], np.int32)
                 for i in range(0, len(ids) - length + 1, length)]
      if len(chunks) >= count:
        break
  return chunks[:count]


def measure(mode, vocab, tables, chunks) -> dict:
  config = noising.NoiseConfig(mode=mode, permute_ratio=0.0)

  @tf.function(reduce_retracing=True)
  def noise(tokens, seed):
    plan_seed, apply_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 2))
    plan = noising.infilling_plan(tokens, tf.constant(tables.word_starts),
                                  config, plan_seed)
    return plan, noising.apply_infilling(tokens, plan, tables, config,
                                         apply_seed)

  words = covered = span_masks = slots = masks = out_len = in_len = 0
  for i, chunk in enumerate(chunks):
    plan, noised = noise(tf.constant(chunk), tf.constant([i, 5], tf.int64))
    noised = noised.numpy()
    words += int(plan["words"])
    covered += int(plan["covered_words"])
    span_masks += int(plan["mask"].numpy().sum())
    inserts = int((plan["lengths"].numpy() == 0).sum())
    slots += int(plan["mask"].numpy().sum()) + inserts
    masks += int((noised == tables.mask_id).sum())
    out_len += len(noised)
    in_len += len(chunk)
  return {"mode": mode, "masked_fraction_of_words": covered / words,
          "mask_slots_per_100_words": 100 * slots / words,
          "mask_tokens_per_100_words": 100 * masks / words,
          "mean_words_per_span": covered / max(span_masks, 1),
          "output_to_input_length": out_len / in_len}


def main(argv):
  del argv
  vocab = seqio.SentencePieceVocabulary(pretraining.SAMPLE_SPM)
  tables = vocab_tables(vocab)
  chunks = _chunks(vocab, _CHUNKS.value, _LENGTH.value)
  print(json.dumps({"chunks": len(chunks), "length": _LENGTH.value,
                    "modes": [measure(m, vocab, tables, chunks)
                              for m in noising.NOISE_MODES]}, indent=1))


if __name__ == "__main__":
  app.run(main)
