"""Input that yields nothing is an error, never a loop.

Training repeats its data forever, and tf.data's `repeat` over a dataset
whose filters drop every example spins without yielding (in C++, deaf to
Ctrl-C). So before training, each task of the run is checked:

- a report on the first `REPORT_LINES` source records of each of this
  process's shards: how many were read, how many survive parsing and
  cleaning (the preprocessors before tokenization), how many held invalid
  UTF-8 (repaired, not dropped);
- its first example must arrive within one pass over the shard; if none
  does, the error names the task, its files, the counts and the likely
  cause (a format or field that does not match the lines).
"""

import dataclasses
import json
from typing import Callable, Mapping, Optional, Sequence

import seqio

REPORT_LINES = 10_000
_SAMPLES = 20


class NoInputError(ValueError):
  """A task of the run yields no example."""


@dataclasses.dataclass(frozen=True)
class SourceReport:
  """Counts over the first records of one shard of a task's split."""

  task: str
  split: str
  where: str  # The files (or TFDS name) the records come from.
  unit: str  # "lines" for text files, "records" otherwise.
  read: int
  kept: int  # Examples after parsing and cleaning (before tokenization).
  repaired: int  # Records with invalid UTF-8, replaced by U+FFFD.
  complete: bool  # Whether `read` is the whole shard.
  samples: tuple[bytes, ...]  # The first records, as read.

  def line(self) -> str:
    first = "" if self.complete else f"the first {self.read:,} of "
    return (f"input {self.task} ({self.split}): {first}{self.read:,} "
            f"{self.unit} read from {self.where}: {self.kept:,} examples "
            f"after parsing and cleaning, {max(self.read - self.kept, 0):,} "
            f"{self.unit} dropped, {self.repaired:,} with invalid UTF-8 "
            "repaired")


def _where(source: seqio.DataSource, split: str) -> str:
  if isinstance(source, seqio.FileDataSource):
    files = list(source.list_shards(split))
    shown = ", ".join(files[:3]) + (f" (+{len(files) - 3} more)"
                                    if len(files) > 3 else "")
    return shown or "no files"
  if isinstance(source, seqio.TfdsDataSource):
    return f"TFDS {source.tfds_dataset.name}"
  return type(source).__name__


def _strings(record) -> list[bytes]:
  if isinstance(record, bytes):
    return [record]
  if isinstance(record, Mapping):
    return [v for v in record.values() if isinstance(v, bytes)]
  return []


def _before_tokenization(task: seqio.Task) -> list[Callable]:
  steps = list(task.preprocessors)
  if seqio.preprocessors.tokenize in steps:
    steps = steps[:steps.index(seqio.preprocessors.tokenize)]
  return [seqio.utils.add_kwargs_to_transform(
      step, sequence_length=None, output_features=task.output_features)
          for step in steps]


def source_report(task: seqio.Task, split: str,
                  shard: Optional[seqio.ShardInfo] = None,
                  limit: int = REPORT_LINES) -> SourceReport:
  """Reads the first `limit` records of `task`'s `split` (one shard)."""
  source = task.source
  by_files = shard is None or source.supports_arbitrary_sharding or len(
      source.list_shards(split)) >= shard.num_shards
  raw = source.get_dataset(split=split, shuffle=False,
                           shard_info=shard if by_files else None)
  if not by_files:  # As seqio's Task does: fewer files than shards.
    raw = raw.shard(shard.num_shards, shard.index)
  raw = raw.take(limit + 1)
  read = repaired = 0
  samples = []
  for record in raw.as_numpy_iterator():
    if read == limit:
      break
    read += 1
    strings = _strings(record)
    if len(samples) < _SAMPLES:
      samples.append(strings[0] if len(strings) == 1 else repr(record).encode())
    try:
      for value in strings:
        value.decode("utf-8")
    except UnicodeDecodeError:
      repaired += 1
  cleaned = raw.take(read)
  for step in _before_tokenization(task):
    cleaned = step(cleaned)
  kept = int(cleaned.reduce(0, lambda count, _: count + 1))
  text_lines = isinstance(task.source, seqio.FileDataSource) or all(
      isinstance(s, bytes) for s in samples)
  return SourceReport(task=task.name, split=split,
                      where=_where(task.source, split),
                      unit="lines" if text_lines else "records", read=read,
                      kept=kept, repaired=repaired, complete=read < limit,
                      samples=tuple(samples))


def likely_cause(report: SourceReport) -> str:
  """Why every record may have been dropped, judged from the first ones."""
  if report.read == 0:
    return (f"the files hold no lines ({report.where})." if report.unit ==
            "lines" else f"the source yields no records ({report.where}).")
  lines = [s.decode("utf-8", "replace").strip() for s in report.samples]
  if not any(lines):
    return f"every {report.unit[:-1]} read is blank."
  objects = []
  for text in lines:
    try:
      objects.append(json.loads(text))
    except json.JSONDecodeError:
      pass
  if report.kept == 0 and not objects:
    return (f"the {report.unit} are not JSON (e.g. {lines[0][:60]!r}) but the "
            "task parses them as JSONL: for plain text (one document per "
            "line) set file_format='text' (--gin.FILE_FORMAT=\"'text'\" with "
            "data/local_files.gin), or name the files *.txt.")
  if report.kept == 0 and all(isinstance(o, dict) for o in objects):
    fields = sorted({key for o in objects for key in o})
    return (f"the {report.unit} are JSON objects with the fields {fields}, "
            "none of which the task reads (or they are empty): set the field "
            "name (text_field, --gin.TEXT_FIELD=\"'...'\" with "
            "data/local_files.gin; SOURCE_FIELD / TARGET_FIELD for pairs).")
  if report.kept == 0:
    return "parsing and cleaning dropped every record (empty text after parsing)."
  return ("every example was dropped after tokenization (e.g. text that "
          "tokenizes to nothing, or a filter of the task).")


def _first_example_arrives(task: seqio.Task, lengths: Mapping[str, int],
                           split: str, shard: seqio.ShardInfo) -> bool:
  dataset = task.get_dataset(
      dict(lengths), split=split, use_cached=False, shuffle=False,
      num_epochs=1, shard_info=shard if shard.num_shards > 1 else None,
      try_in_mem_cache=False, seed=0)
  return next(iter(dataset.take(1)), None) is not None


def check_tasks(mixture_or_task: str, lengths: Mapping[str, int], split: str,
                shards: Sequence[seqio.ShardInfo],
                log: Callable[[str], None] = print) -> list[SourceReport]:
  """Logs a report per task and shard; raises `NoInputError` for a task
  that yields no example."""
  reports = []
  for task in seqio.get_subtasks(seqio.get_mixture_or_task(mixture_or_task)):
    for shard in shards:
      shard_info = shard if shard.num_shards > 1 else None
      report = source_report(task, split, shard_info)
      log(report.line() + (f" (shard {shard.index} of {shard.num_shards})"
                           if shard_info else ""))
      reports.append(report)
      if report.kept == 0 and report.complete:
        arrived = False  # Nothing survives cleaning: no need to read on.
      else:
        if report.kept == 0:
          log(f"input {task.name}: no example in the first {report.read:,} "
              f"{report.unit}; reading on to the end of the data...")
        arrived = _first_example_arrives(task, lengths, split, shard)
      if not arrived:
        raise NoInputError(
            f"Task {task.name!r} ({split} split"
            f"{f', shard {shard.index}' if shard_info else ''}) yields no "
            f"example, so training would wait forever: "
            f"{report.line().split(': ', 1)[1]}. Likely cause: "
            f"{likely_cause(report)}")
  return reports
