"""Slow: the tiny ELMER fine-tuned with soft exit from scratch on the sample
denoising task (experiments/finetune_sample_tiny.gin, as shipped) really
learns: its validation generations beat the untrained (step-0) model's by a
wide margin. Guards the experiment's settings (init_std, lengths, no dropout)
as much as the trainer: with BART's init_std 0.02 the model stayed at the
unigram level for the whole run.
"""

import flax.linen as nn
import jax
import numpy as np
import pytest

import tasks  # pylint: disable=unused-import  (registers the tasks)
from elmer_jax import decoding, generation_eval, gin_utils
from elmer_jax.model.params import abstract_params, init_params
from elmer_jax.training import checkpoints, loop

pytestmark = pytest.mark.slow

EXPERIMENT = "experiments/finetune_sample_tiny.gin"


def _token_accuracy(predictions):
  """Share of reference words matched at the same position (the task keeps
  positions: masked tokens are replaced one for one)."""
  hits = total = 0
  for p in predictions:
    ref, out = p["reference"].split(), p["prediction"].split()
    hits += sum(a == b for a, b in zip(ref, out))
    total += len(ref)
  return hits / total


def _scores(model_config, params, examples, length):
  config = generation_eval.GenerationEvalConfig(
      batch_size=32,
      decode=decoding.DecodeConfig(length_mode="oracle", max_length=length))
  scores, predictions = generation_eval.evaluate(
      model_config, params, tasks.pretraining.default_vocabulary(), examples,
      config, length)
  return dict(scores, word_accuracy=_token_accuracy(predictions)), predictions


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  gin_utils.parse([EXPERIMENT])
  model_config = gin_utils.macro("MODEL_CONFIG")
  train_config = gin_utils.macro("TRAIN_CONFIG")
  assert train_config.init_checkpoint is None  # From scratch.
  model_dir = tmp_path_factory.mktemp("finetune")
  loop.train(model_config, train_config, str(model_dir))
  return model_config, train_config, model_dir


def test_soft_exit_fine_tuning_learns_the_sample_task(run):
  model_config, train_config, model_dir = run
  length = train_config.decoder_length
  examples = generation_eval.read_examples(
      train_config.mixture_or_task, "validation",
      train_config.encoder_length, length)
  assert len(examples) >= 50

  untrained = nn.unbox(init_params(model_config,
                                   jax.random.key(train_config.seed)))
  trained = checkpoints.load_params(
      str(model_dir / "checkpoints" / str(train_config.steps)),
      nn.unbox(abstract_params(model_config)))
  before, _ = _scores(model_config, untrained, examples, length)
  after, predictions = _scores(model_config, trained, examples, length)
  print({k: (round(before[k], 3), round(after[k], 3))
         for k in ("rougeL", "bleu", "word_accuracy")})
  print(predictions[:3])

  # Measured (2 shared CPU cores, two runs, identical numbers; ~3.5 min):
  # untrained ROUGE-L 0.64, BLEU 0.01, word accuracy 0.0; after the 600
  # steps ROUGE-L 62.6, BLEU 32.0, word accuracy 0.28 (whitespace words at
  # the same position: one split or merged word shifts the rest of the
  # sentence, hence lower than ROUGE). The bars leave a third to a half of
  # the measured gains as margin; a model stuck at the unigram level (the
  # old settings: eval accuracy 0.04) stays near the untrained numbers.
  assert before["rougeL"] < 10.0
  assert after["rougeL"] > before["rougeL"] + 40.0
  assert after["bleu"] > before["bleu"] + 20.0
  assert after["word_accuracy"] > before["word_accuracy"] + 0.15
  assert np.isfinite(after["average_exit_layer"])
