"""The IPD reproduction campaign's claim table and per-seed curves, from its run folders (finished or not).

    python scripts/campaign_report.py --workdir_root=results/ipd/campaign/runs --out=results/ipd/campaign

Writes OUT/claims.md (paper → here → reproduced?, then the unfinished runs), OUT/claims.json and OUT/campaign.png;
prints the claim table. How each claim is read and judged: `coala_dist/analysis/campaign_report.py`.
"""

from __future__ import annotations

import argparse
import os
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir_root", default="results/ipd/campaign/runs", help="the campaign's run folders")
    parser.add_argument("--out", default="results/ipd/campaign", help="where claims.md/.json and campaign.png go")
    args = parser.parse_args()
    if not os.path.isdir(args.workdir_root):
        print(f"error: --workdir_root={args.workdir_root} is not a folder", file=sys.stderr)
        return 2
    from coala_dist.analysis.campaign_report import write_campaign_report

    write_campaign_report(args.workdir_root, args.out)
    with open(os.path.join(args.out, "claims.md")) as f:
        print(f.read(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
