"""Trains a SentencePiece vocabulary with ELMER's special ids.

  python -m elmer_jax.data.train_vocab --input=docs.jsonl --input_format=jsonl \
      --model_prefix=/tmp/spm_8k --vocab_size=8000
"""

from absl import app, flags

from elmer_jax.data import sentencepiece_training

_INPUT = flags.DEFINE_list("input", None, "Text or JSONL files.")
_PREFIX = flags.DEFINE_string("model_prefix", None, "Writes PREFIX.model.")
_SIZE = flags.DEFINE_integer("vocab_size", 8000, "Number of pieces.")
_FORMAT = flags.DEFINE_enum("input_format", "text", ["text", "jsonl"],
                            "One document per line, or JSON objects.")
_FIELD = flags.DEFINE_string("text_field", "text", "JSONL field with the text.")


def main(argv):
  del argv
  path = sentencepiece_training.train_sentencepiece(
      sentencepiece_training.read_documents(_INPUT.value, _FORMAT.value, _FIELD.value),
      _PREFIX.value, _SIZE.value)
  print(f"Wrote {path}")


if __name__ == "__main__":
  flags.mark_flags_as_required(["input", "model_prefix"])
  app.run(main)
