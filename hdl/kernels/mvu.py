# amaranth: UnusedElaboratable=no
# (Kernel.unit makes the component once to read its parameters; the assembly builds its own)
"""The matrix-vector kernel: a Dense layer, or a convolution's im2col rows (after a window generator)."""
from __future__ import annotations

import math

import numpy as np

from qloom.compiler import ir

from ..mvu import MatrixVectorUnit
from . import costs
from .base import FoldingError, NodeKernel, Resources, register
from .plumbing import FIFOKernel
from .swg import SWGKernel

# per-layer options a folding entry may carry besides pe and simd (boards/fit.py sets them per device)
OPTIONS = {"weights": ("block", "distributed", "logic"),   # the weight memory's rom_style
           "ibuf": ("block", "distributed", "logic"),      # the input buffer's ram_style
           "banks": (1, 2),                                # input buffer banks
           "mem_reg": (False, True),                       # register after the memory reads
           "rom_bank": (None, *(2 ** k for k in range(8, 15)))}  # block-RAM weight banks, registered


def conv_matrix(node: ir.Conv2d, in_channels: int) -> np.ndarray:
    """The conv's weights as an (OC, KH*KW*C) matrix in im2col order (kh, kw, c), groups expanded
    (zeros outside each group), which is what the window generator + MVU compute."""
    oc, kh, kw, cg = node.weight.shape
    g = node.groups
    full = np.zeros((oc, kh, kw, in_channels), dtype=np.int64)
    for o in range(oc):
        gi = o // (oc // g)
        full[o, :, :, gi * cg:(gi + 1) * cg] = node.weight[o]
    return full.reshape(oc, -1)


def _mac_luts(wtype, xtype, acc_bits) -> float:
    """LUTs for one lane of a multiply-accumulate: its product and its share of the adder tree
    (a first-order figure, used by kernels without a structural model, e.g. vvu)."""
    if isinstance(wtype, ir.BipolarType) and isinstance(xtype, ir.BipolarType):
        return 2.5                                  # XNOR + popcount (measured 2.3-2.5 on iCE40)
    if isinstance(wtype, ir.BipolarType) or isinstance(xtype, ir.BipolarType):
        return 1.5 * (xtype.bits if isinstance(wtype, ir.BipolarType) else wtype.bits) + 2   # select + tree
    return wtype.bits * xtype.bits + acc_bits / 2   # multiplier in LUTs + tree


@register(ir.Dense, ir.Conv2d, kind="mvu")
class MVUKernel(NodeKernel):
    """acc = W @ x on a stream of vectors, PE output lanes x SIMD input lanes."""
    foldable = True

    @classmethod
    def space(cls, node, types):
        if isinstance(node, ir.Dense):
            n, k = node.weight.shape
            return n, k, "inputs"
        return types[node.output].shape[-1], types[node.inputs[0]].shape[-1], "input channels"

    @classmethod
    def node_cycles(cls, node, types, pe, simd):
        n, k, _ = cls.space(node, types)
        if isinstance(node, ir.Dense):
            return (k // simd) * (n // pe)
        oh, ow, _ = types[node.output].shape
        kk = node.kernel[0] * node.kernel[1]
        return oh * ow * (kk * k // simd) * (n // pe)

    @classmethod
    def absorbs(cls, node, consumer, types):
        """A bipolar MultiThreshold (one threshold per channel, base -1) on the accumulator: the unit's
        accumulator starts at -T and its output is the sign bit (no comparator, no threshold stage)."""
        return (isinstance(consumer, ir.MultiThreshold) and isinstance(consumer.out_type, ir.BipolarType)
                and consumer.thresholds.shape[1] == 1 and consumer.base == -1)

    @classmethod
    def stages(cls, node, types, folding, in_n, absorb=None):
        f = (folding or {}).get(node.name)
        if f is None:
            raise FoldingError(f"no folding for layer '{node.name}'")
        pe, simd = f["pe"], f["simd"]
        cls.check(node, types, pe, simd)
        opts = cls.options(node, f)
        t_in, t_out = types[node.inputs[0]], types[node.output]
        out = []
        if isinstance(node, ir.Conv2d):
            # the window generator consumes its input row by row: a FIFO of two rows decouples it
            h, w, c = t_in.shape
            out.append(FIFOKernel(node.name + ":fifo", None, t_in, t_in, simd, simd,
                                  {"depth": max(2, min(h, 2) * w * c // simd)}))
            kk = node.kernel[0] * node.kernel[1]
            period = (t_out.shape[-1] // pe) * (kk * c // simd)   # the MVU's cycles per output pixel
            swg = SWGKernel(node.name + ":swg", node, t_in, None, simd, simd, {"period": period})
            out.append(swg)
            t_in = swg.out_type
        # a Dense needs no FIFO: the MVU's input buffer holds its vector (two banks: any writer)
        if absorb is not None:
            t = np.broadcast_to(absorb.thresholds[:, 0], (t_out.shape[-1],))
            opts.update(acc_type=t_out.dtype, thresholds=np.array(t), fused=absorb.name)
            t_out = types[absorb.output]
        out.append(cls(node.name, node, t_in, t_out, simd, pe, {"pe": pe, "simd": simd, **opts}))
        return out

    @classmethod
    def options(cls, node, f) -> dict:
        """The implementation options of a folding entry, checked (see OPTIONS)."""
        opts = {}
        for k, allowed in OPTIONS.items():
            if k in f and f[k] is not None:
                if f[k] not in allowed:
                    raise FoldingError(f"layer '{node.name}': {k}={f[k]!r} is not one of {list(allowed)}")
                opts[k] = f[k]
        return opts

    # ------------------------------------------------------------ one stage
    @property
    def pe(self):
        return self.extra["pe"]

    @property
    def simd(self):
        return self.extra["simd"]

    @property
    def weight(self) -> np.ndarray:
        if isinstance(self.node, ir.Dense):
            return self.node.weight
        kk = self.node.kernel[0] * self.node.kernel[1]
        return conv_matrix(self.node, self.in_type.shape[-1] // kk)

    @property
    def wtype(self):
        wtype = self.node.wtype
        if getattr(self.node, "groups", 1) > 1 and isinstance(wtype, ir.BipolarType):
            wtype = ir.Int(2, True)      # the expanded grouped matrix has zeros: add/sub/skip lanes
        return wtype

    def build(self):
        e = self.extra
        return MatrixVectorUnit(self.weight, self.wtype, self.in_type.dtype, self.acc_type, self.pe, self.simd,
                                rom_style=e.get("weights", self.default_rom_style()),
                                thresholds=self.thresholds, banks=e.get("banks", 2),
                                ram_style=e.get("ibuf"), mem_reg=e.get("mem_reg", False), rom_bank=e.get("rom_bank"),
                                skip_zero=getattr(self.node, "groups", 1) > 1)

    @property
    def acc_type(self):
        """The accumulator type (the output's, unless a threshold is fused in)."""
        t = self.extra.get("acc_type")
        return t if t is not None else self.out_type.dtype

    @property
    def thresholds(self):
        """One threshold per channel when a bipolar MultiThreshold is fused in (else None)."""
        return self.extra.get("thresholds")

    def default_rom_style(self) -> str:
        """Device-independent default: a shallow weight memory (<= 32 words) in LUTs, else block RAM."""
        return "logic" if self.unit_depth() <= 32 else "block"

    def unit_depth(self) -> int:
        n, k = self.weight.shape
        return (n // self.pe) * (k // self.simd)

    @property
    def cycles(self):
        pixels = self.in_type.size // self.in_type.shape[-1]     # 1 for a Dense, OH*OW for a conv
        return pixels * self.unit.ii

    def frame_times(self, first, last):
        u = self.unit
        if self.in_type.size == self.in_type.shape[-1]:
            # Dense: the buffer's first pass issues each beat the cycle after it is written, so the
            # last beat of the vector is issued at last + 1 and its pass leaves `depth` cycles later
            first = last + 1 + u.depth
            return first, first + (u.nf - 1) * u.sf
        # conv: one vector per pixel; the window generator's `last` already waits for this unit to be
        # free for the last window (SWGKernel.frame_times)
        return first + u.sf + u.depth, last + 1 + u.depth + (u.nf - 1) * u.sf

    def need(self, j, port=0):
        """Input beats output beat j waits for: every beat of its vector (a Dense's, or a conv pixel's window)."""
        return (np.asarray(j) // self.unit.nf + 1) * self.unit.sf

    def resources(self, mem):
        """Counted from what the unit builds (MatrixVectorUnit.structure) with the family's costs."""
        st = self.unit.structure()
        k = st["kind"]
        r = Resources(depth=self.unit.depth)
        pairs = st["first_values"] if k != "select_x" else st["first_values"] - -(-st["simd"] // 2)
        if k == "xnor":
            r.luts += pairs * costs.c(mem, "xnor_pair")
        elif k == "select_x":
            r.luts += st["first_bits"] * costs.c(mem, "select_pair") * (pairs / max(1, st["first_values"]))
        elif k == "select_w":                        # a constant weight: +-c by the input bit, wires
            r.luts += st["varying_lanes"] * st["wbits"] * costs.c(mem, "select_bit") + st["first_add_bits"]
        else:
            per_lane = (st["xbits"] + 1) * costs.c(mem, "ternary_bit") if k == "ternary" else \
                st["wbits"] * st["xbits"] * costs.c(mem, "mul_bit")
            r.luts += st["varying_lanes"] * per_lane + st["first_add_bits"]
            r.luts += st["const_add_lanes"] * st["xbits"] * costs.c(mem, "adder_bit")
        r.luts += st["adder_bits"] * costs.c(mem, "adder_bit") + st["adders"] * costs.c(mem, "adder_carry_out") + \
            st["fix_bits"] * costs.c(mem, "fix_bit")
        abits = max(1, (st["weights"][1] - 1).bit_length())           # the weight address
        r.luts += st["acc_bits"] * costs.c(mem, "acc_bit") + st["counter_bits"] * costs.c(mem, "control")
        if st["zero_table"]:     # skipped zero words: the flag table (a LUT4 per 16 words, its muxes) and counter
            r.luts += 1.5 * math.ceil(st["zero_table"] / 16) + 3 * abits
            r.ffs += 2 * abits + 1
        r.ffs += st["first_bits"] + st["adder_bits"] + st["fix_bits"] + st["acc_bits"] + st["tags"] + st["counter_bits"]
        out_bits = self.pe * (1 if self.thresholds is not None else self.acc_type.bits)
        r.luts += out_bits + 4                                    # the output FIFO: 2 beats, a read mux
        r.ffs += 2 * out_bits + 2
        r.lone_ffs += 2 * out_bits
        r.ffs += st["mem_reg_bits"] + st["pass_bits"] + st["split_rom_bits"]
        # a split LUT-ROM's last select feeds the weight register: that register has a LUT of its own
        w_reg_lone = st["mem_reg_bits"] - (st["rom_live_bits"] if st["split_rom_bits"] else 0)
        r.lone_ffs += w_reg_lone + st["tags"] + st["pass_bits"] + st["adders"] * costs.c(mem, "carry_out_lone")
        e = self.extra
        weights = costs.rom(mem, *st["weights"], e.get("weights", self.default_rom_style()), st["rom_pieces"],
                            st["rom_live_bits"])
        if st["split_rom_bits"]:     # a split LUT-ROM: its distinct pieces and selects (MatrixVectorUnit)
            weights.luts = st["split_rom_pieces"] + st["split_rom_inputs"] * costs.c(mem, "rom_select_input")
        for part in (weights,
                     costs.ram(mem, *st["buffer"], e.get("ibuf")),
                     costs.rom(mem, *(st["starts"] or (0, 0)), "logic", st["start_pieces"])):
            r.add(part)
        # carry chains: the adds of 5 bits or more (the first level's where it adds), fix and accumulators
        carries = st["carry_bits"] + st["fix_bits"] + st["acc_bits"] + (
            st["first_carry_bits"] if k in ("select_w", "ternary", "mul") else 0)
        r.pack_luts += carries * costs.c(mem, "carry_pack")
        if st["starts"]:       # the start ROM is read combinationally: no read register
            r.ffs -= st["starts"][0]
        return r
