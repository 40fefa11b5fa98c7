"""One check that a set of named arrays has the shapes a model expects.

Checkpoints, Hugging Face state dicts and imported parameters are all checked
with it, so every such error reads alike: it names every missing, unexpected
and mis-shaped entry with both shapes, not just the first.
"""

from typing import Mapping, Sequence

Shape = tuple[int, ...]
# A `may_add` that lets `found` hold anything beyond `expected`.
ANY = ("",)
_SHOWN = 10  # Entries listed per kind of problem; the rest are counted.


def _listed(lines: list[str]) -> list[str]:
  more = len(lines) - _SHOWN
  return lines[:_SHOWN] + ([f"... and {more} more"] if more > 0 else [])


def check_shapes(found: Mapping[str, Shape], expected: Mapping[str, Shape],
                 what: str, *, may_lack: Sequence[str] = (),
                 may_add: Sequence[str] = (), hint: str = "",
                 error: type[Exception] = ValueError) -> None:
  """Raises `error` naming every entry of `expected` that `found` lacks or
  shapes differently, and every entry of `found` not in `expected`.

  `found` may lack the entries starting with a prefix in `may_lack`, and hold
  extra ones starting with a prefix in `may_add` (`ANY`: all). `hint` ends
  the message (what the mismatch likely means).
  """
  lacking, mismatched = [], []
  for key, shape in expected.items():
    if key not in found:
      if not key.startswith(tuple(may_lack)):
        lacking.append(f"{what} lacks {key!r} (expected shape {shape})")
    elif tuple(found[key]) != tuple(shape):
      mismatched.append(f"{what}: {key!r} has shape {tuple(found[key])} but "
                        f"the model expects {tuple(shape)}")
  unexpected = [f"{what} holds unexpected {key!r} (shape {tuple(shape)})"
                for key, shape in found.items()
                if key not in expected and not key.startswith(tuple(may_add))]
  problems = _listed(mismatched) + _listed(lacking) + _listed(unexpected)
  if problems:
    raise error("\n".join(problems + ([hint] if hint else [])))
