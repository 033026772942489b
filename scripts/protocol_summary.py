"""One screen of the protocol's claims from an evaluation folder (``metrics.json`` and
``uncertainty.json``, as ``outputs/eval/`` holds them): each edge's top-1 and its gap closed, the
side-info gain, BCT's backward compatibility, FCT - BCT and chain - direct, with 95% intervals.

    python scripts/protocol_summary.py outputs/eval
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def ci(x: dict) -> str:
    return f"{x['estimate']:+.1f} [{x['ci_low']:+.1f}, {x['ci_high']:+.1f}]"


def summary(folder: Path) -> str:
    m = json.loads((folder / "metrics.json").read_text())
    u = json.loads((folder / "uncertainty.json").read_text())
    lines = [
        "own top-1 / mAP: "
        + ", ".join(f"v{k} {v['top1']:.1f} / {v['mAP']:.1f}" for k, v in m["self"].items())
    ]
    for name, e in u["edges"].items():
        lines.append(
            f"{name:24s} top-1 {e['top1']['mean']:.1f} ± {e['top1']['std']:.1f}  "
            f"gap closed: top-1 {ci(e['gap_closed_top1'])}  mAP {ci(e['gap_closed_mAP'])}"
        )
    for name, s in u["side_info_gain"].items():
        lines.append(f"side-info gain {name}: top-1 {ci(s['top1'])}  mAP {ci(s['mAP'])}")
    for name, s in u["bct_backward"].items():
        lines.append(
            f"BCT {name} new/old - old/old: top-1 {ci(s['new_old_minus_old_old_top1'])}  "
            f"mAP {ci(s['new_old_minus_old_old_mAP'])}"
        )
    for name, s in u["fct_vs_bct"].items():
        lines.append(f"FCT - BCT {name}: top-1 {ci(s['top1'])}")
    for name, s in u["chain_vs_direct"].items():
        lines.append(f"chain {name} - direct: top-1 {ci(s['top1'])}  mAP {ci(s['mAP'])}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(summary(Path(sys.argv[1] if len(sys.argv) > 1 else "outputs/eval")))
