"""Reading --input_file: lines as written, bad files named."""

import pytest

from elmer_jax import line_generation


def test_lines_are_kept_as_written_blank_ones_included(tmp_path):
  path = tmp_path / "in.txt"
  path.write_bytes("first line\n\n  café  \n".encode("utf-8"))
  assert line_generation.read_lines(str(path)) == ["first line", "",
                                                   "  café  "]


def test_a_missing_file_is_named(tmp_path):
  path = tmp_path / "missing.txt"
  with pytest.raises(FileNotFoundError,
                     match=rf"--input_file {path} does not exist"):
    line_generation.read_lines(str(path))


def test_a_line_that_is_not_utf8_is_named_by_its_number(tmp_path):
  path = tmp_path / "in.txt"
  path.write_bytes(b"ok\n\xff\xfe bad\n")
  with pytest.raises(ValueError, match=r"line 2 is not UTF-8"):
    line_generation.read_lines(str(path))
