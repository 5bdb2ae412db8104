#!/usr/bin/env bash
# Copies what resumes or reports a set of long runs from the checkout that trains them into the tree that commits
# them: for every run folder under SRC (a folder holding metrics.csv), its metrics.csv, result.json, params.msgpack,
# stage_times.jsonl and snr_*.json, and, only while the run is unfinished (no result.json), its newest
# checkpoints/<step>/ (replacing the older one). A finished run's checkpoints are removed from DST.
#
#   scripts/copy_resumable_runs.sh /work/campaign/results/ipd/campaign/runs results/ipd/campaign/runs
set -eu
if [ $# -ne 2 ] || [ ! -d "$1" ]; then
  echo "usage: $0 SRC_RUNS_ROOT DST_RUNS_ROOT (SRC must exist)" >&2
  exit 2
fi
src=$1
dst=$2
find "$src" -name metrics.csv -not -path '*/checkpoints/*' | while read -r metrics; do
  run=$(dirname "$metrics")
  out="$dst/${run#"$src"/}"
  mkdir -p "$out"
  for f in metrics.csv result.json params.msgpack stage_times.jsonl; do
    if [ -f "$run/$f" ]; then cp "$run/$f" "$out/$f.tmp" && mv "$out/$f.tmp" "$out/$f"; fi
  done
  cp "$run"/snr_*.json "$out/" 2>/dev/null || true
  finished=false
  [ -f "$run/result.json" ] && finished=true
  newest=$(ls "$run/checkpoints" 2>/dev/null | grep -E '^[0-9]+$' | sort -n | tail -1 || true)
  if $finished; then
    rm -rf "$out/checkpoints"
  elif [ -n "$newest" ]; then
    mkdir -p "$out/checkpoints"
    if [ ! -d "$out/checkpoints/$newest" ]; then
      rm -rf "$out/checkpoints/$newest.tmp"
      cp -r "$run/checkpoints/$newest" "$out/checkpoints/$newest.tmp"
      find "$out/checkpoints" -mindepth 1 -maxdepth 1 -not -name "$newest.tmp" -exec rm -rf {} +
      mv "$out/checkpoints/$newest.tmp" "$out/checkpoints/$newest"
    fi
  fi
done
du -sh "$dst" 2>/dev/null || true
