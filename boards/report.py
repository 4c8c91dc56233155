"""Terminal reports of synthesis results."""
from __future__ import annotations


def format_report(r: dict) -> str:
    """A terminal table of a synthesize() result."""
    if r["board"] == "generic":
        top = sorted(r["cells_by_type"].items(), key=lambda kv: -kv[1])[:8]
        lines = [f"{r['top']}: generic Yosys synth ({r['out_dir']})",
                 f"  cells        {r['cells']}  ({', '.join(f'{k} {v}' for k, v in top)})",
                 f"  flip-flops   {r['ffs']}",
                 f"  transistors  {r['transistors']}{'' if r['transistors_exact'] else '+'} (stat -tech cmos)",
                 f"  memory bits  {r['memory_bits']} in {r['memories']} memories (turned into gates by synth)",
                 f"  netlist      {r['netlist']}; UART wrapper {r['board_top']}"]
    else:
        cap, est = r["capacity"], r.get("estimate_device") or {}
        lines = [f"{r['top']} on {r['board']} ({r['device']}), {r['out_dir']}",
                 f"  {'resource':<10}{'used':>8}{'available':>11}{'use':>7}{'estimate':>10}"]
        for k in ("luts", "ffs", "brams", "dsps", "io"):
            u, c = r.get(k), cap.get(k)
            pct = f"{100 * u / c:.0f}%" if u is not None and c else "-"
            e = est.get(k, "-") if est else "-"
            lines.append(f"  {k.upper():<10}{u if u is not None else '-':>8}{c:>11}{pct:>7}{e:>10}"
                         + (f"   {r['units'][k]}" if k in r["units"] else ""))
        fm = r.get("fmax_mhz")
        lines.append(f"  Fmax       {fm:.1f} MHz (constraint {r['clock_mhz']:.1f} MHz, "
                     f"{'met' if r['timing_met'] else 'NOT met'})" if fm else "  Fmax       -")
        if r.get("frames_per_second"):
            lines.append(f"  throughput {r['frames_per_second']:.0f} frames/s at Fmax (II {r['ii']} cycles)")
        lines.append(f"  bitstream  {r['bitstream']}")
    s = r.get("seconds", {})
    lines.append("  tools      " + ", ".join(f"{k} {v:.1f} s" for k, v in s.items()))
    lines += [f"  note: {n}" for n in r.get("notes", [])]
    return "\n".join(lines)
