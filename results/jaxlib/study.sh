#!/usr/bin/env bash
# The jaxlib 0.10.2 deadlock study (issue 16): each reproduction under each setting, TRIES times, killed
# after LIMIT s; one JSON line per try to tries.jsonl.  Run from the checkout after
#   .venv/bin/pip install --no-deps --target "$JAX010" jax==0.10.2 jaxlib==0.10.2
# (jax 0.10.2 put ahead of the venv's 0.9.2 through PYTHONPATH; nothing else changes).
# A: the stratified minibatch estimate's test (a vmap over tens of thousands of keys);
# B: the scale study's amortized chunk on a 2,000-user movielens-synth store;
# C: repro_c.py, K independent batched Cholesky factorizations + triangular solves in one program
#    (LAPACK), seconds when it passes; Cj: the same program written in element-wise jnp ops.
# A setting must hold TRIES of TRIES to be a fix, so with FIRST_HANG_STOPS=1 (the default) a
# (setting, reproduction) stops at its first hang (rc 124): the rest of its tries could not change that.
set -u
JAX010=${JAX010:?set JAX010 to the folder holding jax 0.10.2}
TRIES=${TRIES:-20}; LIMIT=${LIMIT:-240}; OUT=${OUT:-results/jaxlib/tries.jsonl}
A='tests/methods/test_methods.py::test_stratified_minibatch_estimate_is_unbiased[branch]'
B='from hierbench.harness import run_one; r=run_one("amortized","movielens-synth",{"num_users":2000,"layout":"store"},{"head":"potential","batch_groups":256,"max_strata":3},steps=40,chunk_steps=20,checkpoints=1,eval_draws=8,scoring={"eval_segments":2},references=None); print(r["status"], r.get("error"))'
# SETTINGS: the settings to try, ;-separated (default: all four); REPROS: any of A B C Cj (default "A B").
SETTINGS=${SETTINGS:-"default;PJRT_NPROC=1;PJRT_NPROC=4;XLA_FLAGS=--xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"}
REPROS=${REPROS:-"A B"}
FIRST_HANG_STOPS=${FIRST_HANG_STOPS:-1}
IFS=';' read -r -a SETTING_LIST <<< "$SETTINGS"
for setting in "${SETTING_LIST[@]}"; do
  for repro in $REPROS; do
    for i in $(seq 1 "$TRIES"); do
      t0=$(date +%s.%N)
      case "$repro" in
        A) env ${setting/default/HB_NONE=1} PYTHONPATH="$JAX010" timeout "$LIMIT" .venv/bin/python -m pytest -q -p no:cacheprovider -p no:xdist "$A" >/dev/null 2>&1; rc=$? ;;
        B) env ${setting/default/HB_NONE=1} PYTHONPATH="$JAX010" timeout "$LIMIT" .venv/bin/python -c "$B" >/dev/null 2>&1; rc=$? ;;
        C) env ${setting/default/HB_NONE=1} PYTHONPATH="$JAX010" timeout "$LIMIT" .venv/bin/python results/jaxlib/repro_c.py lapack >/dev/null 2>&1; rc=$? ;;
        Cj) env ${setting/default/HB_NONE=1} PYTHONPATH="$JAX010" timeout "$LIMIT" .venv/bin/python results/jaxlib/repro_c.py jnp >/dev/null 2>&1; rc=$? ;;
      esac
      t1=$(date +%s.%N)
      echo "{\"setting\": \"$setting\", \"repro\": \"$repro\", \"try\": $i, \"rc\": $rc, \"wall_s\": $(echo "$t1 - $t0" | bc), \"jax\": \"0.10.2\", \"limit_s\": $LIMIT, \"utc\": \"$(date -u +%FT%TZ)\", \"load1\": $(cut -d' ' -f1 /proc/loadavg)}" >> "$OUT"
      if [ "$rc" = 124 ] && [ "$FIRST_HANG_STOPS" = 1 ]; then break; fi
    done
  done
done
