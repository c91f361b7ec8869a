rule report_data:
    input:
        manifests=expand("resources/manifests/{cls}.tsv", cls=CLASSES),
        summaries=expand("results/lists/{cls}/summary.json", cls=CLASSES),
    output:
        counts=report(
            "results/report/class_counts.png",
            category="Harvest",
            caption="../report/class_counts.rst",
        ),
        validation=report(
            "results/report/validation.png",
            category="Annotations",
            caption="../report/validation.rst",
        ),
        rejected=report(
            "results/report/rejected.html",
            category="Annotations",
            caption="../report/rejected.rst",
        ),
        rejected_tsv="results/report/rejected.tsv",
        near_duplicates=report(
            "results/report/near_duplicates.png",
            category="Annotations",
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
        "python -m tumbletrain.report data --config-json {params.cfg} 2> {log}"


rule report_samples:
    input:
        "results/lists/{cls}/training.tsv",
    output:
        report(
            "results/report/samples_{cls}.png",
            category="Records",
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
        " --class {wildcards.cls} 2> {log}"


rule report_training:
    input:
        "results/train/{run}/final.json",
    output:
        report(
            "results/report/training_{run}.png",
            category="Training",
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
    shell:
        "python -m tumbletrain.report training --config-json {params.cfg}"
        " --run {wildcards.run} 2> {log}"


rule report_evaluation:
    input:
        "results/eval/{run}/metrics.json",
    output:
        ap=report(
            "results/report/ap_per_class_{run}.png",
            category="Evaluation",
            caption="../report/ap_per_class.rst",
        ),
        table=report(
            "results/report/metrics_{run}.html",
            category="Evaluation",
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
        " --run {wildcards.run} 2> {log}"


rule summary:
    input:
        report_figures(),
        lists=expand("results/lists/{cls}/summary.json", cls=CLASSES),
        metrics=f"results/eval/{RUN}/metrics.json",
        export=f"results/export/{RUN}/export.json",
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
    shell:
        "python -m tumbletrain.report summary --config-json {params.cfg}"
        " --output {output} 2> {log}"


rule data_report:
    input:
        data_report_figures(),
