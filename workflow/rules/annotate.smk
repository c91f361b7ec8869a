rule signatures:
    input:
        "resources/manifests/{cls}.tsv",
    output:
        "results/signatures/{cls}.tsv",
    log:
        "logs/signatures/{cls}.log",
    benchmark:
        "benchmarks/signatures/{cls}.tsv"
    conda:
        "../../envs/harvest.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=60,
    params:
        # Kept between runs (a re-run computes only new images'): not an output,
        # which Snakemake would delete before the job.
        cache="resources/cache/signatures/{cls}.tsv",
    shell:
        "python -m tumbletrain.neardup --manifest {input} --output {output}"
        " --cache {params.cache} 2> {log}"


rule annotations:
    input:
        demo_input,
        manifest="resources/manifests/{cls}.tsv",
        signatures=signature_tables,
    output:
        training="results/lists/{cls}/training.tsv",
        verification="results/lists/{cls}/verification.tsv",
        rejected="results/lists/{cls}/rejected.tsv",
        summary="results/lists/{cls}/summary.json",
        whole_image=directory("results/whole_image/{cls}"),
    log:
        "logs/annotations/{cls}.log",
    benchmark:
        "benchmarks/annotations/{cls}.tsv"
    conda:
        "../../envs/harvest.yaml"
    # Up to 2 processes validate a class of 2,000 files or more; a smaller one uses 1.
    # More for a big class: --set-threads annotations=N.
    threads: 2
    resources:
        mem_mb=1000,
        runtime=60,
    params:
        cfg=lambda w: stage_json("annotations", w.cls),
        store=IMAGE_STORE,
        files=annotation_state,
        # Each image's split as of the last run, to report the ones that moved:
        # kept between runs like the signature cache.
        splits="resources/cache/splits/{cls}.tsv",
        # The review's pseudo-labels of the class (when it sets pseudo_labels): a change
        # re-runs the class, as a changed annotation file does.
        pseudo=PSEUDO_LIST,
        pseudo_state=pseudo_state,
    shell:
        "python -m tumbletrain.annotations --config-json {params.cfg} --class {wildcards.cls}"
        " --manifest {input.manifest} --training {output.training}"
        " --verification {output.verification} --rejected {output.rejected}"
        " --summary {output.summary} --whole-image-dir {output.whole_image}"
        " --store {params.store} --processes {threads}"
        " --signatures {input.signatures} --split-memory {params.splits}"
        " --pseudo {params.pseudo} 2> {log}"
