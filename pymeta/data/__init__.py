"""Dataset I/O: a restricted unpickler and loaders for the preprocessed Omniglot / Mini-ImageNet files.

Nothing here imports TensorFlow; images are kept as uint8 arrays.
"""

from .loaders import load_miniimagenet, load_omniglot
from .safe_pickle import MAX_BYTES, DatasetFileError, UnsafePickleError, safe_load, safe_loads

__all__ = ["DatasetFileError", "UnsafePickleError", "MAX_BYTES", "safe_load", "safe_loads", "load_omniglot",
           "load_miniimagenet"]
