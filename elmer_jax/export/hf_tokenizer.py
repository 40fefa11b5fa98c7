"""Tokenizer files for an exported directory, with the seqio vocabulary's ids.

A SentencePiece vocabulary becomes a fast tokenizer through transformers'
`SpmConverter.build_tokenizer_from_spm_proto`, which follows the model's own
normalizer, dummy prefix and byte fallback; BART's byte-level BPE is the
`tokenizers` model our vocabulary already runs. Both get BART's
post-processor, `<s> ids </s>` (just `ids </s>` for a vocabulary that builds
inputs without `<s>`), because that is how the tasks encode inputs:
`tokenizer(text).input_ids` is the model's encoder input.
"""

import json
import os

import seqio
import tokenizers
from sentencepiece import sentencepiece_model_pb2
from transformers.convert_slow_tokenizer import SpmConverter

from elmer_jax.data import vocabularies
from elmer_jax.data.bpe_vocabulary import ByteLevelBPEVocabulary
from elmer_jax.model.config import ElmerConfig

SPECIAL_IDS = {"bos_token": "bos_id", "eos_token": "eos_id",
               "unk_token": "unk_id", "pad_token": "pad_id",
               "mask_token": "mask_id"}


def fast_tokenizer(vocabulary: seqio.Vocabulary) -> tokenizers.Tokenizer:
  """The `tokenizers` equivalent of a seqio vocabulary (same ids)."""
  if isinstance(vocabulary, ByteLevelBPEVocabulary):
    return tokenizers.Tokenizer.from_str(vocabulary.tokenizer.to_str())
  if isinstance(vocabulary, seqio.SentencePieceVocabulary):
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(vocabulary.sp_model)
    if proto.trainer_spec.model_type != 1:
      raise ValueError(f"{vocabulary.sentencepiece_model_file} is not a "
                       "unigram SentencePiece model; only unigram is "
                       "converted.")
    pieces = [(p.piece, p.score) for p in proto.pieces]
    # legacy=True: the dummy prefix on every text; the non-legacy scheme
    # drops it when the text starts with spaces (SentencePiece keeps it).
    return SpmConverter.build_tokenizer_from_spm_proto(proto, pieces,
                                                       legacy=True)
  raise ValueError(f"Cannot export a {type(vocabulary).__name__}; expected a "
                   "SentencePiece or BART byte-level BPE vocabulary.")


def write_tokenizer(vocabulary: seqio.Vocabulary, config: ElmerConfig,
                    output_dir: str) -> None:
  """Writes tokenizer.json and tokenizer_config.json for AutoTokenizer."""
  tokenizer = fast_tokenizer(vocabulary)
  size = tokenizer.get_vocab_size(with_added_tokens=True)
  if size != config.vocab_size:
    raise ValueError(
        f"The vocabulary has {size} tokens but the model's embedding has "
        f"ElmerConfig.vocab_size={config.vocab_size} rows; export needs the "
        "vocabulary the model was trained with.")
  specials = {name: tokenizer.id_to_token(getattr(config, field))
              for name, field in SPECIAL_IDS.items()}
  bos, eos = specials["bos_token"], specials["eos_token"]
  start = f"{bos} " if vocabularies.encoder_bos(vocabulary) else ""
  tokenizer.post_processor = tokenizers.processors.TemplateProcessing(
      single=f"{start}$A {eos}", pair=f"{start}$A {eos} {eos} $B {eos}",
      special_tokens=[(bos, config.bos_id), (eos, config.eos_id)])
  tokenizer.add_special_tokens([tokenizers.AddedToken(t, special=True)
                                for t in specials.values()])
  tokenizer.save(os.path.join(output_dir, "tokenizer.json"))
  with open(os.path.join(output_dir, "tokenizer_config.json"), "w") as f:
    json.dump(dict(tokenizer_class="PreTrainedTokenizerFast",
                   model_max_length=config.max_positions, **specials), f,
              indent=2)
