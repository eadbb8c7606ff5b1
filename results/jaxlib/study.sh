#!/usr/bin/env bash
# The jaxlib 0.10.2 deadlock study (issue 16): each reproduction under each setting, TRIES times, killed
# after LIMIT s; one JSON line per try to tries.jsonl.  Run from the checkout after
#   .venv/bin/pip install --no-deps --target "$JAX010" jax==0.10.2 jaxlib==0.10.2
# (jax 0.10.2 put ahead of the venv's 0.9.2 through PYTHONPATH; nothing else changes).
# A: the stratified minibatch estimate's test (a vmap over tens of thousands of keys);
# B: the scale study's amortized chunk on a 2,000-user movielens-synth store.
set -u
JAX010=${JAX010:?set JAX010 to the folder holding jax 0.10.2}
TRIES=${TRIES:-20}; LIMIT=${LIMIT:-240}; OUT=${OUT:-results/jaxlib/tries.jsonl}
A='tests/methods/test_methods.py::test_stratified_minibatch_estimate_is_unbiased[branch]'
B='from hierbench.harness import run_one; r=run_one("amortized","movielens-synth",{"num_users":2000,"layout":"store"},{"head":"potential","batch_groups":256,"max_strata":3},steps=40,chunk_steps=20,checkpoints=1,eval_draws=8,scoring={"eval_segments":2},references=None); print(r["status"], r.get("error"))'
for setting in "default" "PJRT_NPROC=1" "PJRT_NPROC=4" "XLA_FLAGS=--xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"; do
  for repro in A B; do
    for i in $(seq 1 "$TRIES"); do
      t0=$(date +%s.%N)
      if [ "$repro" = A ]; then
        env ${setting/default/HB_NONE=1} PYTHONPATH="$JAX010" timeout "$LIMIT" .venv/bin/python -m pytest -q -p no:cacheprovider -p no:xdist "$A" >/dev/null 2>&1; rc=$?
      else
        env ${setting/default/HB_NONE=1} PYTHONPATH="$JAX010" timeout "$LIMIT" .venv/bin/python -c "$B" >/dev/null 2>&1; rc=$?
      fi
      t1=$(date +%s.%N)
      echo "{\"setting\": \"$setting\", \"repro\": \"$repro\", \"try\": $i, \"rc\": $rc, \"wall_s\": $(echo "$t1 - $t0" | bc), \"jax\": \"0.10.2\", \"limit_s\": $LIMIT}" >> "$OUT"
    done
  done
done
