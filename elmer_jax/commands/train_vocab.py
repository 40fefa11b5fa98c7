"""Trains a SentencePiece vocabulary with ELMER's special ids.

From files, or from a registered seqio task's text:

  python -m elmer_jax.data.train_vocab --input=docs.jsonl --input_format=jsonl \
      --model_prefix=/tmp/spm_8k --vocab_size=8000
  python -m elmer_jax.data.train_vocab --task=c4_en_elmer \
      --max_documents=200000 --model_prefix=/tmp/c4_32k --vocab_size=32000
"""

from absl import app, flags

from elmer_jax import console

with console.quiet_native_load():  # It loads TensorFlow.
  from elmer_jax.data import sentencepiece_training

_INPUT = flags.DEFINE_list("input", None, "Text or JSONL files.")
_TASK = flags.DEFINE_string("task", None, "A seqio task to read text from "
                            "(instead of --input).")
_MAX_DOCS = flags.DEFINE_integer("max_documents", 100_000,
                                 "Documents read from --task.")
_PREFIX = flags.DEFINE_string("model_prefix", None, "Writes PREFIX.model.")
_SIZE = flags.DEFINE_integer("vocab_size", 8000, "Number of pieces.")
_FORMAT = flags.DEFINE_enum("input_format", "text", ["text", "jsonl"],
                            "One document per line, or JSON objects.")
_FIELD = flags.DEFINE_string("text_field", "text", "JSONL field with the text.")


def main(argv):
  del argv
  console.setup()  # Third-party INFO logs off.
  if bool(_INPUT.value) == bool(_TASK.value):
    raise app.UsageError("Give exactly one of --input and --task.")
  if _TASK.value:
    import tasks  # pylint: disable=unused-import  (registers the tasks)
    documents = sentencepiece_training.task_documents(_TASK.value,
                                                      max_documents=_MAX_DOCS.value)
  else:
    documents = sentencepiece_training.read_documents(
        _INPUT.value, _FORMAT.value, _FIELD.value)
  path = sentencepiece_training.train_sentencepiece(documents, _PREFIX.value,
                                                    _SIZE.value)
  print(f"Wrote {path}")


def run() -> None:
  flags.mark_flag_as_required("model_prefix")
  app.run(main)


if __name__ == "__main__":
  run()
