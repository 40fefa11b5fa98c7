"""The one shape check: every problem is named, with both shapes."""

import pytest

from elmer_jax import shapes

EXPECTED = {"a": (2, 3), "b": (4,), "fresh/c": (5,)}


def test_every_missing_mismatched_and_unexpected_entry_is_named():
  found = {"a": (3, 2), "z": (1,)}
  with pytest.raises(ValueError) as error:
    shapes.check_shapes(found, EXPECTED, "Ckpt", hint="Same config?")
  lines = str(error.value).splitlines()
  assert lines == ["Ckpt: 'a' has shape (3, 2) but the model expects (2, 3)",
                   "Ckpt lacks 'b' (expected shape (4,))",
                   "Ckpt lacks 'fresh/c' (expected shape (5,))",
                   "Ckpt holds unexpected 'z' (shape (1,))",
                   "Same config?"]


def test_allowed_gaps_and_extras_pass_and_the_error_type_is_chosen():
  shapes.check_shapes({"a": [2, 3], "b": (4,), "alias/x": (9,)}, EXPECTED,
                      "Ckpt", may_lack=("fresh/",), may_add=("alias/",))
  shapes.check_shapes({**EXPECTED, "anything": ()}, EXPECTED, "Ckpt",
                      may_add=shapes.ANY)
  with pytest.raises(KeyError):
    shapes.check_shapes({}, EXPECTED, "Ckpt", error=KeyError)


def test_long_lists_are_cut_and_counted():
  expected = {f"p{i}": (i,) for i in range(25)}
  with pytest.raises(ValueError) as error:
    shapes.check_shapes({}, expected, "Ckpt")
  lines = str(error.value).splitlines()
  assert len(lines) == 11 and lines[-1] == "... and 15 more"
