# Stages 3-4: zero-cost proxies for every candidate, scattered over `scoring.shards` jobs that
# share the score cache (Snakemake's scattergather: shard k of n is `{scatteritem}` = "k-of-n";
# `--set-scatter score=N` overrides the count from the command line), gathered into one table,
# then z-scored and ranked by AVG.
# The shard tables are temp(): the cache keeps every score, so deleting the gathered table
# re-runs the shards and they read everything back from the cache.

SCORE_SHARDS = int(config["scoring"]["shards"])
SCORE_CACHE = f"{RESULTS}/cache/scores"
RANK_OUTPUTS = {
    "ranked": f"{RESULTS}/rank/initial.parquet",
    "norm": f"{RESULTS}/rank/normalisation.parquet",
    "spread": f"{RESULTS}/rank/spread.parquet",
}
INFORMATIVENESS = {
    "table": f"{RESULTS}/rank/informativeness.parquet",
    "html": f"{RESULTS}/rank/informativeness.html",
}


scattergather:
    score=SCORE_SHARDS,


rule score_shard:
    """Proxies of every n-th candidate (shard {scatteritem}), through the score cache."""
    input:
        candidates=rules.enumerate_space.output.candidates,
        train_x=rules.data.output.train_x,
        train_y=rules.data.output.train_y,
        stats=rules.data.output.stats,
    output:
        temp(f"{RESULTS}/scores/shards/{{scatteritem}}.parquet"),
    wildcard_constraints:
        scatteritem=r"\d+-of-\d+",
    params:
        code=code_of("score_shard"),
        proxies={**{k: config["proxies"][k] for k in ("names", "batch_size", "seed")},
                 "threads": config["scoring"]["threads"]},
        search_space=config["search_space"],
        device=config["compute"]["device"],
        cache_dir=SCORE_CACHE,
    log:
        log_of("score", "shard_{scatteritem}"),
    benchmark:
        bench_of("score", "shard_{scatteritem}"),
    conda:
        env("torch")
    threads: config["scoring"]["threads"]
    resources:
        **sized("score_shard"),
    script:
        "../scripts/score_shard.py"


rule score_gather:
    """The shard tables in candidate order; compacts the score cache."""
    input:
        candidates=rules.enumerate_space.output.candidates,
        shards=gather.score(f"{RESULTS}/scores/shards/{{scatteritem}}.parquet"),
    output:
        f"{RESULTS}/scores/initial.parquet",
    params:
        code=code_of("score_gather"),
        cache_dir=SCORE_CACHE,
    log:
        log_of("score", "gather"),
    benchmark:
        bench_of("score", "gather"),
    conda:
        env("core")
    threads: 1
    resources:
        **sized("score_gather"),
    script:
        "../scripts/score_gather.py"


rule rank_initial:
    """Per-proxy z-scores (ddof=1) over the initial nets, AVG, rank; normalisation and spread."""
    input:
        candidates=rules.enumerate_space.output.candidates,
        scores=f"{RESULTS}/scores/initial.parquet",
    output:
        **RANK_OUTPUTS,
    params:
        code=code_of("rank"),
        names=config["proxies"]["names"],
        weights=config["proxies"]["weights"],
        ranking=config["ranking"],
    log:
        log_of("rank"),
    benchmark:
        bench_of("rank"),
    conda:
        env("core")
    threads: 1
    resources:
        **sized("rank_initial"),
    script:
        "../scripts/rank.py"


rule proxy_informativeness:
    """Per proxy, the share of its (rank) variance between architectures rather than between
    initialisation seeds: a seeded subset of the candidates scored with several init seeds through
    the score cache (after the gather, so the first seed's scores are cache hits)."""
    input:
        candidates=rules.enumerate_space.output.candidates,
        train_x=rules.data.output.train_x,
        train_y=rules.data.output.train_y,
        stats=rules.data.output.stats,
        scores=f"{RESULTS}/scores/initial.parquet",
    output:
        table=INFORMATIVENESS["table"],
        html=report(INFORMATIVENESS["html"], caption="../report/proxy_informativeness.rst", category="Proxies",
                    labels={"table": "proxy_informativeness"}),
    params:
        code=code_of("informativeness"),
        proxies={**{k: config["proxies"][k] for k in ("names", "batch_size", "seed")},
                 "threads": config["scoring"]["threads"]},
        informativeness=config["proxies"]["informativeness"],
        search_space=config["search_space"],
        device=config["compute"]["device"],
        cache_dir=SCORE_CACHE,
    log:
        log_of("rank", "informativeness"),
    benchmark:
        bench_of("rank", "informativeness"),
    conda:
        env("torch")
    threads: config["scoring"]["threads"]
    resources:
        **sized("proxy_informativeness"),
    script:
        "../scripts/informativeness.py"


ALL_TARGETS.extend(RANK_OUTPUTS.values())
ALL_TARGETS.extend(INFORMATIVENESS.values())
