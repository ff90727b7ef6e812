"""C++ kernels XLA:CPU lacks, called through XLA's FFI: the Winograd 3x3 and 5x5 convolutions (winograd_isa.cc).
`build.py` compiles them into `_winograd.so` beside the sources (`make install` runs it)."""
