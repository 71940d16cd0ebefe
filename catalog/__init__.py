"""Kernel Catalog: a database-backed catalog of trained depthwise convolution kernels."""

__version__ = "0.1.0"
