"""Slow: with spare slots, decoding new inputs without reference lengths
works. The tiny ELMER fine-tuned (bench/length_modes.py, as a user runs it)
on the task with the shortest targets, a sentence of the bundled sample →
its first three words, ends its own output: max-length decoding with
generate's default slots (32, the run's decoder_length) scores close to
oracle-length decoding and gets the length right.
"""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_max_length_decoding_ends_where_the_reference_ends(tmp_path):
  result = subprocess.run(
      [sys.executable, os.path.join(ROOT, "bench", "length_modes.py"),
       "--task=pairs", "--spare_slots=decoder_length", "--steps=300",
       f"--work_dir={tmp_path}"],
      capture_output=True, text=True, cwd=ROOT, timeout=3000,
      env=dict(os.environ, PYTHONPATH=ROOT))
  assert result.returncode == 0, result.stderr[-3000:]
  scores = json.loads(result.stdout.strip().splitlines()[-1])
  print(scores)
  assert scores["slots"] == 32 and scores["examples"] >= 200
  # Measured (bench/RESULTS.md, 2 cores shared by ~6 sessions, checkpoint
  # 200 of this 300-step run): max_length ROUGE-L 44.9 vs oracle 44.8 and
  # 72% of lengths within ±1 with spare slots; without them 27.4 vs 48.2 and
  # 6%. The bars sit between the two with room for run-to-run noise: a
  # model that never saw spare slots fails both by a wide margin.
  assert scores["max_length/rougeL"] >= scores["oracle/rougeL"] - 5.0
  assert scores["max_length/length_within_1"] >= 0.5
