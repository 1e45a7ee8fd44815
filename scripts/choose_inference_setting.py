"""Apply the bundled model's selection rule to `cfm_core evaluate --out-json` results (validation images only).

usage: python scripts/choose_inference_setting.py RESULT.json [RESULT.json ...] [--baseline bicubic]

Rule (fixed before the candidates are evaluated, see the README): among every (model, solver, steps, noise step)
row whose mean PSNR is at least the baseline's, take the one with the lowest mean SWD. All rows are printed,
lowest SWD first, so the choice can be checked by eye. Exit status 1 when no row reaches the baseline's PSNR.
"""
import argparse
import json
import math
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Setting:
    model: str
    solver: str
    steps: int
    noise_step: int | None  # None: each model's own
    psnr: float
    swd: float

    def __str__(self) -> str:
        noise = "the model's own noise step" if self.noise_step is None else f"noise step {self.noise_step}"
        return f"{self.model} {self.solver}×{self.steps} {noise}: PSNR {self.psnr:.2f} dB, SWD {self.swd:.2f}"


def read_results(paths: list[str], baseline: str) -> tuple[list[Setting], float]:
    """Model rows of all files, and the baseline's PSNR (which must be the same in every file)."""
    settings, baseline_psnr = [], set()
    for path in paths:
        with open(path, encoding="utf-8") as f:
            result = json.load(f)
        noise_step = result["settings"].get("noise_step")
        for row in result["rows"]:
            if row["kind"] == "model":
                settings.append(Setting(row["method"], row["solver"], row["steps"], noise_step,
                                        float(row["psnr"]), float(row["swd"])))
            elif row["method"] == baseline:
                baseline_psnr.add(round(float(row["psnr"]), 6))
    if len(baseline_psnr) != 1:
        raise ValueError(f"--baseline {baseline}: found {len(baseline_psnr)} different PSNRs in the files "
                         "(0 = not evaluated; several = different images): evaluate with --baselines "
                         f"{baseline} on the same images")
    return settings, baseline_psnr.pop()


def choose(settings: list[Setting], baseline_psnr: float) -> Setting | None:
    """Lowest SWD among the settings with PSNR ≥ the baseline's; None when there is none."""
    eligible = [s for s in settings if s.psnr >= baseline_psnr and not math.isnan(s.swd)]
    return min(eligible, key=lambda s: s.swd, default=None)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", nargs="+", help="JSON files written by `python -m cfm_core evaluate --out-json`")
    p.add_argument("--baseline", default="bicubic", help="the plain resize whose PSNR must be reached")
    a = p.parse_args(argv)
    try:
        settings, baseline_psnr = read_results(a.results, a.baseline)
    except (OSError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{a.baseline}: PSNR {baseline_psnr:.2f} dB")
    for s in sorted(settings, key=lambda s: s.swd):
        mark = "" if s.psnr >= baseline_psnr else f"  (below {a.baseline})"
        print(f"{s}{mark}")
    chosen = choose(settings, baseline_psnr)
    if chosen is None:
        print(f"chosen: none — no setting reaches {a.baseline}'s PSNR")
        return 1
    print(f"chosen: {chosen}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
