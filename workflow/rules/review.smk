rule review:
    input:
        saved_model=f"results/export/{RUN}/saved_model",
        manifests=expand("resources/manifests/{cls}.tsv", cls=CLASSES),
        lists=expand("results/lists/{cls}/{split}.tsv", cls=CLASSES, split=SPLITS),
        signatures=expand("results/signatures/{cls}.tsv", cls=CLASSES),
        handoffs=expand("data/{cls}/.tumbletrain.json", cls=CLASSES),
    output:
        expand("results/review/{cls}/queue.tsv", cls=CLASSES),
    log:
        "logs/review/review.log",
    benchmark:
        "benchmarks/review/review.tsv"
    conda:
        "../../envs/tensorflow.yaml"
    threads: config["train"]["threads"]
    resources:
        **gpu_resources(),
        mem_mb=4000,
        runtime=120,
    params:
        cfg=stage_json("review"),
        # The LabelImg folders the hand-offs mark: the pre-labels and their ledger go
        # where LabelImg saves each image's boxes (not outputs: the user edits them).
        folders=lambda w, input: [Path(h).parent for h in input.handoffs],
        # Each class's pseudo-labels, read by its next annotations run (a param there):
        # not outputs, or the annotations rule would depend on the model it trains.
        pseudo=expand(PSEUDO_LIST, cls=CLASSES),
    shell:
        "python -m tumbletrain.review --config-json {params.cfg} --model {input.saved_model}"
        " --manifests {input.manifests} --lists {input.lists}"
        " --signatures {input.signatures} --labelling {params.folders}"
        " --pseudo {params.pseudo} --queues {output} 2> {log}"
