rule report_data:
    input:
        **data_report_inputs(),
    output:
        counts=report(
            "results/report/class_counts.png",
            category=CATEGORY["harvest"],
            caption="../report/class_counts.rst",
        ),
        validation=report(
            "results/report/validation.png",
            category=CATEGORY["annotations"],
            caption="../report/validation.rst",
        ),
        rejected=report(
            "results/report/rejected.html",
            category=CATEGORY["annotations"],
            caption="../report/rejected.rst",
        ),
        rejected_tsv="results/report/rejected.tsv",
        near_duplicates=report(
            "results/report/near_duplicates.png",
            category=CATEGORY["annotations"],
            caption="../report/near_duplicates.rst",
        ),
    log:
        "logs/report_data/report_data.log",
    benchmark:
        "benchmarks/report_data/report_data.tsv"
    conda:
        "../../envs/tensorflow.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        cfg=stage_json("report_data"),
    shell:
        "python -m tumbletrain.report data --config-json {params.cfg}"
        " --summaries {input.summaries} --manifests {input.manifests}"
        " --skipped {input.skipped} --counts {output.counts}"
        " --validation {output.validation} --rejected {output.rejected_tsv}"
        " --rejected-html {output.rejected} --near-duplicates {output.near_duplicates}"
        " 2> {log}"


rule report_samples:
    input:
        "results/lists/{cls}/training.tsv",
    output:
        report(
            "results/report/samples_{cls}.png",
            category=CATEGORY["records"],
            subcategory="{cls}",
            caption="../report/samples.rst",
        ),
    log:
        "logs/report_samples/{cls}.log",
    benchmark:
        "benchmarks/report_samples/{cls}.tsv"
    conda:
        "../../envs/tensorflow.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        cfg=stage_json("report_samples"),
    shell:
        "python -m tumbletrain.report samples --config-json {params.cfg}"
        " --class {wildcards.cls} --list {input} --output {output} 2> {log}"


rule report_training:
    input:
        "results/train/{run}/final.json",
    output:
        report(
            "results/report/training_{run}.png",
            category=CATEGORY["training"],
            caption="../report/training.rst",
        ),
    log:
        "logs/report_training/{run}.log",
    benchmark:
        "benchmarks/report_training/{run}.tsv"
    conda:
        "../../envs/tensorflow.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        cfg=stage_json("report_training"),
        # The TensorBoard event files beside final.json.
        model_dir=lambda w, input: Path(input[0]).parent,
    shell:
        "python -m tumbletrain.report training --config-json {params.cfg}"
        " --run {wildcards.run} --model-dir {params.model_dir} --output {output} 2> {log}"


rule report_evaluation:
    input:
        "results/eval/{run}/metrics.json",
    output:
        ap=report(
            "results/report/ap_per_class_{run}.png",
            category=CATEGORY["evaluation"],
            caption="../report/ap_per_class.rst",
        ),
        table=report(
            "results/report/metrics_{run}.html",
            category=CATEGORY["evaluation"],
            caption="../report/metrics.rst",
        ),
        table_tsv="results/report/metrics_{run}.tsv",
    log:
        "logs/report_evaluation/{run}.log",
    benchmark:
        "benchmarks/report_evaluation/{run}.tsv"
    conda:
        "../../envs/tensorflow.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        cfg=stage_json("report_evaluation"),
    shell:
        "python -m tumbletrain.report evaluation --config-json {params.cfg}"
        " --run {wildcards.run} --metrics {input} --ap {output.ap}"
        " --table {output.table_tsv} --table-html {output.table} 2> {log}"


rule summary:
    input:
        report_figures(),
        **data_report_inputs(),
        **run_outputs(),
    output:
        "results/summary.md",
    log:
        "logs/summary/summary.log",
    benchmark:
        "benchmarks/summary/summary.tsv"
    conda:
        "../../envs/tensorflow.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        cfg=stage_json("summary"),
        run=RUN,
        report=REPORT_HTML,
        configfiles=" ".join(shlex.quote(f) for f in CONFIGFILES),
    shell:
        "python -m tumbletrain.report summary --config-json {params.cfg} --run {params.run}"
        " --summaries {input.summaries} --manifests {input.manifests}"
        " --skipped {input.skipped} --metrics {input.metrics} --final {input.final}"
        " --export {input.export} --report-html {params.report}"
        " --configfiles {params.configfiles} --output {output} 2> {log}"


rule data_report:
    input:
        data_report_figures(),
