"""Built-in compression entries, one folder per method; importing this package registers them."""

from nncf_lossless.algorithms.distillation import algo as _distillation  # noqa: F401
from nncf_lossless.algorithms.frozen_bn import algo as _frozen_bn  # noqa: F401
from nncf_lossless.algorithms.hint_distillation import algo as _hint_distillation  # noqa: F401
from nncf_lossless.algorithms.multi_bit import algo as _multi_bit  # noqa: F401
from nncf_lossless.algorithms.pruning import algo as _pruning  # noqa: F401
from nncf_lossless.algorithms.quantization import algo as _quantization  # noqa: F401
