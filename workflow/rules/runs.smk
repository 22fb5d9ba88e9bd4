# The batch rule: one job trains one batch of runs in one process; its only output is the manifest.


rule run_batch:
    output:
        f"{RESULTS}/batches/{{paper}}/{{problem}}/{{batch}}.json",
    input:
        lambda wc: [data_marker(d) for d in batch_info(wc)["datasets"]] + batch_info(wc)["inputs"],
    log:
        f"{RESULTS}/logs/{{paper}}/{{problem}}/{{batch}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{paper}}/{{problem}}/{{batch}}.tsv"
    wildcard_constraints:
        paper="[^/]+",
        problem="[^/]+",
        batch="[^/]+",
    threads: THREADS
    resources:
        gpu_slots=lambda wc: 1 if batch_info(wc)["gpu"] else 0,  # local: runs sharing one GPU (profiles/default)
        gpu=lambda wc: 1 if batch_info(wc)["gpu"] else 0,  # SLURM: a GPU for GPU problems only
        runtime=lambda wc: max(10, int(2 * batch_info(wc)["cost_s"] / 60)),
    shell:
        "OPTREPRO_DATA={DATA:q} HF_HUB_OFFLINE=1 optrepro run --plan {PLAN_CURRENT} --batch {wildcards.paper}/{wildcards.problem}/{wildcards.batch}"
        " --results {RESULTS} --manifest {output} --threads {threads} > {log} 2>&1"
