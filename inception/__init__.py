"""inception: GoogLeNet and the Inception family in JAX/Flax NNX, from one CPU core to TPU pods."""
