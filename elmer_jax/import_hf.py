"""Turn a Hugging Face BART/ELMER directory into an init checkpoint.

  python -m elmer_jax.import_hf --hf_dir=DIR --output_dir=OUT [--scan_layers]

DIR may be a local copy of RUCAIBox/elmer (with or without
`concat_head.weight`) or one of our exports. OUT is an orbax checkpoint of
{"params": ...}: pass it as `--gin.INIT_CHECKPOINT="'OUT'"` (i.e.
`TrainConfig.init_checkpoint`) with a model config that matches the
ElmerConfig printed at the end.
"""

from absl import app, flags

from elmer_jax.export import importing

_HF_DIR = flags.DEFINE_string("hf_dir", None, "The Hugging Face directory.")
_OUTPUT = flags.DEFINE_string("output_dir", None, "Where the checkpoint goes "
                              "(must not exist).")
_SCAN = flags.DEFINE_bool("scan_layers", False, "Write the stacked layout "
                          "(ElmerConfig.scan_layers=True).")


def main(argv):
  del argv
  for flag in (_HF_DIR, _OUTPUT):
    if not flag.value:
      raise app.UsageError(f"--{flag.name} is required.")
  config, params = importing.read_hf_directory(_HF_DIR.value, _SCAN.value)
  importing.save_params(params, _OUTPUT.value)
  print(f"Wrote {_OUTPUT.value} for {config}.")


if __name__ == "__main__":
  app.run(main)
