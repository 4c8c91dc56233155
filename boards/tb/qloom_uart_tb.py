"""cocotb testbench of the UART board top (boards/top.py) around an emitted accelerator.

Run by qloom.boards.sim (cocotb_tools.runner), config in QLOOM_UART_CONFIG. A
serial-line model drives `rx` and decodes `tx` bit by bit (8N1, `divisor`
cycles per bit); the host driver `Link` (boards/link.py) runs in a thread through cocotb's bridge
and talks to that line as if it were a serial port. Optionally a partial frame
is sent first and abandoned, to check that the idle timeout drops it. Every
result element is compared with the build dir's outputs.npy.
"""
from __future__ import annotations

import collections
import json
import os
import time

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.simtime import get_sim_time
from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge

try:
    from cocotb import bridge, resume
except ImportError:  # pragma: no cover - older spelling
    from cocotb._bridge import bridge, resume

from qloom.boards.link import Link
from qloom.compiler.builddir import open_build_dir


class SimLine:
    """The serial line as a port object: write() queues bytes for rx, read() waits for tx bytes."""

    def __init__(self, dut, divisor, read_timeout_cycles):
        self.dut, self.div, self.timeout = dut, divisor, read_timeout_cycles
        self.to_dut = collections.deque()
        self.from_dut = collections.deque()
        self.sent = self.received = 0

    async def drive(self):
        self.dut.rx.value = 1
        while True:
            if not self.to_dut:
                await RisingEdge(self.dut.clk)
                continue
            byte = self.to_dut.popleft()
            for bit in [0] + [(byte >> i) & 1 for i in range(8)] + [1]:
                self.dut.rx.value = bit
                await ClockCycles(self.dut.clk, self.div)
            self.sent += 1

    async def monitor(self):
        while True:
            await FallingEdge(self.dut.tx)
            await ClockCycles(self.dut.clk, self.div // 2)
            if int(self.dut.tx.value):
                continue                                  # a glitch, not a start bit
            byte = 0
            for i in range(8):
                await ClockCycles(self.dut.clk, self.div)
                byte |= int(self.dut.tx.value) << i
            await ClockCycles(self.dut.clk, self.div)      # stop bit
            self.from_dut.append(byte)
            self.received += 1

    # ---- called from the Link's thread
    def write(self, data):
        self.to_dut.extend(bytes(data))
        return len(data)

    def read(self, n):
        return resume(self._read)(n)

    async def _read(self, n):
        waited = 0
        while len(self.from_dut) < n and waited < self.timeout:
            await ClockCycles(self.dut.clk, self.div)
            waited += self.div
        k = min(n, len(self.from_dut))
        return bytes(self.from_dut.popleft() for _ in range(k))


@cocotb.test()
async def uart_link(dut):
    with open(os.environ["QLOOM_UART_CONFIG"]) as f:
        cfg = json.load(f)
    bd = open_build_dir(cfg["build_dir"], vectors=True)
    manifest = bd.manifest
    n = cfg["frames"]
    x, want = bd.frames(n)

    div = cfg["divisor"]
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    dut.rx.value = 1
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 2)
    line = SimLine(dut, div, cfg["read_timeout_cycles"])
    cocotb.start_soon(line.drive())
    cocotb.start_soon(line.monitor())
    t0 = time.perf_counter()

    if cfg.get("partial_first"):
        link = Link(line, manifest)
        half = link.encode(x[0])[: max(2, len(link.encode(x[0])) // 2)]
        line.write(half)
        while line.to_dut:
            await ClockCycles(dut.clk, div * 10)
        await ClockCycles(dut.clk, cfg["idle_timeout"] + 20 * div)

    link = Link(line, manifest, window=cfg["window"])
    got = await bridge(link.infer)(x)
    await ClockCycles(dut.clk, 20 * div)
    got = np.asarray(got).reshape(want.shape)
    bad = np.argwhere(got != want)
    res = {"frames": n, "ok": len(bad) == 0, "mismatches": int(len(bad)),
           "first_mismatches": [{"frame": int(b[0]), "index": [int(i) for i in b[1:]],
                                 "expected": int(want[tuple(b)]), "got": int(got[tuple(b)])} for b in bad[:5]],
           "bytes_sent": line.sent, "bytes_received": line.received, "skipped": link.skipped,
           "overrun": int(dut.overrun.value), "error": int(dut.error.value),
           "sim_cycles": int(get_sim_time("ns") // 10),
           "seconds": time.perf_counter() - t0}
    with open(cfg["results"], "w") as f:
        json.dump(res, f, indent=1)
    np.save(cfg["got"], got)
    assert res["ok"], f"UART results differ from the reference: {res['first_mismatches']}"
