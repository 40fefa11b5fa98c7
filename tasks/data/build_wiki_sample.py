"""Rebuilds the bundled Wikipedia sample and its SentencePiece model.

Source: the English Wikipedia dump excerpt that the `gensim` wheel ships as
test data (`gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2`).
The wheel is read as a zip; gensim need not be installed:

  pip download gensim==4.4.0 --no-deps -d /tmp/gensim
  python tasks/data/build_wiki_sample.py --gensim_wheel=/tmp/gensim/gensim-4.4.0-*.whl
"""

import bz2
import glob
import html
import io
import json
import os
import re
import xml.etree.ElementTree as ET
import zipfile
from typing import Iterator

from absl import app, flags

from elmer_jax.data import sentencepiece_training

DUMP = ("gensim/test/test_data/"
        "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")
OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                       "wiki_sample")

_WHEEL = flags.DEFINE_string("gensim_wheel", None, "Path (glob) of the wheel.")
_MAX_BYTES = flags.DEFINE_integer("max_bytes", 5_000_000, "Size cap.")
_VOCAB = flags.DEFINE_integer("vocab_size", 8000, "SentencePiece pieces.")


def _strip_nested(text: str, open_: str, close: str) -> str:
  """Removes balanced `open_ ... close` blocks, nested ones included."""
  out, depth, i = [], 0, 0
  while i < len(text):
    if text.startswith(open_, i):
      depth, i = depth + 1, i + len(open_)
    elif depth and text.startswith(close, i):
      depth, i = depth - 1, i + len(close)
    else:
      if not depth:
        out.append(text[i])
      i += 1
  return "".join(out)


def clean_markup(text: str) -> str:
  """MediaWiki markup → plain paragraphs (one per line)."""
  text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
  text = re.sub(r"<ref[^>]*/>|<ref[^>]*>.*?</ref>", "", text, flags=re.S)
  text = _strip_nested(text, "{{", "}}")
  text = _strip_nested(text, "{|", "|}")
  text = re.sub(r"\[\[(?:File|Image|Category):[^\[\]]*(?:\[\[[^\]]*\]\][^\[\]]*)*\]\]",
                "", text, flags=re.I)
  text = re.sub(r"\[\[(?:[^|\]]*\|)?([^\]]*)\]\]", r"\1", text)
  text = re.sub(r"\[https?://\S+ ([^\]]*)\]", r"\1", text)
  text = re.sub(r"<[^>]+>", "", text)
  text = html.unescape(text).replace("\xa0", " ")
  text = re.sub(r"'{2,}|\[\[|\]\]|\{\{|\}\}", "", text)
  # Parentheses left empty by removed templates: "(; , )".
  text = re.sub(r"\(\s*(?:[;,]\s*)*\)", "", text)
  text = re.sub(r"\(\s*[;,]\s*", "(", text)
  paragraphs = []
  for line in text.split("\n"):
    line = re.sub(r"\s+", " ", line).strip()
    if line.startswith(("=", "*", "#", ":", ";", "|", "!")) or len(line) < 40:
      continue
    paragraphs.append(line)
  return "\n".join(paragraphs)


def articles(dump: bytes) -> Iterator[dict[str, str]]:
  """(title, plain text) of each article, in dump order; redirects skipped."""
  for _, element in ET.iterparse(io.BytesIO(bz2.decompress(dump))):
    if not element.tag.endswith("}page"):
      continue
    title = element.findtext("{*}title") or ""
    raw = element.findtext(".//{*}text") or ""
    element.clear()
    if raw.lower().startswith("#redirect"):
      continue
    text = clean_markup(raw)
    if len(text) >= 500:
      yield {"title": title, "text": text}


def main(argv):
  del argv
  (wheel,) = glob.glob(_WHEEL.value)
  with zipfile.ZipFile(wheel) as z:
    dump = z.read(DUMP)
  os.makedirs(OUT_DIR, exist_ok=True)
  size, kept = 0, []
  for article in articles(dump):
    line = json.dumps(article, ensure_ascii=False) + "\n"
    if size + len(line.encode("utf-8")) > _MAX_BYTES.value:
      break
    size += len(line.encode("utf-8"))
    kept.append(line)
  with open(os.path.join(OUT_DIR, "wiki_sample.jsonl"), "w") as f:
    f.writelines(kept)
  model = sentencepiece_training.train_sentencepiece(
      (json.loads(line)["text"] for line in kept),
      os.path.join(OUT_DIR, "spm_8k"), _VOCAB.value)
  os.remove(model.replace(".model", ".vocab"))
  print(f"{len(kept)} articles, {size} bytes; {model}")


if __name__ == "__main__":
  flags.mark_flag_as_required("gensim_wheel")
  app.run(main)
