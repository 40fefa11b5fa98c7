"""Slow: with spare slots, decoding new inputs without reference lengths
works. The tiny ELMER fine-tuned (bench/length_modes.py, as a user runs it)
on the task with the shortest targets, a sentence of the bundled sample →
its first three words, ends its own output: max-length decoding with
generate's default slots (32, the run's decoder_length) scores close to
oracle-length decoding and gets the length right. On the same run, decoding
stops a row once its output is decided (every slot up to its first exited
`</s>` has exited): the same outputs with fewer layers, in JAX and in the
exported PyTorch module.
"""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import seqio
import torch

import tasks  # Registers the tasks.
from elmer_jax import decoding, generation_eval, trained_model
from elmer_jax.model import exit_decoder
from tests import helpers, hf_reference

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_max_length_decoding_ends_where_the_reference_ends(tmp_path):
  result = subprocess.run(
      [sys.executable, os.path.join(ROOT, "bench", "length_modes.py"),
       "--task=pairs", "--spare_slots=decoder_length", "--steps=600",
       f"--work_dir={tmp_path}"],
      capture_output=True, text=True, cwd=ROOT, timeout=3000,
      env=dict(os.environ, PYTHONPATH=ROOT))
  assert result.returncode == 0, result.stderr[-3000:]
  scores = json.loads(result.stdout.strip().splitlines()[-1])
  print(scores)
  assert scores["slots"] == 32 and scores["examples"] >= 200
  # Measured (bench/RESULTS.md, idle 2 cores, this command): with spare
  # slots max_length ROUGE-L 72.1 vs oracle 66.4 and 84.8% of lengths within
  # ±1 (95.2% counted in words); the same run without them
  # (--spare_slots=none) 42.8 vs 76.6 and 0.4% (8.0% in words). The bars are
  # the 2-point goal, a token share ten points under the measured
  # one (room for run-to-run noise across machines) and the 90% in
  # words: a model that never saw spare slots fails all three by far.
  assert scores["max_length/rougeL"] >= scores["oracle/rougeL"] - 2.0
  assert scores["max_length/length_within_1"] >= 0.75
  assert scores["max_length/words_within_1"] >= 0.90
  _check_early_stop(tmp_path, "pairs.decoder_length.ignore.600")


def test_pretrained_model_gets_the_length_within_one_token(tmp_path):
  """ELMER as meant: pretrained (the README's demo recipe), then fine-tuned
  on the same pairs; its word knowledge fixes the long words that the
  from-scratch model cuts short."""
  pretrain = helpers.run_python(
      "-m", "elmer_jax.train", "--gin_file=experiments/demo_sample_tiny.gin",
      f"--model_dir={tmp_path / 'demo'}", timeout=1500, cwd=ROOT,
      **helpers.subprocess_env(2), PYTHONPATH=ROOT)
  assert pretrain.returncode == 0, pretrain.stderr[-3000:]
  result = helpers.run_python(
      os.path.join(ROOT, "bench", "length_modes.py"), "--task=pairs",
      "--steps=600", f"--init_checkpoint={tmp_path / 'demo'}",
      f"--work_dir={tmp_path}", timeout=1500, cwd=ROOT, PYTHONPATH=ROOT)
  assert result.returncode == 0, result.stderr[-3000:]
  scores = json.loads(result.stdout.strip().splitlines()[-1])
  print(scores)
  # Measured (bench/RESULTS.md, 2026-12-07, this command): max_length 70.65
  # vs oracle 70.26, 92.4% of lengths within ±1 token, 98.4% in words; from
  # scratch 84.8% / 95.2%, without spare slots 0.0%. The token bar sits
  # between from-scratch and pretrained (run-to-run room of ~2 points); the
  # others are the goals.
  assert scores["init_checkpoint"] and scores["examples"] >= 200
  assert scores["max_length/rougeL"] >= scores["oracle/rougeL"] - 2.0
  assert scores["max_length/length_within_1"] >= 0.88
  assert scores["max_length/words_within_1"] >= 0.95


def _check_early_stop(work_dir, run):
  """Batch 1, 32 slots, entropy exit at 2 nats: with the decided-row stop
  (decoding's default) the kept tokens and exit layers equal those of the
  decoder that waits for every slot, in fewer layers on some inputs (spare
  slots after `</s>` need not exit); PyTorch's `generate` gives the same
  outputs after as many layers."""
  task = "first_three_words_elmer"  # As bench/length_modes.py names it.
  if task not in seqio.TaskRegistry.names():
    tasks.finetuning.register_pairs_task(
        task, [str(work_dir / "train.jsonl")],
        [str(work_dir / "validation.jsonl")], file_format="jsonl")
  trained_model.parse_run_config(str(work_dir / run))
  model = trained_model.load(str(work_dir / run),
                             use_vocabulary=tasks.use_vocabulary)
  cfg, threshold = model.config, 2.0
  examples = generation_eval.read_examples(task, "validation", 32, 32)[:24]
  torch_model = hf_reference.export_and_load(cfg, model.params,
                                             work_dir / "hf")
  calls = []
  for layer in torch_model.model.decoder.layers:
    layer.register_forward_hook(lambda *_: calls.append(1))
  dec = decoding.decoder_inputs(cfg, 1, 32)
  slots = dec != cfg.pad_id
  run_decoder = jax.jit(exit_decoder.decode, static_argnums=(0,),
                        static_argnames=("eos_id",))
  saved = 0
  for example in examples:
    enc = decoding.encoder_batch(cfg, [example["inputs"]], 1, 32)
    waits = run_decoder(cfg, model.params, enc, dec, jnp.float32(threshold))
    stops = run_decoder(cfg, model.params, enc, dec, jnp.float32(threshold),
                        eos_id=cfg.eos_id)
    ours = decoding.decode(cfg, model.params, enc, decoding.DecodeConfig(
        max_length=32, exit_threshold=threshold))
    for out in (waits, stops):
      kept = decoding.finalize(out.tokens, out.exit_layers, slots, cfg.eos_id,
                               cfg.pad_id, False)
      np.testing.assert_array_equal(kept.tokens, ours.tokens)
      np.testing.assert_array_equal(kept.exit_layers, ours.exit_layers)
    assert int(ours.layers_run) == int(stops.layers_run)
    assert int(stops.layers_run) <= int(waits.layers_run)
    saved += int(waits.layers_run) - int(stops.layers_run)
    calls.clear()
    theirs = torch_model.generate(torch.tensor(enc, dtype=torch.long),
                                  max_length=32, exit_threshold=threshold,
                                  return_dict_in_generate=True)
    np.testing.assert_array_equal(theirs.sequences.numpy(), ours.tokens)
    np.testing.assert_array_equal(theirs.exit_layers.numpy(),
                                  ours.exit_layers)
    assert len(calls) == int(ours.layers_run)
  # Measured on this run's 600-step twin: 64 inputs at 2 nats ran 2.98
  # layers a row waiting for every slot, 2.77 stopping at the decided end.
  assert saved > 0
