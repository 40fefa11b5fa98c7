"""Exported tokenizer files give the seqio vocabulary's ids, and
`tokenizer(text).input_ids` is the seqio task's encoder input."""

import pytest
import seqio
import transformers

from elmer_jax.data import vocabularies
from elmer_jax.data.bpe_vocabulary import ByteLevelBPEVocabulary
from elmer_jax.export import hf_tokenizer
from elmer_jax.model.config import ElmerConfig
from tasks import finetuning, pretraining
from tests.helpers import BPE_EXTRA_TEXT, SAMPLE

TEXTS = ["Paris is the capital of France.", "  leading and  double  spaces ",
         "Anarchism\nis a political philosophy\tand movement.",
         "naïve café, Ångström, résumé — “quotes”", "日本語のテキスト 中文",
         "emoji 🙂🚀 and symbols ∑ ≤ ≠ ©", "x" * 40, "MiXeD CaSe 12345 3.14",
         "ﬁ ligature and ＦＵＬＬＷＩＤＴＨ", ""] + BPE_EXTRA_TEXT


def _task_inputs(vocabulary, texts, path):
  """Encoder ids the seqio fine-tuning task builds for `texts`, by text."""
  path.mkdir()
  rows = [t for t in texts if t.strip() and "\t" not in t and "\n" not in t]
  (path / "pairs.tsv").write_text("".join(f"{t}\tx\n" for t in rows))
  name = finetuning.register_pairs_task(
      f"tokenizer_check_{id(vocabulary)}", [str(path / "pairs.tsv")],
      file_format="tsv", vocabulary=vocabulary)
  dataset = seqio.get_mixture_or_task(name).get_dataset(
      {"inputs": 128, "targets": 8}, split="train", shuffle=False,
      num_epochs=1, use_cached=False)
  inputs = [ex["inputs"].tolist() for ex in dataset.as_numpy_iterator()]
  assert len(inputs) == len(rows)
  return dict(zip(rows, inputs))


def _check_ids(vocabulary, config, path):
  hf_tokenizer.write_tokenizer(vocabulary, config, str(path))
  tokenizer = transformers.AutoTokenizer.from_pretrained(str(path))
  task_inputs = _task_inputs(vocabulary, TEXTS, path / "task")
  for text in TEXTS:
    ids = list(vocabulary.encode(text))
    # BART's `<s> tokens </s>`, as `tokenizer.encode(text)` in the original.
    assert tokenizer(text)["input_ids"] == (
        [config.bos_id] + ids + [config.eos_id]), text
    if text in task_inputs:
      assert tokenizer(text)["input_ids"] == task_inputs[text], text
    assert tokenizer.decode(ids) == vocabulary.decode(ids), text
    # Output ids as an undertrained model predicts them, special ids among
    # the text: generate's text is what batch_decode of the export shows.
    noisy = [config.mask_id, *ids[:2], config.pad_id, config.unk_id,
             *ids[2:], config.mask_id, config.bos_id, config.eos_id]
    assert vocabularies.output_text(vocabulary, noisy, config) == tokenizer.decode(
        noisy, skip_special_tokens=True), text
  assert len(task_inputs) >= len(TEXTS) - 3
  assert tokenizer.mask_token_id == config.mask_id
  assert tokenizer.pad_token_id == config.pad_id
  assert tokenizer.eos_token_id == config.eos_id


def test_sentencepiece_ids_match_seqio(tmp_path):
  vocabulary = seqio.SentencePieceVocabulary(pretraining.SAMPLE_SPM)
  _check_ids(vocabulary, SAMPLE, tmp_path)


def test_bpe_ids_match(bpe_dir, tmp_path):
  vocabulary = ByteLevelBPEVocabulary(str(bpe_dir))
  config = ElmerConfig(vocab_size=vocabulary.vocab_size, d_model=32,
                       num_heads=4, mask_id=vocabulary.vocab_size - 1)
  _check_ids(vocabulary, config, tmp_path)


def test_without_encoder_bos_the_tokenizer_follows(tmp_path):
  vocabulary = vocabularies.load_vocabulary(pretraining.SAMPLE_SPM,
                                            encoder_bos=False)
  hf_tokenizer.write_tokenizer(vocabulary, SAMPLE, str(tmp_path))
  tokenizer = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
  text = TEXTS[0]
  expected = list(vocabulary.encode(text)) + [SAMPLE.eos_id]
  assert tokenizer(text)["input_ids"] == expected
  assert _task_inputs(vocabulary, [text], tmp_path / "task")[text] == expected


def test_vocabulary_must_match_the_embedding(tmp_path):
  vocabulary = seqio.SentencePieceVocabulary(pretraining.SAMPLE_SPM)
  with pytest.raises(ValueError, match="8000 tokens.*vocab_size=9000"):
    hf_tokenizer.write_tokenizer(vocabulary, SAMPLE.replace(vocab_size=9000),
                                 tmp_path)
