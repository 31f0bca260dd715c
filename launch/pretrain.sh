#!/usr/bin/env bash
# Data-parallel pretraining under Open MPI's mpirun: one rank per GPU, on one node or several.
#
#   launch/pretrain.sh [-n RANKS] [-H HOSTFILE] [-m "MPIRUN OPTIONS"] -- LAMINA_PRETRAIN_ARGS...
#
#   -n RANKS     total ranks (default: GPUs on this node, from nvidia-smi; 1 without GPUs)
#   -H HOSTFILE  Open MPI hostfile, one "host slots=GPUS" line per node, for several nodes
#   -m "OPTS"    extra mpirun options, e.g. -m "--mca btl_tcp_if_include eth0"
#   everything after -- goes to `lamina pretrain`
#
# Examples:
#   launch/pretrain.sh -n 8 -- --config launch/configs/lamb64k-preln-phase1.json --out runs/lamb64k-preln-phase1
#   launch/pretrain.sh -n 16 -H hosts.txt -- --config launch/configs/lamb64k-preln-phase1.json --out runs/lamb64k-preln-phase1
#
# Each rank selects its GPU from its local rank (dist/bootstrap.cc), so ranks are not bound to
# cores by mpirun (--bind-to none); set LAMINA_BIND=numa to bind each rank to a NUMA domain
# instead. LAMINA_*, NCCL_*, CUDA_VISIBLE_DEVICES, PATH and LD_LIBRARY_PATH are passed to every
# rank; see docs/distributed.md.
set -euo pipefail

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit "${1:-0}"; }

root=$(cd "$(dirname "$0")/.." && pwd)
lamina=${LAMINA_EXE:-$root/build/lamina}
ranks=""
hostfile=""
extra=()
while (($#)); do
  case $1 in
    -n) ranks=$2; shift 2 ;;
    -H) hostfile=$2; shift 2 ;;
    -m) read -r -a more <<<"$2"; extra+=("${more[@]}"); shift 2 ;;
    -h|--help) usage 0 ;;
    --) shift; break ;;
    *) echo "pretrain.sh: unknown option $1 (arguments for lamina go after --)" >&2; usage 2 ;;
  esac
done
[ -x "$lamina" ] || { echo "pretrain.sh: $lamina not found; build first (launch/setup.sh)" >&2; exit 1; }
if [ -z "$ranks" ]; then
  if [ -n "$hostfile" ]; then
    ranks=$(awk '!/^#/ && NF { n = 1; for (i = 2; i <= NF; ++i) if ($i ~ /^slots=/) { sub("slots=", "", $i); n = $i } s += n } END { print s }' "$hostfile")
  elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    ranks=$(nvidia-smi -L | wc -l)
  else
    ranks=1
  fi
fi

mpi=(mpirun -np "$ranks")
[ -n "$hostfile" ] && mpi+=(--hostfile "$hostfile")
# One rank per GPU slot: map by slot so consecutive ranks share a node (local rank = GPU).
mpi+=(--map-by slot)
case ${LAMINA_BIND:-none} in
  none) mpi+=(--bind-to none) ;;
  numa) mpi+=(--bind-to numa) ;;
  *) echo "pretrain.sh: LAMINA_BIND must be none or numa" >&2; exit 2 ;;
esac
[ "$(id -u)" -eq 0 ] && mpi+=(--allow-run-as-root)
# Environment for every rank, on every node.
for name in PATH LD_LIBRARY_PATH CUDA_VISIBLE_DEVICES $(compgen -e | grep -E '^(LAMINA|NCCL)_' || true); do
  [ -n "${!name+x}" ] && mpi+=(-x "$name")
done
mpi+=("${extra[@]}")

echo "pretrain.sh: ${mpi[*]} $lamina pretrain $*" >&2
exec "${mpi[@]}" "$lamina" pretrain "$@"
