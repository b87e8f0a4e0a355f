"""derain: the Rain O'er Me model, trainer, benchmarks and command line, built on derain_kernels' public ops."""
__version__ = "0.1.0"
