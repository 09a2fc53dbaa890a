#!/bin/bash
# Submits an experiment to Slurm: N shards as an array job, then their merge as a job that runs once every
# shard has succeeded. Prints the two job ids.
#
#   deploy/slurm/submit-experiment.sh EXPERIMENT RESULTS N [sbatch options for both jobs...]
#
# EXPERIMENT and RESULTS must be paths every node sees (a shared file system). The merged report is
# RESULTS/merged/report.html. Each shard's log is towntwin-experiment-<array id>_<task>.log in the folder
# sbatch runs in (see experiment.sbatch).
set -euo pipefail
if [ $# -lt 3 ]; then
    echo "usage: $0 EXPERIMENT RESULTS N [sbatch options...]" >&2
    exit 2
fi
experiment=$(realpath "$1")
results=$(realpath -m "$2")
n=$3
shift 3
case "$n" in
'' | *[!0-9]* | 0) echo "$0: N must be a number of shards, 1 or more (got '$n')" >&2; exit 2 ;;
esac
here=$(dirname "$(realpath "$0")")
mkdir -p "$results"
# The jobs take their settings from this environment (a path with a comma could not go in --export=).
export EXPERIMENT="$experiment" RESULTS="$results" SHARDS="$n"
array=$(sbatch --parsable "$@" --array="1-$n" --export=ALL "$here/experiment.sbatch")
array=${array%%;*}
merge=$(sbatch --parsable "$@" --dependency="afterok:$array" --kill-on-invalid-dep=yes --export=ALL "$here/merge.sbatch")
echo "array $array"
echo "merge ${merge%%;*}"
