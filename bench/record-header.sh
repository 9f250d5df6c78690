#!/usr/bin/env bash
# Appends what a benchmark result needs to be read later: date, machine,
# versions and the command.
set -euo pipefail
out=$1
command=${2:-make bench-scale BENCH_NODES=${BENCH_NODES:-1000} BENCH_SERVICES=${BENCH_SERVICES:-1000} BENCH_PROFILE=${BENCH_PROFILE:-lifted}${BENCH_CHURN:+ BENCH_CHURN=$BENCH_CHURN}}
mkdir -p "$(dirname "$out")"
{
  echo "## $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "- machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -sr)"
  echo "- overcast: $(git rev-parse --short HEAD 2>/dev/null || echo unknown); $(rustc --version)"
  echo "- Go CCM: k8s.io/cloud-provider $(grep 'k8s.io/cloud-provider ' bench/go-ccm/go.mod | awk '{print $2}'); $(go version | awk '{print $3}')"
  echo "- control plane: $(testenv/bin/kube-apiserver --version), etcd $(testenv/bin/etcd --version | sed -n 1p | awk '{print $3}')"
  echo "- command: $command"
  echo
} >> "$out"
