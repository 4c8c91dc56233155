"""Built-in example networks (`qloom examples`). Names are stable."""
from __future__ import annotations

from . import cnv, digits, tfc

# name -> (builder returning (model, example_input), one-line description)
EXAMPLES = {
    "digits-mlp-w1a1": (lambda: digits.build(1, 1), "64-64-64-10 MLP, bipolar, QAT-trained on sklearn digits"),
    "digits-mlp-w2a2": (lambda: digits.build(2, 2), "64-64-64-10 MLP, 2-bit, QAT-trained on sklearn digits"),
    "tfc-w1a1": (lambda: tfc.build(1, 1), "FINN TFC 784-64-64-64-10, bipolar weights and activations, seeded"),
    "tfc-w2a2": (lambda: tfc.build(2, 2), "FINN TFC 784-64-64-64-10, 2-bit weights and activations, seeded"),
    "tfc-w4a4": (lambda: tfc.build(4, 4), "FINN TFC 784-64-64-64-10, 4-bit weights and activations, seeded"),
    "cnv-w1a1": (lambda: cnv.cnv(1, 1), "FINN CNV for 32x32x3 (convs 64,64,128,128,256,256; dense 512,512,10), "
                                         "bipolar, seeded"),
    "cnv-w2a2": (lambda: cnv.cnv(2, 2), "FINN CNV for 32x32x3, 2-bit weights and activations, seeded"),
    "digits-cnn": (lambda: cnv.digits_cnn(2, 2), "small 2-bit CNN (conv16, conv32, dense 10) QAT-trained on digits"),
}


def build(name: str):
    if name not in EXAMPLES:
        raise KeyError(f"unknown example '{name}'; built-in examples: {', '.join(EXAMPLES)}")
    return EXAMPLES[name][0]()
