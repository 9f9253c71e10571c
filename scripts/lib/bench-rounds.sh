# Shared by bench-vs-etcd and bench-cluster-vs-etcd (sourced, not run):
# measures etcd and concord with the same loads in rounds, alternating which
# goes first, and reports the median of each load's per-round ratios (this
# machine's speed drifts 10-20% within minutes, so one etcd run and one
# concord run can disagree). Besides throughput it reports the servers' CPU
# time per request (utime+stime of every server process from /proc, over the
# load), which the loader sharing the cores does not blur.
#
# The caller sets CONCORD, work, rounds, loads=("name|bench args" ...) and
# title, and defines start_server KIND (etcd|concord), which starts it with
# data under "$work/KIND..." and sets $endpoints and $pids.

declare -A rps ratios cpu cpu_ratios

# utime+stime of the server processes, in clock ticks.
cpu_ticks() {
  local t=0 p
  for p in "${pids[@]}"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
  echo "$t"
}

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
        before=$(cpu_ticks)
        # shellcheck disable=SC2086 # the load's arguments are words
        out=$("$CONCORD" bench --endpoints "$endpoints" --json $args)
        ticks=$(($(cpu_ticks) - before))
        rps[$kind.$name.$round]=$(echo "$out" | sed -E 's/.*"rps":([0-9.]+).*/\1/')
        cpu[$kind.$name.$round]=$(echo "$ticks * 1000000 / $(getconf CLK_TCK) / $(echo "$out" | sed -E 's/.*"requests":([0-9]+).*/\1/')" | bc -l)
        printf 'round %s %s %s: %s req/s, p99 %s ms, server CPU %.1f us/req\n' "$round" "$kind" "$name" \
          "${rps[$kind.$name.$round]}" "$(echo "$out" | sed -E 's/.*"p99_ms":([0-9.]+).*/\1/')" "${cpu[$kind.$name.$round]}"
      done
      kill "${pids[@]}"; wait "${pids[@]}" 2>/dev/null || true
    done
    for l in "${loads[@]}"; do
      name=${l%%|*}
      ratios[$name]+=" $(echo "${rps[concord.$name.$round]} / ${rps[etcd.$name.$round]}" | bc -l)"
      cpu_ratios[$name]+=" $(echo "${cpu[concord.$name.$round]} / ${cpu[etcd.$name.$round]}" | bc -l)"
    done
  done
}

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

report() {
  local l name e c round r
  echo
  printf '%-16s %12s %12s %8s %9s   %s\n' "$title" "etcd (med)" "concord (med)" ratio "CPU/req" "per-round ratios (throughput; CPU per request)"
  for l in "${loads[@]}"; do
    name=${l%%|*}
    e=""; c=""
    for round in $(seq "$rounds"); do e+=" ${rps[etcd.$name.$round]}"; c+=" ${rps[concord.$name.$round]}"; done
    printf '%-16s %12s %12s %7.2fx %8.2fx  ' "$name" "$(echo $e | median)" "$(echo $c | median)" \
      "$(echo "${ratios[$name]}" | median)" "$(echo "${cpu_ratios[$name]}" | median)"
    for r in ${ratios[$name]}; do printf ' %.2f' "$r"; done
    printf ';'
    for r in ${cpu_ratios[$name]}; do printf ' %.2f' "$r"; done
    echo
  done
}
