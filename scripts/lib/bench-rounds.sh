# Shared by bench-vs-etcd and bench-cluster-vs-etcd (sourced, not run):
# measures etcd and concord with the same loads in rounds, alternating which
# goes first, and reports the median of each load's per-round ratios (this
# machine's speed drifts 10-20% within minutes, so one etcd run and one
# concord run can disagree).
#
# The caller sets CONCORD, work, rounds, loads=("name|bench args" ...) and
# title, and defines start_server KIND (etcd|concord), which starts it with
# data under "$work/KIND..." and sets $endpoints and $pids.

declare -A rps ratios

run_rounds() {
  local round order kind l name args out
  for round in $(seq "$rounds"); do
    order="etcd concord"; [ $((round % 2)) == 0 ] && order="concord etcd"
    for kind in $order; do
      rm -rf "$work"/"$kind"*
      start_server "$kind"
      ETCDCTL_API=3 etcdctl --endpoints "$endpoints" put k0000001 "$(head -c 256 /dev/zero | tr '\0' v)" >/dev/null
      for l in "${loads[@]}"; do
        name=${l%%|*}; args=${l#*|}
        # shellcheck disable=SC2086 # the load's arguments are words
        out=$("$CONCORD" bench --endpoints "$endpoints" --json $args)
        rps[$kind.$name.$round]=$(echo "$out" | sed -E 's/.*"rps":([0-9.]+).*/\1/')
        echo "round $round $kind $name: ${rps[$kind.$name.$round]} req/s, p99 $(echo "$out" | sed -E 's/.*"p99_ms":([0-9.]+).*/\1/') ms"
      done
      kill "${pids[@]}"; wait "${pids[@]}" 2>/dev/null || true
    done
    for l in "${loads[@]}"; do
      name=${l%%|*}
      ratios[$name]+=" $(echo "${rps[concord.$name.$round]} / ${rps[etcd.$name.$round]}" | bc -l)"
    done
  done
}

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

report() {
  local l name e c round r
  echo
  printf '%-16s %12s %12s %8s   %s\n' "$title" "etcd (med)" "concord (med)" ratio "per-round ratios"
  for l in "${loads[@]}"; do
    name=${l%%|*}
    e=""; c=""
    for round in $(seq "$rounds"); do e+=" ${rps[etcd.$name.$round]}"; c+=" ${rps[concord.$name.$round]}"; done
    printf '%-16s %12s %12s %7.2fx  ' "$name" "$(echo $e | median)" "$(echo $c | median)" "$(echo "${ratios[$name]}" | median)"
    for r in ${ratios[$name]}; do printf ' %.2f' "$r"; done
    echo
  done
}
