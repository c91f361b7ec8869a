rule demo:
    output:
        directory(DEMO_DIR),
    log:
        "logs/demo/{cls}.log",
    benchmark:
        "benchmarks/demo/{cls}.tsv"
    conda:
        "../../envs/harvest.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=10,
    params:
        cfg=lambda w: stage_json("demo", w.cls),
    shell:
        "python -m tumbletrain.demo --config-json {params.cfg} --class {wildcards.cls}"
        " --output {output} 2> {log}"


rule harvest:
    input:
        demo=demo_input,
    output:
        manifest="resources/manifests/{cls}.tsv",
        skipped="resources/manifests/{cls}.skipped.tsv",
    log:
        "logs/harvest/{cls}.log",
    benchmark:
        "benchmarks/harvest/{cls}.tsv"
    conda:
        "../../envs/harvest.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=240,
        tumblr_api=lambda w: 1 if class_config(w.cls).tumblr else 0,
    params:
        cfg=lambda w: stage_json("harvest", w.cls),
        demo=lambda w, input: f"--demo-dir {input.demo}" if input.demo else "",
        store=IMAGE_STORE,
        # The Tumblr resume state: not outputs, so that a failed harvest keeps
        # them (Snakemake deletes a failed job's outputs) and the next resumes.
        fetched="resources/manifests/{cls}.fetched.tsv",
        paging="resources/manifests/{cls}.paging.json",
        paging_log="resources/manifests/{cls}.paging.log",
        images=image_state,
    shell:
        "python -m tumbletrain.harvest --config-json {params.cfg} --class {wildcards.cls}"
        " --store {params.store} --manifest {output.manifest} --skipped {output.skipped}"
        " --fetched {params.fetched} --paging {params.paging}"
        " --paging-log {params.paging_log} {params.demo} 2> {log}"


rule label:
    input:
        "resources/manifests/{cls}.tsv",
    output:
        "data/{cls}/.tumbletrain.json",
    log:
        "logs/label/{cls}.log",
    benchmark:
        "benchmarks/label/{cls}.tsv"
    conda:
        "../../envs/harvest.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=30,
    params:
        cfg=lambda w: stage_json("label", w.cls),
        # The LabelImg folder the hand-off file marks.
        folder=output_folder(),
    shell:
        "python -m tumbletrain.labelimg --config-json {params.cfg} --class {wildcards.cls}"
        " --manifest {input} --folder {params.folder} 2> {log}"


rule label_all:
    input:
        expand("data/{cls}/.tumbletrain.json", cls=CLASSES),
