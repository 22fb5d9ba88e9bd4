# Data: one job per source downloads, verifies and prepares it into <data_dir>/<source>/ (optrepro.data).
# Paper rules depend on data with `data_marker("cifar10")`. ImageNet comes from config `imagenet_dir`.
from optrepro.data import sources as _data_sources

DATA_DIR = config.get("data_dir", "data")
IMAGENET_DIR = config.get("imagenet_dir")


def data_marker(source):
    """The verified marker of one data source: the file a rule lists as input to depend on that data."""
    _data_sources.get(source)  # an unknown name fails at parse time, listing the valid ones
    return f"{DATA_DIR}/{source}/.verified"


def _data_requirements(wildcards):
    return [data_marker(dep) for dep in _data_sources.get(wildcards.source).requires]


rule data_fetch:
    input:
        _data_requirements,
    output:
        f"{DATA_DIR}/{{source}}/.verified",
    wildcard_constraints:
        source="|".join(_data_sources.downloadable()),
    retries: 3
    resources:
        network=1,
    log:
        f"{DATA_DIR}/logs/{{source}}.log",
    shell:
        "optrepro data fetch {wildcards.source} --root {DATA_DIR:q} > {log:q} 2>&1"


rule imagenet_verify:
    output:
        f"{DATA_DIR}/imagenet/.verified",
    params:
        directory=IMAGENET_DIR if IMAGENET_DIR else "",
    log:
        f"{DATA_DIR}/logs/imagenet.log",
    shell:
        "optrepro data verify-imagenet {params.directory:q} --root {DATA_DIR:q} > {log:q} 2>&1"


rule data:
    # `snakemake data`: download, verify and prepare every data source (and check ImageNet's directory).
    input:
        [data_marker(s) for s in _data_sources.names()],
