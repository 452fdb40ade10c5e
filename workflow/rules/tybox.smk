# tybox stage (see docs/ARCHITECTURE.md): self-contained C++ (int8 FE + float classifier that
# learns on the device + ring buffer sized by the memory model), built and checked with
# `make check` (sanitizers, bit-exact against LiteRT), memory predicted vs measured; with
# tybox.target cortex-m4f (the default) also cross-built, linked into the device's regions and run
# under QEMU: the bit-exact check, a learning stream against the numpy reference and the emulated
# instruction counts (target.parquet).


rule tybox:
    input:
        tflite=f"{RESULTS}/compress/{{net}}/fe_int8.tflite",
        classifier=f"{RESULTS}/compress/{{net}}/classifier.keras",
    output:
        src=directory(f"{RESULTS}/tybox/{{net}}/src"),
        memory=f"{RESULTS}/tybox/{{net}}/memory.parquet",
        target=f"{RESULTS}/tybox/{{net}}/target.parquet",
    params:
        code=code_of("tybox"),
        tybox=config["tybox"],
        device=config["device"],
        seed=config["seed"],
    log:
        log_of("tybox", "{net}"),
    benchmark:
        bench_of("tybox", "{net}"),
    conda:
        env("tf")
    priority: _branch_priority("tybox")
    # one core (make -j1): with 2 the job waited for both cores while a training held one, and
    # the chain to the scenarios stalled behind it (the compile itself takes ~10 s)
    threads: 1
    resources:
        **sized("tybox"),
    script:
        "../scripts/tybox.py"


ALL_TARGETS.append(f"{RESULTS}/tybox/C/memory.parquet")
