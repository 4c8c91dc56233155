"""Post-training quantization (PTQ), QAT fine-tuning, sensitivity analysis and bit allocation.

`quantize(float_model, calibration_data, ...)` turns a float `nn.Sequential` of
nn.Linear / nn.Conv2d / nn.BatchNorm* / nn.ReLU / nn.MaxPool2d / nn.Flatten
(Dropout and Identity are dropped) into a model of qloom.nn layers that
`qloom.compile` lowers bit-exactly:

- a `QuantInput` first, its scale calibrated on the data (unsigned when the data
  is never negative);
- each Linear/Conv2d becomes a QuantLinear/QuantConv2d with the float weights and
  bias copied (per-channel or per-tensor, float or power-of-two scale);
- batch norm is kept as it is (the front end folds it into thresholds);
- each ReLU becomes an unsigned `QuantAct(learnable=False)` whose range is
  calibrated on the data (min-max, percentile or MSE), sequentially: each range
  is calibrated on what the already quantized layers before it produce;
- a layer whose output reaches the next layer without a ReLU gets a signed
  QuantAct; a MaxPool2d or Flatten between a layer and its ReLU is commuted
  with the ReLU (max and flatten commute with the increasing quantizer);
- the model's last layer stays a QuantLinear with no activation after it.

Modules: convert (plan, quantize), calibrate, finetune, metrics, search
(sensitivity, allocate_bits). See docs/ptq.md for the choices (calibration methods, MSE weight clipping,
greedy bit allocation).
"""
from .calibrate import calibrate_range  # noqa: F401
from .convert import CALIBRATIONS, act_sites, plan, quantize, weight_sites  # noqa: F401
from .finetune import finetune  # noqa: F401
from .metrics import accuracy, sqnr_db  # noqa: F401
from .search import Allocation, Sensitivity, allocate_bits, sensitivity  # noqa: F401
