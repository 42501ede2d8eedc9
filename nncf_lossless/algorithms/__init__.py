"""Built-in compression entries, one folder per method; importing this package registers them.

Only each method's ``schema.py`` is imported here (torch-free): validating a config needs no
torch or NNCF. The entries name their ``algo.py`` classes as strings, imported at build time.
"""

from nncf_lossless.algorithms.distillation import schema as _distillation  # noqa: F401
from nncf_lossless.algorithms.frozen_bn import schema as _frozen_bn  # noqa: F401
from nncf_lossless.algorithms.hint_distillation import schema as _hint_distillation  # noqa: F401
from nncf_lossless.algorithms.multi_bit import schema as _multi_bit  # noqa: F401
from nncf_lossless.algorithms.pruning import schema as _pruning  # noqa: F401
from nncf_lossless.algorithms.quantization import schema as _quantization  # noqa: F401
