#!/usr/bin/env bash
# Remove what a crashed lab left behind: network namespaces named tr-*, the processes still
# inside them, their /etc/netns/<name> overlays and the lab temp dirs /tmp/tr-*.
#
# Lab names are tr-[<tag>-]<owner pid, base 36>-<4 random chars>[-<role>] (tools/lab/netns.ts).
# A lab whose owner process is still alive is a running test (maybe someone else's): it is
# skipped unless --force. Nothing outside names that start with tr- is touched.
#
# usage: sudo scripts/lab-clean.sh [--dry-run] [--force]
set -euo pipefail

dry=0
force=0
for arg in "$@"; do
  case "$arg" in
    --dry-run|-n) dry=1 ;;
    --force) force=1 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "lab-clean: unknown argument $arg (use --dry-run, --force)" >&2; exit 2 ;;
  esac
done

if [[ $(id -u) -ne 0 ]]; then
  echo "lab-clean: needs root (ip netns del)" >&2
  exit 1
fi

# The owner PID encoded in a lab name, or empty if the name does not have our shape.
owner_pid() {
  local name=$1 rest
  rest=${name#tr-}
  local -a f
  IFS=- read -r -a f <<<"$rest"
  local pid36=""
  # tr-<pid36>-<rand>[-role...] or tr-<tag>-<pid36>-<rand>[-role...]: rand is exactly 4 chars.
  if [[ ${#f[@]} -ge 2 && ${f[1]} =~ ^[0-9a-z]{4}$ && ${f[0]} =~ ^[0-9a-z]{1,6}$ ]]; then
    pid36=${f[0]}
  fi
  if [[ ${#f[@]} -ge 3 && ${f[2]} =~ ^[0-9a-z]{4}$ && ${f[1]} =~ ^[0-9a-z]{1,6}$ && -z $pid36 ]]; then
    pid36=${f[1]}
  fi
  [[ -n $pid36 ]] && echo $((36#$pid36))
  return 0
}

# 0 if the lab's owner is alive (or the name is not ours to judge) and we should keep it.
keep() {
  local name=$1 pid
  pid=$(owner_pid "$name")
  if [[ -z $pid ]]; then
    if [[ $force -eq 1 ]]; then return 1; fi
    echo "skip  $name (name has no owner pid; use --force)"
    return 0
  fi
  if [[ -d /proc/$pid && $force -eq 0 ]]; then
    echo "skip  $name (owner pid $pid is still running; use --force)"
    return 0
  fi
  return 1
}

run() {
  if [[ $dry -eq 1 ]]; then echo "  would: $*"; else "$@"; fi
}

removed=0
while read -r name _; do
  [[ $name == tr-* ]] || continue
  keep "$name" && continue
  pids=$(ip netns pids "$name" 2>/dev/null | tr '\n' ' ' || true)
  if [[ -n ${pids// /} ]]; then
    echo "kill  processes in $name: $pids"
    # shellcheck disable=SC2086
    run kill -TERM $pids 2>/dev/null || true
    [[ $dry -eq 1 ]] || sleep 0.5
    for pid in $pids; do
      if [[ -d /proc/$pid ]]; then run kill -KILL "$pid" 2>/dev/null || true; fi
    done
  fi
  echo "del   netns $name"
  run ip netns del "$name" || echo "lab-clean: could not delete $name" >&2
  if [[ -d /etc/netns/$name ]]; then
    echo "rm    /etc/netns/$name"
    run rm -rf -- "/etc/netns/$name"
  fi
  removed=$((removed + 1))
done < <(ip netns list 2>/dev/null)

# Overlays and temp dirs whose namespace is already gone.
shopt -s nullglob
for dir in /etc/netns/tr-* /tmp/tr-*; do
  [[ -d $dir ]] || continue
  name=$(basename "$dir")
  [[ -e /run/netns/$name ]] && continue
  keep "$name" >/dev/null && continue
  echo "rm    $dir"
  run rm -rf -- "$dir"
  removed=$((removed + 1))
done
if [[ -d /etc/netns ]] && [[ -z $(ls -A /etc/netns) ]]; then
  run rmdir /etc/netns
fi

echo "lab-clean: removed $removed item(s)$([[ $dry -eq 1 ]] && echo ' (dry run)')"
