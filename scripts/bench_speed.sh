#!/usr/bin/env bash
# The side-by-side speed measurement of results/speed/README.md: the paper IPD config and the scaled Clean Up config
# (scripts/bench_iteration.py), each with a cold and then a warm compilation cache, for every variant in turn:
#   current         this checkout on the current profile   ($CURRENT_PYTHON, default .venv/bin/python)
#   reverb          this checkout on the reverb profile    ($REVERB_PYTHON, default .venv-reverb/bin/python)
#   current-before  another checkout (BEFORE_SRC, e.g. a `git worktree` of the previous release) on the current
#                   profile, imported through PYTHONPATH
# Usage: [VARIANTS="current reverb"] scripts/bench_speed.sh OUT.jsonl [BEFORE_SRC] [ROUNDS] [FIRST_ROUND]
# Each line of OUT.jsonl is one bench_iteration.py JSON with "variant", "config_name", "cache" and "round" added.
set -euo pipefail
out=${1:?usage: scripts/bench_speed.sh OUT.jsonl [BEFORE_SRC] [ROUNDS]}
before=${2:-}
rounds=${3:-1}
first_round=${4:-1}
repo=$(cd "$(dirname "$0")/.." && pwd)
current_python=${CURRENT_PYTHON:-$repo/.venv/bin/python}
reverb_python=${REVERB_PYTHON:-$repo/.venv-reverb/bin/python}
variants=(current reverb)
[ -n "$before" ] && variants+=(current-before)
[ -n "${VARIANTS:-}" ] && read -r -a variants <<< "$VARIANTS"
cleanup_args=(configs/cleanup_pure_shaping.py 2 meta_batch_size=8 num_inner_episodes=10)  # coala bench's Clean Up
ipd_args=(configs/ipd_pure_shaping.py 3)
mkdir -p "$(dirname "$out")"
for round in $(seq "$first_round" $((first_round + rounds - 1))); do
  for variant in "${variants[@]}"; do
    case $variant in
      current) python=$current_python; src=$repo ;;
      reverb) python=$reverb_python; src=$repo ;;
      current-before) python=$current_python; src=$before ;;
    esac
    cache=$(mktemp -d)
    for config_name in ipd cleanup; do
      if [ "$config_name" = ipd ]; then args=("${ipd_args[@]}"); else args=("${cleanup_args[@]}"); fi
      for state in cold warm; do
        line=$(cd "$repo" && PYTHONPATH=$src COALA_COMPILATION_CACHE=$cache \
          "$python" scripts/bench_iteration.py "${args[@]}" 2>/dev/null | tail -1)
        echo "$line" | "$python" -c "
import json, sys
row = json.loads(sys.stdin.read())
row.update(variant='$variant', config_name='$config_name', cache='$state', round=$round)
print(json.dumps(row))" | tee -a "$out"
      done
    done
    rm -rf "$cache"
  done
done
