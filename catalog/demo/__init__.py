"""The offline demo: trained PaddleOCR kernels from PyPI wheels, the analysis, tables and figures."""
