"""The PyTorch ELMER copied into every exported directory (`trust_remote_code`).

These files run where elmer_jax is not installed: they may import only torch,
transformers (with huggingface_hub) and the standard library, and each other
by relative import. tests/test_hf_module.py checks that from a bare copy.
"""
