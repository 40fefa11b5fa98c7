"""What the noising and the model need to know about a vocabulary.

Works for our SentencePiece models (word starts marked '▁') and BART's
byte-level BPE (word starts marked 'Ġ'); special ids are read from the
vocabulary, never assumed.
"""

import numpy as np
import seqio

from elmer_jax.data.noising import VocabTables
from elmer_jax.model.config import ElmerConfig

_SENTENCE_END = (".", "!", "?")
_CLOSING = "\"'”’)]"


def _pieces_and_specials(vocab: seqio.Vocabulary):
  """(pieces, special ids dict, ids that are not text pieces)."""
  if isinstance(vocab, seqio.SentencePieceVocabulary):
    sp = vocab.tokenizer
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    specials = {"pad": sp.pad_id(), "eos": sp.eos_id(), "unk": sp.unk_id(),
                "bos": sp.bos_id(), "mask": sp.piece_to_id("<mask>")}
    if pieces[specials["mask"]] != "<mask>":
      raise ValueError(f"SentencePiece model {vocab.sentencepiece_model_file!r}"
                       " has no '<mask>' piece; train it with "
                       "`python -m elmer_jax.data.train_vocab`.")
    non_text = {i for i in range(len(pieces))
                if sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i)
                or sp.is_unused(i) or i == specials["mask"]}
    return pieces, specials, non_text
  if hasattr(vocab, "tokens") and hasattr(vocab, "mask_id"):
    pieces = list(vocab.tokens())
    specials = {"pad": vocab.pad_id, "eos": vocab.eos_id, "unk": vocab.unk_id,
                "bos": vocab.bos_id, "mask": vocab.mask_id}
    return pieces, specials, set(specials.values())
  raise TypeError(f"Unsupported vocabulary {type(vocab).__name__}; expected a "
                  "seqio.SentencePieceVocabulary or ByteLevelBPEVocabulary.")


def special_ids(vocab: seqio.Vocabulary) -> dict[str, int]:
  """{'pad', 'eos', 'unk', 'bos', 'mask'} ids of `vocab`."""
  return _pieces_and_specials(vocab)[1]


def vocab_tables(vocab: seqio.Vocabulary) -> VocabTables:
  """Word starts, sentence ends, `<mask>` and the random-token range."""
  pieces, specials, non_text = _pieces_and_specials(vocab)
  text = np.array([i not in non_text for i in range(len(pieces))])
  word_starts = np.array([p[:1] in ("▁", "Ġ") for p in pieces]) & text
  sentence_ends = np.array(
      [p.rstrip(_CLOSING).endswith(_SENTENCE_END) for p in pieces]) & text
  text_ids = np.flatnonzero(text)
  # Random replacements come from the contiguous block of text pieces.
  full_stops = np.array([p == "." for p in pieces]) & text
  return VocabTables(word_starts=word_starts, sentence_ends=sentence_ends,
                     full_stops=full_stops,
                     mask_id=specials["mask"],
                     random_low=int(text_ids.min()),
                     random_high=int(text_ids.max()) + 1)


def check_config_matches(config: ElmerConfig, vocab: seqio.Vocabulary) -> None:
  """Raises if the model's special ids or vocabulary size disagree with `vocab`."""
  ids = special_ids(vocab)
  for name, value in ids.items():
    bound = getattr(config, f"{name}_id")
    if bound != value:
      raise ValueError(
          f"ElmerConfig.{name}_id={bound} but the vocabulary has {name} id "
          f"{value}; bind config.ElmerConfig.{name}_id = {value}.")
  if config.vocab_size < vocab.vocab_size:
    raise ValueError(
        f"ElmerConfig.vocab_size={config.vocab_size} is smaller than the "
        f"vocabulary ({vocab.vocab_size} ids); the embedding must hold them.")
