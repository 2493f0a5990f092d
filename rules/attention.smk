# How the models attend: small tables and arrays derived from the dumps.


rule attention_maps:
    input:
        dump="results/dumps/{model}/{dataset}.h5",
    output:
        maps="results/attention/{model}/{dataset}/maps.npz",
    params:
        code=code_version("attention", "dumps", "tables"),
    conda:
        "../envs/vitscope.yaml"
    log:
        "logs/attention_maps/{model}/{dataset}.log",
    script:
        "../workflow/scripts/attention_maps.py"


rule attention_distance:
    input:
        dump="results/dumps/{model}/{dataset}.h5",
    output:
        table="results/attention/{model}/{dataset}/distance.csv",
    params:
        code=code_version("attention", "dumps", "tables"),
    conda:
        "../envs/vitscope.yaml"
    log:
        "logs/attention_distance/{model}/{dataset}.log",
    script:
        "../workflow/scripts/attention_distance.py"
