#!/bin/bash
# Submits a load to Slurm: N generators as an array job that start at one agreed instant, then their merge
# as a job that runs once every generator has ended. Prints the agreed start and the two job ids.
#
#   deploy/slurm/submit-load.sh PROFILE BROKER STORE RESULTS N [sbatch options for both jobs...]
#
# The core under test runs on its own before this (on its machine: `towntwin core --broker BROKER --db
# STORE --order minutes ...`, the command a generator prints). PROFILE, RESULTS and a SQLite STORE must be
# paths every node sees. The generators start LEAD_SECONDS (default 60) after submission: long enough for
# every task to be scheduled, generate the traffic and connect. The merged report is RESULTS/merged/report.md.
set -euo pipefail
if [ $# -lt 5 ]; then
    echo "usage: $0 PROFILE BROKER STORE RESULTS N [sbatch options...]" >&2
    exit 2
fi
profile=$(realpath "$1")
broker=$2
store=$3
results=$(realpath -m "$4")
n=$5
shift 5
if ! [[ "$n" =~ ^[1-9][0-9]*$ ]]; then
    echo "$0: N must be a number of generators, 1 or more (got '$n')" >&2
    exit 2
fi
case "$store" in
postgres://* | postgresql://*) ;;
*) store=$(realpath -m "$store") ;;
esac
lead=${LEAD_SECONDS:-60}
if ! [[ "$lead" =~ ^[0-9]+$ ]]; then
    echo "$0: LEAD_SECONDS must be a number of seconds (got '$lead')" >&2
    exit 2
fi
here=$(dirname "$(realpath "$0")")
mkdir -p "$results"
start_at=$(( $(date +%s%3N) + lead * 1000 ))
# The jobs take their settings from this environment (a path with a comma could not go in --export=).
export PROFILE="$profile" BROKER="$broker" STORE="$store" RESULTS="$results" GENERATORS="$n" START_AT="$start_at"
array=$(sbatch --parsable "$@" --array="1-$n" --export=ALL "$here/load-generator.sbatch")
array=${array%%;*}
merge=$(sbatch --parsable "$@" --dependency="afterany:$array" --export=ALL "$here/load-merge.sbatch")
echo "start $start_at"
echo "array $array"
echo "merge ${merge%%;*}"
