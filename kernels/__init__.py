"""Triton kernels of flexrec, one per file, each with its launcher beside it.

This is the only package that imports triton. On CPU tensors the kernels run only in Triton's
interpreter (``TRITON_INTERPRET=1`` set before triton is imported), which is how the tests check
them without a GPU.
"""
