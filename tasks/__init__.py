"""seqio task and mixture registrations for ELMER (registered on import)."""

import seqio

from tasks import finetuning
from tasks import pretraining


def use_vocabulary(vocabulary: seqio.Vocabulary) -> None:
  """Registers the built-in tasks again with `vocabulary` (same names), and
  makes it the default of the file tasks (`VOCABULARY`)."""
  pretraining.set_default_vocabulary(vocabulary)
  pretraining.register_pretraining_tasks(vocabulary)
  finetuning.register_finetuning_tasks(vocabulary)


pretraining.register_pretraining_tasks()
finetuning.register_finetuning_tasks()
