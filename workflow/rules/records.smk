rule records:
    input:
        "results/lists/{cls}/{split}.tsv",
    output:
        records=record_outputs(),
        stats="results/records/{cls}_{split}.json",
    log:
        "logs/records/{cls}_{split}.log",
    benchmark:
        "benchmarks/records/{cls}_{split}.tsv"
    conda:
        "../../envs/harvest.yaml"
    threads: min(config["records"]["shards"], 8)
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        cfg=lambda w: stage_json("records", w.cls),
    shell:
        "python -m tumbletrain.records write --config-json {params.cfg} --list {input}"
        " --output {output.records} --stats {output.stats} 2> {log}"


rule label_map:
    output:
        pbtxt="results/label_map.pbtxt",
        csv="results/label_map.csv",
    log:
        "logs/label_map/label_map.log",
    benchmark:
        "benchmarks/label_map/label_map.tsv"
    conda:
        "../../envs/harvest.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=10,
    params:
        cfg=stage_json("label_map"),
    shell:
        "python -m tumbletrain.records label-map --config-json {params.cfg}"
        " --pbtxt {output.pbtxt} --csv {output.csv} 2> {log}"
