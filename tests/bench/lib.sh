#!/usr/bin/env bash
# Helpers shared by the benchmarks; source it. `times` maps a name to the
# space-separated wall times of its runs.
declare -gA times rss

# median "1.2 1.0 1.5 " -> 1.2
median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# row LABEL OURS REF TARGET: one result line, ratio of the medians.
row() {
    local o r
    o=$(median "${times[$2]}")
    r=$(median "${times[$3]}")
    printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$o" "$r" "$(awk -v a="$o" -v b="$r" 'BEGIN {printf "%.2f", a / b}')" "$4"
}

# time_cmd NAME CMD...: run CMD (output discarded), add its wall time to
# times[NAME] and keep its peak RSS (KiB) in rss[NAME]. Needs $work.
time_cmd() {
    local name=$1 t m
    shift
    /usr/bin/time -f '%e %M' -o "${work:?}/time" "$@" >/dev/null 2>"${work:?}/stderr" || {
        cat "${work:?}/stderr" >&2
        return 1
    }
    read -r t m <"${work:?}/time"
    times[$name]+="$t "
    rss[$name]=$(( ${rss[$name]:-0} > m ? ${rss[$name]:-0} : m ))
}
