"""Synthesis of the graph-shaped examples with bench/synth.py's flow (YoWASP Yosys + nextpnr): the digits
residual and depthwise-separable nets on the iCEBreaker, ResNet-8 on the ULX3S.

    .venv/bin/python bench/synth_graphs.py                         # the runs below (ResNet-8: long)
    .venv/bin/python bench/synth_graphs.py --runs digits-dwsep:icebreaker
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import synth  # noqa: E402

RUNS = ["digits-resnet:icebreaker", "digits-dwsep:icebreaker", "resnet8:ulx3s", "resnet8-w1a1:ulx3s"]

if __name__ == "__main__":
    if "--runs" not in sys.argv:
        sys.argv += ["--runs", *RUNS]
    if "--out" not in sys.argv:
        sys.argv += ["--out", "build/bench/synth_graphs"]
    sys.exit(synth.main())
