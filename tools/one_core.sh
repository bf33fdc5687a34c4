#!/usr/bin/env bash
# Runs a command on a CPU core of its own: tools/one_core.sh CMD [ARGS...]
#
# `make test` and `make test-matrix` run two test processes side by side. Left alone,
# each one's vLLM CPU engines bind OpenMP threads to every core (VLLM_CPU_OMP_THREADS_BIND
# defaults to "auto") and torch starts a thread per core, so on a 2-core machine four
# busy-waiting threads share two cores. Measured on the project's 2-core machine: the
# runner-V1 part alone took 613 s, and 1407 s beside the runner-V2 part.
#
# This takes the first core no other one_core.sh command holds (a lock file per core;
# it waits while all are taken), then runs CMD confined to it (taskset), with vLLM's
# engines bound to it and one torch/OpenMP thread. Processes CMD starts inherit all
# three. The lock is released when CMD exits, even if some child outlives it.
set -uo pipefail

# the cores this process may run on (not always 0..nproc-1)
read -r -a cores < <(python3 -c 'import os; print(*sorted(os.sched_getaffinity(0)))')
dir="${TMPDIR:-/tmp}/ead-vllm-cores-$(id -u)"
mkdir -p "$dir"
while :; do
  for core in "${cores[@]}"; do
    exec {lock}>"$dir/core$core.lock"
    if flock -n "$lock"; then
      # The command runs without the lock's descriptor, so a straggling child cannot
      # keep the core taken after CMD has exited.
      VLLM_CPU_OMP_THREADS_BIND=$core OMP_NUM_THREADS=1 taskset -c "$core" "$@" {lock}>&-
      exit $?
    fi
    exec {lock}>&-
  done
  sleep 1
done
