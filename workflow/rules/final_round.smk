# Stage 5b: the short-training final round (tinyevo.train.final_round). The top-k distinct nets
# of the evolution history (C: feasible, NC: trainable within final_round.nc_limits) are trained
# briefly with successive halving; C / NC are the finalists with the best validation accuracy.
# Static DAG sized from the config: round r has FINAL_SLOTS[r] slot jobs (k, then ceil(. * keep));
# a slot beyond the real candidates writes an empty row. The state files (fit checkpoints that
# the next round continues) are temp(). results/evolution/choice.parquet (the arch of C and NC
# that rule `train` trains) exists for k = 0 too: then it holds the zero-cost winners.

from tinyevo.train.final_round import path_patterns as _final_paths
from tinyevo.train.final_round import round_slots as _round_slots
from tinyevo.train.final_round import slot_inputs as _final_slot_inputs

FINAL = config["final_round"]
FINAL_DIR = f"{EVO_DIR}/final"
FINAL_PATHS = _final_paths(FINAL_DIR)
FINAL_EPOCHS = list(FINAL["epochs"])
FINAL_NETS = list(FINAL["nets"]) if FINAL["k"] > 0 else []
FINAL_SLOTS = _round_slots(FINAL["k"], FINAL_EPOCHS, FINAL["keep"])
FINAL_SEED = config["seed"] if FINAL["seed"] is None else FINAL["seed"]
FINAL_OUTPUTS = {"finalists": f"{EVO_DIR}/finalists.parquet", "choice": f"{EVO_DIR}/choice.parquet",
                 "plot": f"{EVO_DIR}/plots/final_round.png"}
# Report tables (merged into REPORT_TABLES by report.smk): name -> (category, table, caption).
FINAL_ROUND_TABLES = {
    "evolution_choice": ("Evolution", FINAL_OUTPUTS["choice"],
                         "The nets handed on to training: C (constrained) and NC (unconstrained), with "
                         "source final_round (the short-training winner and its validation accuracy), "
                         "final_round_C (NC without a round of its own: C's winner, whose pool lies inside "
                         "NC's) or zero_cost (the evolution's best score, final_round.k = 0)."),
    **({"evolution_finalists": ("Evolution", FINAL_OUTPUTS["finalists"],
                                "The short-training final round: one row per net, round and candidate "
                                "(zero-cost score, params, MACs, epochs trained so far, validation and "
                                "running training accuracy, seconds), whether it survived the round's cut "
                                "and which one was chosen.")} if FINAL_NETS else {}),
}


rule final_round_candidates:
    """Zero-cost preselection: the top-k distinct nets of the evolution history for {net}."""
    input:
        history=f"{EVO_DIR}/history.parquet",
    output:
        FINAL_PATHS["candidates"],
    wildcard_constraints:
        net="C|NC",
    params:
        code=code_of("final_candidates"),
        k=FINAL["k"],
        nc_limits=FINAL["nc_limits"],
        constraints=config["constraints"],
        min_distance=FINAL["min_distance"],
        search_space=config["search_space"],
        selection=config["selection"],
    log:
        log_of("final_round", "{net}_candidates"),
    benchmark:
        bench_of("final_round", "{net}_candidates"),
    conda:
        env("core")
    threads: 1
    resources:
        **sized("final_round_candidates"),
    script:
        "../scripts/final_candidates.py"


rule final_round_train:
    """Train slot {slot} of round {round} of {net} (the slot-th candidate / survivor) on the
    train split and measure it on the validation split."""
    input:
        unpack(lambda wc: _final_slot_inputs(FINAL_DIR, wc.net, int(wc.round), FINAL_SLOTS)),
        data=data_inputs("train", "val"),
    output:
        row=FINAL_PATHS["row"],
        state=temp(FINAL_PATHS["state"]),
    wildcard_constraints:
        net="C|NC",
        round=r"\d+",
        slot=r"\d+",
    params:
        code=code_of("final_train"),
        k=FINAL["k"],
        epochs=FINAL_EPOCHS,
        keep=FINAL["keep"],
        train=_train_settings(sum(FINAL_EPOCHS), FINAL_SEED),
        search_space=config["search_space"],
        device=config["compute"]["device"],
        amp=config["compute"]["amp"],
        threads=config["train"]["threads"],
    log:
        log_of("final_round", "{net}_round{round}_slot{slot}"),
    benchmark:
        bench_of("final_round", "{net}_round{round}_slot{slot}"),
    conda:
        env("torch")
    threads: config["train"]["threads"]
    resources:
        gpu=_train_gpu(),
        **sized("final_round_train"),
    script:
        "../scripts/final_train.py"


rule final_round_gather:
    """The slot rows of round {round} of {net}, in slot order."""
    input:
        lambda wc: [FINAL_PATHS["row"].format(net=wc.net, round=wc.round, slot=j)
                    for j in range(FINAL_SLOTS[int(wc.round)])],
    output:
        FINAL_PATHS["round"],
    wildcard_constraints:
        net="C|NC",
        round=r"\d+",
    params:
        code=code_of("final_gather"),
    log:
        log_of("final_round", "{net}_round{round}"),
    benchmark:
        bench_of("final_round", "{net}_round{round}"),
    conda:
        env("core")
    threads: 1
    resources:
        **sized("final_round_gather"),
    script:
        "../scripts/final_gather.py"


rule final_round_choice:
    """Finalists of every round and the choice of C and NC (the zero-cost winners for the nets
    without a final round)."""
    input:
        selected=f"{EVO_DIR}/selected.parquet",
        history=f"{EVO_DIR}/history.parquet",
        candidates=[FINAL_PATHS["candidates"].format(net=n) for n in FINAL_NETS],
        rounds=[FINAL_PATHS["round"].format(net=n, round=r) for n in FINAL_NETS for r in range(len(FINAL_EPOCHS))],
    output:
        finalists=FINAL_OUTPUTS["finalists"],
        choice=FINAL_OUTPUTS["choice"],
    params:
        code=code_of("final_choice"),
        nets=FINAL_NETS,
        rounds=len(FINAL_EPOCHS),
        keep=FINAL["keep"],
        nc_limits=FINAL["nc_limits"],
        selection=config["selection"],
    log:
        log_of("final_round", "choice"),
    benchmark:
        bench_of("final_round", "choice"),
    conda:
        env("core")
    threads: 1
    resources:
        **sized("final_round_choice"),
    script:
        "../scripts/final_choice.py"


rule plot_final_round:
    """Validation accuracy per round of every finalist, the chosen one highlighted."""
    input:
        finalists=FINAL_OUTPUTS["finalists"],
    output:
        report(FINAL_OUTPUTS["plot"], caption="../report/final_round.rst", category="Evolution"),
    params:
        code=code_of("final_plot"),
        style=config["report"]["style"],
        dpi=config["report"]["dpi"],
    log:
        log_of("final_round", "plot"),
    benchmark:
        bench_of("final_round", "plot"),
    conda:
        env("core")
    threads: 1
    resources:
        **sized("plot_final_round"),
    script:
        "../scripts/final_plot.py"


localrules:
    final_round_candidates,
    final_round_gather,
    final_round_choice,
    plot_final_round,


ALL_TARGETS.append(FINAL_OUTPUTS["choice"])
if FINAL_NETS:
    ALL_TARGETS.extend([FINAL_OUTPUTS["finalists"], FINAL_OUTPUTS["plot"]])
