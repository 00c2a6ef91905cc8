"""The NumPy golden model: bit-exact formats and arithmetic, and a training loop.

Pure NumPy: no Amaranth or cocotb imports here. Modules:

- :mod:`golden.bfp`: BFP8 quantization (blocks of 16, shared 8-bit exponent, int8 mantissas);
- :mod:`golden.hbm`: the HBM v1 hierarchical bit-mask stream and size measures;
- :mod:`golden.sparsity`: the sparsity filter, its statistics and the threshold controller;
- :mod:`golden.gemm`: the BFP8 GEMM exactly as the hardware computes it.
"""
