rule checkpoint_download:
    output:
        "resources/checkpoints/{name}/checkpoint.json",
    log:
        "logs/checkpoint_download/{name}.log",
    benchmark:
        "benchmarks/checkpoint_download/{name}.tsv"
    conda:
        "../../envs/tensorflow.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        cfg=stage_json("checkpoint_download"),
        # The download and the extracted checkpoint: not outputs, so that a stopped
        # download resumes.
        folder=output_folder(),
    shell:
        "python -m tumbletrain.model checkpoint --config-json {params.cfg}"
        " --output {output} --output-dir {params.folder} 2> {log}"


rule train:
    input:
        training=expand("results/records/{cls}_training.json", cls=CLASSES),
        validation=expand("results/records/{cls}_verification.json", cls=CLASSES),
        records=training_records() + verification_records(),
        checkpoint=checkpoint_input(),
    output:
        "results/train/{run}/final.json",
    log:
        "logs/train/{run}.log",
    benchmark:
        "benchmarks/train/{run}.tsv"
    conda:
        "../../envs/tensorflow.yaml"
    threads: config["train"]["threads"]
    resources:
        # Several workers: one SLURM job of train.nodes x train.workers tasks.
        **distribute.slurm_resources(CFG.train),
        mem_mb=8000,
        runtime=24 * 60,
    params:
        cfg=stage_json("train"),
        checkpoint=lambda w, input: (
            f"--checkpoint-json {input.checkpoint}" if input.checkpoint else ""
        ),
        # Checkpoints and summaries beside final.json: not outputs, so that a
        # failed run keeps them and the next one resumes.
        model_dir=output_folder(),
        # Several workers: srun starts one training process per task.
        launch=lambda w, output, resources: distribute.launch_prefix(
            CFG.train, resources.get("mpi"), str(Path(output[0]).parent)
        ),
    shell:
        "{params.launch}python -m tumbletrain.model train --config-json {params.cfg}"
        " --training-stats {input.training} --validation-stats {input.validation}"
        " {params.checkpoint} --model-dir {params.model_dir}"
        " --feature-cache resources/cache/features --final {output} 2> {log}"


# `snakemake iterate`: train and evaluate the run, without exporting; for a user
# tuning train.steps and the like (the export costs minutes on every re-run).
rule iterate:
    input:
        f"results/eval/{RUN}/metrics.json",


rule evaluate:
    input:
        final="results/train/{run}/final.json",
        verification=expand("results/records/{cls}_verification.json", cls=CLASSES),
        lists=expand("results/lists/{cls}/verification.tsv", cls=CLASSES),
    output:
        metrics="results/eval/{run}/metrics.json",
        detections="results/eval/{run}/detections.csv",
        pr_curves=report(
            "results/eval/{run}/pr_curves.png",
            category=CATEGORY["evaluation"],
            caption="../report/pr_curves.rst",
        ),
        grid=report(
            "results/eval/{run}/detections.png",
            category=CATEGORY["evaluation"],
            caption="../report/detections.rst",
        ),
    log:
        "logs/evaluate/{run}.log",
    benchmark:
        "benchmarks/evaluate/{run}.tsv"
    conda:
        "../../envs/tensorflow.yaml"
    threads: config["train"]["threads"]
    resources:
        **gpu_resources(),
        mem_mb=4000,
        runtime=120,
    params:
        cfg=stage_json("evaluate"),
    shell:
        "python -m tumbletrain.model evaluate --config-json {params.cfg} --final {input.final}"
        " --verification-stats {input.verification}"
        " --verification-lists {input.lists} --metrics {output.metrics}"
        " --detections {output.detections} --pr-curves {output.pr_curves}"
        " --grid {output.grid} 2> {log}"


rule export:
    input:
        final="results/train/{run}/final.json",
        records=training_records(),
    output:
        summary="results/export/{run}/export.json",
        saved_model=directory("results/export/{run}/saved_model"),
        tflite_float="results/export/{run}/model_float.tflite",
        tflite_int8="results/export/{run}/model_int8.tflite",
        labels="results/export/{run}/labels.txt",
        label_map="results/export/{run}/label_map.pbtxt",
    log:
        "logs/export/{run}.log",
    benchmark:
        "benchmarks/export/{run}.tsv"
    conda:
        "../../envs/tensorflow.yaml"
    threads: config["train"]["threads"]
    resources:
        **gpu_resources(),
        mem_mb=6000,
        runtime=60,
    params:
        cfg=stage_json("export"),
    shell:
        "python -m tumbletrain.model export --config-json {params.cfg} --final {input.final}"
        " --summary {output.summary} --saved-model {output.saved_model}"
        " --tflite-float {output.tflite_float} --tflite-int8 {output.tflite_int8}"
        " --labels {output.labels} --label-map {output.label_map} 2> {log}"


rule predict:
    input:
        export="results/export/{run}/export.json",
        saved_model="results/export/{run}/saved_model",
        images=predict_inputs(),
    output:
        detections="results/predict/{run}/detections.csv",
        images=directory("results/predict/{run}/images"),
        prelabels=directory("results/predict/{run}/prelabels"),
    log:
        "logs/predict/{run}.log",
    benchmark:
        "benchmarks/predict/{run}.tsv"
    conda:
        "../../envs/tensorflow.yaml"
    threads: config["train"]["threads"]
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        cfg=stage_json("predict"),
    shell:
        "python -m tumbletrain.predict --config-json {params.cfg} --model {input.saved_model}"
        " --detections {output.detections} --images {output.images}"
        " --prelabels {output.prelabels} 2> {log}"
