"""The `tumbletrain` command: Snakemake with this project's checks in front.

Snakemake reads its `--configfile` files before the Snakefile runs, so a
slip there (a target typed after `--configfile`, which takes every name that
follows it; a file that is not there; bad YAML) ends in a traceback that no
Snakefile can word. This command checks the command line and the config
files first, each slip one `ERROR:` line saying what to type instead, then
runs Snakemake in this process with the same arguments. Stage names are
targets too: a stage whose rule runs per class is run `--until` that rule.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from . import cli
from . import config as tt_config

# Stages whose rule has wildcards (one job per class or run): Snakemake takes
# such a rule as a target only through --until.
UNTIL_STAGES = ("harvest", "annotations", "records", "train", "evaluate", "export")
# Stages that are aggregate rules of the Snakefile, or a report.
RULE_STAGES = {"predict": "prediction"}
REPORT_HTML = "results/report.html"
STAGES = (*UNTIL_STAGES, *RULE_STAGES, "report")
# `tumbletrain why`: a dry run told one line per class, without hashes.
WHY = "why"
# The rules in the order data flows through them; the first to re-run says why.
RULE_ORDER = (
    "demo",
    "harvest",
    "signatures",
    "annotations",
    "records",
    "label_map",
    "checkpoint_download",
    "train",
    "evaluate",
    "export",
    "predict",
)
# Snakemake's reasons (the start of each `reason:` part) in words.
REASONS = {
    "Missing output files": "not made yet",
    "Updated input files": "its input files changed",
    "Set of input files has changed": "its input files were added or removed",
    "Code has changed": "the rule's code changed",
    "Software environment definition has changed": "its software environment changed",
    "Forced execution": "forced",
    "Input files updated by another job": "its inputs are re-made first",
    "Job incomplete": "its last run did not finish",
}
# A changed param: each rule's params are its part of the config and, for these,
# the state of the folders it reads.
PARAMS_CHANGED = {
    "harvest": "the images in its folders, or its sources in the config, changed",
    "annotations": "its annotation files, or its part of the config, changed",
}
CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


def _parser():
    from snakemake.cli import get_argument_parser

    return get_argument_parser()


def _looks_like_target(name: str) -> bool:
    return name in STAGES or not name.lower().endswith(CONFIG_SUFFIXES)


def check_configfiles(configfiles: list[str], argv: list[str]) -> None:
    """Each --configfile is a readable, valid config; all of a file's errors at once."""
    for index, name in enumerate(configfiles):
        if index and not Path(name).exists() and _looks_like_target(name):
            misread = configfiles[index:]
            rest = [
                a
                for a in argv
                if a not in configfiles and a not in ("--configfile", "--configfiles")
            ]
            suggestion = " ".join(
                ["tumbletrain", *misread, *rest, "--configfile", *configfiles[:index]]
            )
            raise cli.UserError(
                f"{name!r} after --configfile is read as a config file (--configfile takes "
                f"every name that follows it); put targets first: {suggestion}"
            )
    for name in configfiles:
        if not Path(name).exists():
            raise cli.UserError(
                f"--configfile {name}: no such file; check the path (relative to "
                f"{Path.cwd()}), or start from config/own.example.yaml"
            )
        raw = tt_config.read_file(name)
        messages = tt_config.all_errors(raw, (Path(name),))
        if messages:
            raise tt_config.ConfigError("\nERROR: ".join(messages))


def translate(targets: list[str], dry_run: bool = False) -> tuple[list[str], list[str]]:
    """Stage names among the targets -> (Snakemake targets, extra options).

    `report` runs what the report shows, then writes it; a dry run shows what
    would run for it.
    """
    files, until, extra = [], [], []
    for target in targets:
        if target in UNTIL_STAGES:
            until.append(target)
        elif target in RULE_STAGES:
            files.append(RULE_STAGES[target])
        elif target == "report":
            if not dry_run:
                extra += ["--report", REPORT_HTML, "--report-after-run"]
        else:
            files.append(target)
    if until:
        extra += ["--until", *until]
    return files, extra


def snakemake_argv(argv: list[str]) -> list[str]:
    """The Snakemake command line for ours, after the checks (a slip raises UserError)."""
    args = _parser().parse_args(argv)
    configfiles = [str(f) for f in args.configfile or []]
    try:
        check_configfiles(configfiles, argv)
    except tt_config.ConfigError as error:
        raise cli.UserError(str(error)) from None
    targets = list(args.targets or [])
    if not set(targets) & set(STAGES):
        return argv
    files, extra = translate(targets, dry_run=args.dryrun)
    # Targets are positional: keep the options as given and put the targets first.
    options = list(argv)
    for target in targets:
        options.remove(target)
    return [*files, *options, *extra]


def reason_in_words(rule: str, reason: str) -> str:
    """Snakemake's `reason:` line of a job in words, without the hashes."""
    words = []
    for part in reason.split("; "):
        head = part.split(":")[0].strip()
        if head == "Params have changed since last execution":
            words.append(PARAMS_CHANGED.get(rule, "its part of the config changed"))
        else:
            words.append(REASONS.get(head, head))
    return ", ".join(dict.fromkeys(words))


def planned(dry_run: str) -> list[tuple[str, str, str]]:
    """(rule, wildcards, reason) of each job of a dry run's output."""
    jobs, rule, reason = [], None, ""
    for line in dry_run.splitlines():
        stripped = line.strip()
        if re.match(r"^(local)?rule \w+:$", line):
            if rule:
                jobs.append((rule, "", reason))
            rule, reason = line.split()[1].rstrip(":"), ""
        elif rule and stripped.startswith("reason: "):
            reason = stripped.removeprefix("reason: ")
        elif rule and stripped.startswith("wildcards: "):
            jobs.append((rule, stripped.removeprefix("wildcards: "), reason))
            rule = None
    if rule:
        jobs.append((rule, "", reason))
    return jobs


def explain(jobs: list[tuple[str, str, str]]) -> list[str]:
    """One line per class (and per run) on what would re-run and why."""
    order = {rule: index for index, rule in enumerate(RULE_ORDER)}
    groups: dict[str, list[tuple[str, str]]] = {}
    for rule, wildcards, reason in jobs:
        found = re.search(r"\b(cls|run)=([^,]+)", wildcards)
        key = f"{'model ' if found and found[1] == 'run' else ''}{found[2]}" if found else ""
        if rule in order:
            groups.setdefault(key, []).append((rule, reason))
    if not groups:
        return ["nothing would run: everything is up to date"]
    lines = []
    # Classes (by name), then the jobs of every class, then the model's.
    kinds = sorted(groups, key=lambda k: (k.startswith("model "), k == "", k))
    for key in kinds:
        steps = groups[key]
        steps.sort(key=lambda step: order[step[0]])
        rules = list(dict.fromkeys(rule for rule, _ in steps))
        first_rule, first_reason = steps[0]
        because = f"{first_rule}: {reason_in_words(first_rule, first_reason)}"
        lines.append(f"{key or 'all classes'}: {', '.join(rules)} would run ({because})")
    return lines


def why(argv: list[str]) -> int:
    """`tumbletrain why`: Snakemake's dry run, one line per class."""
    import subprocess

    command = [sys.executable, "-m", "snakemake", "-n", *[a for a in argv if a != WHY]]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.stderr.write(result.stderr)
        sys.stdout.write(result.stdout)
        return result.returncode
    # The workflow's own warnings (settings that cannot learn) stay on the terminal.
    for line in result.stderr.splitlines():
        if line.startswith("WARNING: "):
            print(line, file=sys.stderr)
    print("\n".join(explain(planned(result.stdout))))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        command = snakemake_argv([a for a in argv if a != WHY])
        if WHY in argv:
            return why(command)
    except cli.UserError as error:
        print(f"ERROR: {error}", file=sys.stderr, flush=True)
        return 1
    from snakemake.cli import main as snakemake_main

    sys.argv = ["snakemake", *command]
    return snakemake_main(command)


if __name__ == "__main__":
    sys.exit(main())
