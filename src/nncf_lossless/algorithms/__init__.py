"""Built-in compression entries; importing this package registers them."""

from nncf_lossless.algorithms import distillation as distillation
from nncf_lossless.algorithms import frozen_bn as frozen_bn
from nncf_lossless.algorithms import hint_distillation as hint_distillation
from nncf_lossless.algorithms import pruning as pruning
from nncf_lossless.algorithms import quantization as quantization
