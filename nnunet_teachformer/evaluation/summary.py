"""Parameters and forward GFLOPs of every architecture, and the teacher/student ratios.

    python -m nnunet_teachformer.evaluation.summary [--channels 2] [--classes 3] [--patch 128 144] [--preset paper]
    python -m nnunet_teachformer.evaluation.summary --dims 2 --channels 3 --classes 2 --patch 384   # PI-CAI's 2D

Counts use ``evaluation.complexity`` (FlopCounterMode on the meta device: no computation, seconds in
all). A patch an architecture cannot take (SwinUNETR needs multiples of 32, so not 144) is shown as
n/a. The paper's targets: students 5-10x fewer parameters and 10-15x fewer GFLOPs than the teachers,
H-DenseFormer Light within 20 % of 1.53M.
"""
import argparse
from typing import Dict, List, Optional, Sequence

from nnunet_teachformer.evaluation.complexity import Complexity, measure_complexity
from nnunet_teachformer.networks.registry import NETWORKS
from nnunet_teachformer.roster import PAPER_TEACHERS, STUDENTS


def summarise(channels: int = 2, classes: int = 3, patches: Sequence[int] = (128, 144),
              preset: str = "paper", dims: int = 3) -> Dict[str, Dict[int, Optional[Complexity]]]:
    """{network key: {patch edge: Complexity, or None when the network cannot take that patch}}; square
    patches and 2D networks with ``dims`` 2 (nnU-Net's 2d configuration), cubes with 3."""
    table = {}
    for key, spec in NETWORKS.items():
        table[key] = {}
        for edge in patches:
            patch = (edge,) * dims
            if spec.patch_problem(patch):
                table[key][edge] = None
                continue
            table[key][edge] = measure_complexity(
                lambda: spec.build(channels, classes, patch, preset=preset), (1, channels, *patch))
    return table


def _fmt(value: Optional[float], digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def format_table(table, patches: Sequence[int], dims: int = 3) -> str:
    header = ["network", "role", "parameters (M)"] + [f"GFLOPs @ {e}^{dims}" for e in patches]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, row in table.items():
        params = next((c.parameters for c in row.values() if c is not None), None)
        lines.append("| " + " | ".join([NETWORKS[key].name, NETWORKS[key].role, _fmt(params and params / 1e6, 2)] +
                                       [_fmt(row[e] and row[e].gflops) for e in patches]) + " |")
    lines += ["", "Teacher / student ratios (parameters; GFLOPs at the first patch size where both run):", "",
              "| teacher | student | parameters | GFLOPs |", "|---|---|---|---|"]
    for t in PAPER_TEACHERS:
        for s in (s for s in STUDENTS if s in table):  # the U-Net students' size is the plans' (docs/trainers.md)
            pt = next(c for c in table[t].values() if c is not None).parameters
            ps = next(c for c in table[s].values() if c is not None).parameters
            both = [e for e in patches if table[t][e] is not None and table[s][e] is not None]
            gflops = f"{table[t][both[0]].gflops / table[s][both[0]].gflops:.1f}x ({both[0]}^{dims})" if both \
                else "n/a"
            lines.append(f"| {NETWORKS[t].name} | {NETWORKS[s].name} | {pt / ps:.1f}x | {gflops} |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=2, help="input modalities (default 2: CT, PET)")
    parser.add_argument("--classes", type=int, default=3, help="output classes incl. background (default 3)")
    parser.add_argument("--patch", type=int, nargs="+", default=[128, 144],
                        help="patch edges: cubes, or squares with --dims 2 (default 128 144)")
    parser.add_argument("--dims", type=int, choices=[2, 3], default=3, help="2: the networks in 2D (default 3)")
    parser.add_argument("--preset", default="paper", help="width preset (paper or tiny)")
    args = parser.parse_args(argv)
    table = summarise(args.channels, args.classes, args.patch, args.preset, args.dims)
    print(f"{args.dims}D, {args.channels} input channels, {args.classes} classes, preset {args.preset}, batch 1, "
          f"1 multiply-add = 2 FLOPs\n")
    print(format_table(table, args.patch, args.dims))


if __name__ == "__main__":
    main()
