"""Apply the bundled model's selection rule to `cfm_core evaluate --out-json` results (validation images only).

usage: python scripts/choose_inference_setting.py RESULT.json [...] [--baseline bicubic] [--min-gain DB]
                                                   [--flat FLAT.json ... --flat-tolerance DB [--flat-mean]]
                                                   [--below-swd-of METHOD [--min-swd-margin M]]
                                                   [--flat-fallback] [--prefer swd|flat]

Rule (fixed before the candidates are evaluated; docs/round5-selection-rule.md): a (model, solver, steps, noise
step) setting is eligible when, on *every* downsampling kernel the files hold, its mean PSNR is at least the
baseline's + ``--min-gain`` dB, and — with ``--flat`` — on every kernel of the flat images' files its PSNR is at
least the baseline's − ``--flat-tolerance`` dB, and — with ``--below-swd-of METHOD`` (e.g. the L2 file: the paper's
ordering, in which the regression model may win PSNR but the flow must win the distribution metric) — its SWD
averaged over the kernels is below that model's (whose rows are then a reference, not a candidate; ``METHOD`` may
also be an evaluate JSON file of that model alone, for files in which every model is labelled ``model``). Among the
eligible settings the one with the lowest SWD averaged over the kernels wins. All settings are printed, lowest SWD
first, with their worst-kernel margin, so the choice can be checked by eye. With ``--flat-fallback`` (round 11),
when no setting meets the flat condition, the one with the highest flat margin among those meeting every other
condition is chosen instead. With ``--flat-mean`` (round 12) each ``--flat`` (which may be repeated) is a set of its
own and must hold on its PSNR averaged over the kernels, as the issue's check on the flat test images does;
``--min-swd-margin M`` asks for an SWD at least M below the reference's, and ``--prefer flat`` takes the eligible
setting with the highest flat margin (to 0.01 dB; then the lowest SWD) instead of the lowest SWD. Exit status 1 when no
setting is eligible. Files written before kernels were lists (one kernel, no per-row kernel) are read as one
kernel; with ``--min-gain 0`` and no ``--flat`` this is the round-3/4 rule.
"""
import argparse
import json
import math
import os
import sys
from dataclasses import dataclass, replace

Key = tuple[str, str, int, "int | None"]  # model, solver, steps, noise step


@dataclass(frozen=True)
class Setting:
    model: str
    solver: str
    steps: int
    noise_step: int | None  # None: each model's own (old files)
    psnr: float  # mean over kernels
    swd: float  # mean over kernels
    margin: float  # min over kernels of PSNR − (baseline PSNR + min gain); ≥ 0 passes
    flat_margin: float = math.inf  # min over the flat files' kernels of PSNR − (baseline − tolerance)
    swd_margin: float = math.inf  # the reference model's mean SWD − this setting's; > 0 passes

    min_swd_margin: float = 0.0  # with a reference: how far below it the SWD must be (> 0 when 0)

    @property
    def eligible(self) -> bool:
        swd_ok = self.swd_margin > 0 if self.min_swd_margin == 0 else self.swd_margin >= self.min_swd_margin
        return self.margin >= 0 and self.flat_margin >= 0 and swd_ok and not math.isnan(self.swd)

    def __str__(self) -> str:
        noise = "the model's own noise step" if self.noise_step is None else f"noise step {self.noise_step}"
        flat = "" if self.flat_margin == math.inf else f", flat margin {self.flat_margin:+.2f}"
        ref = "" if self.swd_margin == math.inf else f", SWD below the reference by {self.swd_margin:+.2f}"
        return (f"{self.model} {self.solver}×{self.steps} {noise}: PSNR {self.psnr:.2f} dB, SWD {self.swd:.2f}, "
                f"worst-kernel margin {self.margin:+.2f} dB{flat}{ref}")


def read_rows(paths: list[str], baseline: str) -> tuple[dict[Key, dict[str, tuple[float, float]]], dict[str, float]]:
    """Per setting, {kernel: (PSNR, SWD)}; and the baseline's PSNR per kernel (which must agree across files)."""
    models: dict[Key, dict[str, tuple[float, float]]] = {}
    base: dict[str, set[float]] = {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            result = json.load(f)
        file_noise = result["settings"].get("noise_step")
        for row in result["rows"]:
            kernel = row.get("kernel", "")
            if kernel == "mean":
                continue  # recomputed here from the per-kernel rows
            if row["kind"] == "model":
                noise = row.get("noise_step", file_noise)
                key = (row["method"], row["solver"], row["steps"], noise)
                models.setdefault(key, {})[kernel] = (float(row["psnr"]), float(row["swd"]))
            elif row["method"] == baseline:
                base.setdefault(kernel, set()).add(round(float(row["psnr"]), 6))
    if not base or any(len(v) != 1 for v in base.values()):
        raise ValueError(f"--baseline {baseline}: not found, or different PSNRs for one kernel in the files "
                         f"({', '.join(paths)}): evaluate with --baselines {baseline} on the same images")
    return models, {k: v.pop() for k, v in base.items()}


def _mean_margin(flat_set, key: Key, tolerance: float) -> float:
    """One flat set: the setting's PSNR averaged over the kernels − (the baseline's average − ``tolerance``)."""
    path, models, base = flat_set
    if key not in models:
        raise ValueError(f"{key[0]} {key[1]}×{key[2]} noise {key[3]} is missing from the --flat files {path}")
    if set(models[key]) != set(base):
        raise ValueError(f"{path}: {key[0]} has kernels {sorted(models[key])} but the baseline has {sorted(base)}")
    return (sum(models[key][k][0] - base[k] for k in base) / len(base)) + tolerance


def settings_from(paths: list[str], baseline: str, min_gain: float = 0.0,
                  flat: list[str] | list[list[str]] | None = None,
                  flat_tolerance: float = 0.2, below_swd_of: str | None = None,
                  flat_mean: bool = False, min_swd_margin: float = 0.0) -> list[Setting]:
    models, base = read_rows(paths, baseline)
    if flat and isinstance(flat[0], str):  # one set of files
        flat = [flat]
    flat_models, flat_base = read_rows([f for group in flat for f in group], baseline) if flat and not flat_mean \
        else ({}, {})
    flat_sets = [(", ".join(group), *read_rows(group, baseline)) for group in flat] if flat and flat_mean else []
    reference = math.inf
    if below_swd_of is not None:
        if os.path.isfile(below_swd_of):  # an evaluate JSON of the reference model alone (same images)
            pool, ref_base = read_rows([below_swd_of], baseline)
            if ref_base != base:
                raise ValueError(f"--below-swd-of {below_swd_of}: its {baseline} PSNRs differ from the results' "
                                 "(not the same images)")
            refs = list(pool)
        else:
            pool, refs = models, [key for key in models if key[0] == below_swd_of]
        if len(refs) != 1:
            raise ValueError(f"--below-swd-of {below_swd_of}: {len(refs)} settings of that model in the files, "
                             "need exactly one")
        ref_rows = pool.pop(refs[0])
        reference = sum(s for _, s in ref_rows.values()) / len(ref_rows)
    out = []
    for key, by_kernel in models.items():
        if set(by_kernel) != set(base):
            raise ValueError(f"{key[0]} {key[1]}×{key[2]} noise {key[3]}: kernels {sorted(by_kernel)} but the "
                             f"baseline has {sorted(base)}")
        margin = min(by_kernel[k][0] - base[k] - min_gain for k in base)
        flat_margin = math.inf
        if flat and flat_mean:  # each --flat a set of its own: its mean over kernels, the worst set counts
            flat_margin = min(_mean_margin(flat_set, key, flat_tolerance) for flat_set in flat_sets)
        elif flat:
            if key not in flat_models:
                raise ValueError(f"{key[0]} {key[1]}×{key[2]} noise {key[3]} is missing from the --flat files")
            flat_margin = min(flat_models[key][k][0] - flat_base[k] + flat_tolerance for k in flat_base)
        n = len(by_kernel)
        out.append(Setting(*key, sum(p for p, _ in by_kernel.values()) / n, sum(s for _, s in by_kernel.values()) / n,
                           margin, flat_margin))
        if below_swd_of is not None:
            out[-1] = replace(out[-1], swd_margin=reference - out[-1].swd, min_swd_margin=min_swd_margin)
    return out


def choose(settings: list[Setting], flat_fallback: bool = False, prefer: str = "swd") -> Setting | None:
    """Lowest mean SWD among the eligible settings (``prefer="flat"``: the highest flat margin, to 0.01 dB, then the
    lowest SWD); with ``flat_fallback`` and none eligible, the highest flat margin among those that fail the flat
    condition only; None when there is none."""
    if prefer not in ("swd", "flat"):
        raise ValueError(f"prefer={prefer!r}: use 'swd' or 'flat'")
    rank = (lambda s: s.swd) if prefer == "swd" else (lambda s: (-round(s.flat_margin, 2), s.swd))
    chosen = min((s for s in settings if s.eligible), key=rank, default=None)
    if chosen is None and flat_fallback:
        rest = [s for s in settings if replace(s, flat_margin=0.0).eligible and s.flat_margin != math.inf]
        chosen = max(rest, key=lambda s: s.flat_margin, default=None)
    return chosen


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", nargs="+", help="JSON files written by `python -m cfm_core evaluate --out-json`")
    p.add_argument("--baseline", default="bicubic", help="the plain resize to beat (default bicubic)")
    p.add_argument("--min-gain", type=float, default=0.0, help="dB over the baseline needed on every kernel")
    p.add_argument("--flat", nargs="+", action="append", default=None,
                   help="evaluate JSON files of flat images (same settings); with --flat-mean each --flat is one set "
                        "of images, and may be given more than once")
    p.add_argument("--flat-tolerance", type=float, default=0.2, help="dB the flat images may lose (default 0.2)")
    p.add_argument("--below-swd-of", default=None, metavar="METHOD|JSON",
                   help="a model whose mean SWD an eligible setting must beat: its method label in the results, or "
                        "an evaluate JSON holding that model alone (on the same images)")
    p.add_argument("--flat-fallback", action="store_true",
                   help="when none meets the flat condition: the highest flat margin among those meeting the rest")
    p.add_argument("--flat-mean", action="store_true",
                   help="each --flat is a set of its own, held on its PSNR averaged over the kernels (the issue's "
                        "flat check) instead of on every kernel of the pooled files")
    p.add_argument("--min-swd-margin", type=float, default=0.0,
                   help="with --below-swd-of: how far below the reference's SWD an eligible setting must be "
                        "(default: just below)")
    p.add_argument("--prefer", choices=("swd", "flat"), default="swd",
                   help="among the eligible settings: the lowest SWD (default), or the highest flat margin")
    a = p.parse_args(argv)
    if a.min_swd_margin and a.below_swd_of is None:
        print("error: --min-swd-margin needs --below-swd-of (the reference it is measured from)", file=sys.stderr)
        return 2
    if a.prefer == "flat" and not a.flat:
        print("error: --prefer flat needs --flat (the flat images it ranks by)", file=sys.stderr)
        return 2
    try:
        settings = settings_from(a.results, a.baseline, a.min_gain, a.flat, a.flat_tolerance, a.below_swd_of,
                                 a.flat_mean, a.min_swd_margin)
    except (OSError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for s in sorted(settings, key=lambda s: s.swd):
        print(f"{s}{'' if s.eligible else '  (not eligible)'}")
    chosen = choose(settings, a.flat_fallback, a.prefer)
    if chosen is None:
        print("chosen: none — no setting is eligible")
        return 1
    fallback = "" if chosen.eligible else " (flat fallback: no setting meets the flat condition)"
    print(f"chosen{fallback}: {chosen}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
