"""seqio task and mixture registrations for ELMER (registered on import)."""

from tasks import finetuning
from tasks import pretraining

pretraining.register_pretraining_tasks()
finetuning.register_finetuning_tasks()
