"""Where a compiled program's time goes, op by op, from a `jax.profiler`
trace: the bench scripts' `--profile_top`."""

import collections
import glob
import gzip
import json
import os
import re
import tempfile
from typing import Callable

import jax

# An HLO instruction: its name, its shape, and the JAX op it came from.
_INSTRUCTION = re.compile(r"\s*(?:ROOT )?%?([\w.\-]+) = (\S+) .*?"
                          r"op_name=\"([^\"]+)\"")


def top_ops(run: Callable[[], None], hlo_text: str, calls: int,
            top: int) -> list[dict]:
  """Runs `run` (which makes `calls` calls of the program) under the
  profiler and returns the `top` ops by time per call: each op's HLO name,
  shape, JAX op name, and ms per call. Ops are the trace's events named
  like an instruction of `hlo_text` (XLA:CPU's thunks, the XLA ops row of a
  GPU trace; a loop's or call's time includes its body's); a trace without
  such events gives its busiest event names."""
  instructions = {m.group(1): (m.group(2), m.group(3))
                  for m in map(_INSTRUCTION.match, hlo_text.splitlines()) if m}
  with tempfile.TemporaryDirectory() as trace_dir:
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
      run()
    (path,) = glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"),
                        recursive=True)
    with gzip.open(path) as f:
      trace = json.load(f)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  time_us = collections.Counter()
  for event in events:
    if event.get("ph") == "X" and "dur" in event:
      time_us[event["name"].lstrip("%")] += event["dur"]
  ops = {n: t for n, t in time_us.items() if n in instructions}
  if not ops:
    ops = {n: t for n, t in time_us.items() if not n.startswith("$")}
  return [{"op": name, "ms": round(us / calls / 1e3, 3),
           "shape": instructions.get(name, ("", ""))[0],
           "op_name": instructions.get(name, ("", ""))[1]}
          for name, us in collections.Counter(ops).most_common(top)]
