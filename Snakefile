from snakemake.utils import min_version

from tumbletrain import config as tt_config

min_version("9.0")


# A config given with --configfile is the whole config: the demo's
# config/config.yaml is read only when none is given (Snakemake would merge
# the two, and the demo's classes would be trained beside the user's).
if not workflow.overwrite_configfiles:

    configfile: tt_config.checked_file("config/config.yaml")


# The report's landing page.
report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/harvest.smk"
include: "workflow/rules/annotate.smk"
include: "workflow/rules/records.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/review.smk"


rule all:
    default_target: True
    input:
        reportable(all_targets()),


# `tumbletrain predict`: the pre-labels of predict.input with the configured run.
rule prediction:
    input:
        expand(rules.predict.output.detections, run=RUN),


onsuccess:
    print_account()


onerror:
    print_killed(log)
