"""Built-in example networks (`qloom examples`). Names are stable."""
from __future__ import annotations

from . import cnv, digits, resnet, tfc

# name -> (builder returning (model, example_input), one-line description)
EXAMPLES = {
    "digits-mlp-w1a1": (lambda: digits.build(1, 1), "64-64-64-10 MLP, bipolar, QAT-trained on sklearn digits"),
    "digits-mlp-w2a2": (lambda: digits.build(2, 2), "64-64-64-10 MLP, 2-bit, QAT-trained on sklearn digits"),
    "tfc-w1a1": (lambda: tfc.build(1, 1, binary_input=True), "FINN TFC 784-64-64-64-10, bipolar weights and "
                 "activations, binarized input (as FINN's TFC-w1a1), seeded"),
    "tfc-w1a1-u8": (lambda: tfc.build(1, 1), "FINN TFC 784-64-64-64-10, bipolar weights and activations, "
                    "8-bit pixels in, seeded"),
    "tfc-w2a2": (lambda: tfc.build(2, 2), "FINN TFC 784-64-64-64-10, 2-bit weights and activations, seeded"),
    "tfc-w4a4": (lambda: tfc.build(4, 4), "FINN TFC 784-64-64-64-10, 4-bit weights and activations, seeded"),
    "cnv-w1a1": (lambda: cnv.cnv(1, 1), "FINN CNV for 32x32x3 (convs 64,64,128,128,256,256; dense 512,512,10), "
                                         "bipolar, seeded"),
    "cnv-w2a2": (lambda: cnv.cnv(2, 2), "FINN CNV for 32x32x3, 2-bit weights and activations, seeded"),
    "digits-cnn": (lambda: cnv.digits_cnn(2, 2), "small 2-bit CNN (conv16, conv32, dense 10) QAT-trained on digits"),
    "resnet8": (lambda: resnet.resnet8(4, 4), "MLPerf Tiny ResNet-8 for 32x32x3 (conv16, residual stacks 16, 32, 64, "
                                              "avgpool, dense 10), 4-bit, seeded"),
    "resnet8-w1a1": (lambda: resnet.resnet8(1, 1), "MLPerf Tiny ResNet-8 for 32x32x3, bipolar weights and "
                                                   "activations, seeded"),
    "digits-resnet": (lambda: resnet.digits_resnet(2, 2), "small 2-bit residual CNN (conv16, 2 residual blocks, "
                                                          "dense 10) QAT-trained on digits"),
    "digits-dwsep": (lambda: resnet.digits_dwsep(4, 2), "small depthwise-separable CNN (conv16, 2 x [dw 3x3, pw 32], "
                                                        "dense 10), 4-bit weights, 2-bit activations, QAT-trained on "
                                                        "digits"),
}


def build(name: str):
    if name not in EXAMPLES:
        raise KeyError(f"unknown example '{name}'; built-in examples: {', '.join(EXAMPLES)}")
    return EXAMPLES[name][0]()
