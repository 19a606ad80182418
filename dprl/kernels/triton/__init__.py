"""Triton kernels. Imported lazily by the public ops, so CPU-only installs never need Triton to
launch; under TRITON_INTERPRET=1 (set before import) they also run on CPU tensors."""
