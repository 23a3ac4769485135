"""Models, data, training and evaluation built on the kernels in ``kernels/``."""
