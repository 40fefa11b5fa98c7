"""Exported tokenizer files give the seqio vocabulary's ids."""

import pytest
import seqio
import transformers

from elmer_jax.data.bpe_vocabulary import ByteLevelBPEVocabulary
from elmer_jax.export import hf_tokenizer
from elmer_jax.model.config import ElmerConfig
from tasks import pretraining
from tests.helpers import BPE_EXTRA_TEXT, SAMPLE

TEXTS = ["Paris is the capital of France.", "  leading and  double  spaces ",
         "Anarchism\nis a political philosophy\tand movement.",
         "naïve café, Ångström, résumé — “quotes”", "日本語のテキスト 中文",
         "emoji 🙂🚀 and symbols ∑ ≤ ≠ ©", "x" * 40, "MiXeD CaSe 12345 3.14",
         "ﬁ ligature and ＦＵＬＬＷＩＤＴＨ", ""] + BPE_EXTRA_TEXT


def _check_ids(vocabulary, config, path):
  hf_tokenizer.write_tokenizer(vocabulary, config, str(path))
  tokenizer = transformers.AutoTokenizer.from_pretrained(str(path))
  for text in TEXTS:
    ids = list(vocabulary.encode(text))
    assert tokenizer(text)["input_ids"] == ids + [config.eos_id], text
    assert tokenizer.decode(ids) == vocabulary.decode(ids), text
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


def test_vocabulary_must_match_the_embedding(tmp_path):
  vocabulary = seqio.SentencePieceVocabulary(pretraining.SAMPLE_SPM)
  with pytest.raises(ValueError, match="8000 tokens.*vocab_size=9000"):
    hf_tokenizer.write_tokenizer(vocabulary, SAMPLE.replace(vocab_size=9000),
                                 tmp_path)
