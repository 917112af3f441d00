#!/usr/bin/env bash
# pgbackup and verify-backup against the commands they replace, side by
# side in one run, on a database with an application's shape: sixteen
# tables of realistic rows, a few large and many small, each with a
# primary key and two indexes (bench_many_tables), BENCH_MIB in all. The
# default is 1 GiB; BENCH_MIB=10240 RUNS=1 is the large-database run of
# docs/backup-restore.md (about 40 GB free under BENCH_DIR, an hour).
#
# Prints: name<TAB>ours_s<TAB>ref_s<TAB>ratio<TAB>target  (medians of RUNS)
# Env: BENCH_MIB (default 1024), RUNS (default 3), BENCH_DIR, BENCH_ONLY
#      (restore: only the restore rows, the slow part of a large run).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=tests/bench/lib.sh
source "$here/lib.sh"
# shellcheck source=scripts/lib/throwaway-pg.sh
source "$repo/scripts/lib/throwaway-pg.sh"

mib=${BENCH_MIB:-1024}
only=${BENCH_ONLY:-}
[[ -z "$only" || "$only" == restore ]] || { echo "BENCH_ONLY=$only: only 'restore' is known" >&2; exit 2; }
runs=${RUNS:-3}
work=${BENCH_DIR:-$(mktemp -d /var/tmp/opskit-bench.XXXXXX)}
pgbackup="$repo/target/release/pgbackup"
verify="$repo/target/release/verify-backup"
[[ -x "$pgbackup" && -x "$verify" ]] || { echo "build first: make build" >&2; exit 1; }

chmod 0755 "$work"
bench_signing "$repo/target/release" "$work"
cleanup() { pg_throwaway_stop; rm -rf "$work"; }
pg_throwaway_start "$work/pg"
trap cleanup EXIT
db=bench
bench_many_tables "$db" "$mib"
out="$work/out"

export PATH="$PG_BINDIR:$PATH"
# An age key for the encrypted sets (the identity is used by verify only).
age-keygen -o "$work/bench.key" 2>/dev/null
recipient=$(age-keygen -y "$work/bench.key")
if [[ -z "$only" ]]; then
    # Warm the cache once so no contender pays for the first read.
    pg_dump -Fc -Z0 -d "$db" >/dev/null
    for ((i = 1; i <= runs; i++)); do
        echo "run $i/$runs" >&2
        fresh_time_cmd pg_dump_fc pg_dump -Fc -d "$db" -f "$out/f.dump"
        fc_bytes=$(stat -c %s "$out/f.dump")
        fresh_time_cmd pgbackup "$pgbackup" -q --dest "$out" --db "postgresql:///$db" --compress gzip
        set_bytes=$(stat -c %s "$out"/bench-*/db.dump.gz)
        fresh_time_cmd oneliner bash -o pipefail -c "pg_dump -d '$db' | gzip > '$out/f.sql.gz' && sha256sum '$out/f.sql.gz'"
        fresh_time_cmd pg_dump_z0 pg_dump -Fc -Z0 -d "$db" -f "$out/f.dump"
        fresh_time_cmd pgbackup_z0 "$pgbackup" -q --dest "$out" --db "postgresql:///$db" --compress 0
        fresh_time_cmd pgbackup_zstd "$pgbackup" -q --dest "$out" --db "postgresql:///$db" --compress zstd
        zstd_bytes=$(stat -c %s "$out"/bench-*/db.dump.zst)
        fresh_time_cmd pgbackup_age "$pgbackup" -q --dest "$out" --db "postgresql:///$db" --compress zstd \
            --encrypt-to "$recipient"
    done

    # Base sets: pgbackup --physical (zstd level 1, hashed, signed, the WAL
    # it needs fetched) against pg_basebackup's tar through zstd at the same
    # level on both cores.
    for ((i = 1; i <= runs; i++)); do
        echo "base run $i/$runs" >&2
        fresh_time_cmd physical "$pgbackup" -q --physical --dest "$out" --db "postgresql:///$db"
        base_bytes=$(du -sb "$out"/bench-* | cut -f1)
        fresh_time_cmd basebackup_zstd bash -o pipefail -c \
            "pg_basebackup -Ft -X fetch -c fast -D - -d 'dbname=$db' | zstd -q -1 -T2 >'$out/base.tar.zst'"
        bb_bytes=$(stat -c %s "$out/base.tar.zst")
    done
    rm -rf "$out"
fi

# kept_set DIR CODEC [ARGS]: one set made for the verify runs; prints its path.
kept_set() {
    "$pgbackup" -q --dest "$1" --db "postgresql:///$db" --row-counts --compress "$2" "${@:3}" >/dev/null
    find "$1" -mindepth 1 -maxdepth 1 -name 'bench-*' | head -n1
}

if [[ -z "$only" ]]; then
    # verify-backup on one set, against sha256sum + gzip -t and gzip -t alone.
    set_dir=$(kept_set "$work/keep" gzip)
    dumpfile="$set_dir/db.dump.gz"
    # warm the page cache for the set
    cat "$dumpfile" >/dev/null
    for ((i = 1; i <= runs; i++)); do
        echo "verify run $i/$runs" >&2
        fresh_time_cmd verify "$verify" -q "$set_dir"
        fresh_time_cmd sha_gzip bash -c "sha256sum '$dumpfile' && gzip -t '$dumpfile'"
        fresh_time_cmd gzip_t gzip -t "$dumpfile"
    done
fi
# The same for a zstd set, against sha256sum + zstd -t.
zset_dir=$(kept_set "$work/zkeep" zstd)
zfile="$zset_dir/db.dump.zst"
cat "$zfile" >/dev/null
if [[ -z "$only" ]]; then
    for ((i = 1; i <= runs; i++)); do
        fresh_time_cmd verify_zstd "$verify" -q "$zset_dir"
        fresh_time_cmd sha_zstd bash -c "sha256sum '$zfile' && zstd -tq '$zfile'"
    done
    # The same zstd set encrypted: verify-backup with the identity against the
    # unencrypted set, and against sha256sum + age -d | zstd -t.
    aset_dir=$(kept_set "$work/akeep" zstd --encrypt-to "$recipient")
    afile="$aset_dir/db.dump.zst.age"
    cat "$afile" >/dev/null
    for ((i = 1; i <= runs; i++)); do
        fresh_time_cmd verify_zstd2 "$verify" -q "$zset_dir"
        fresh_time_cmd verify_age "$verify" -q --identity "$work/bench.key" "$aset_dir"
        fresh_time_cmd sha_age_zstd bash -o pipefail -c "sha256sum '$afile' && age -d -i '$work/bench.key' '$afile' | zstd -tq"
    done
fi
# Restores of the zstd set (pgbackup's default): verify-backup
# --restore-into with --jobs 2 (a copy in scratch, then pg_restore -j 2)
# and --jobs 1 (streamed), each whole (the set read and checked, the
# restore, every table counted) and its restore alone (the record's
# restore check: the copy and pg_restore); against pg_restore -j 2 from a
# plain -Fc file on the same disk and the one-liner stream.
pg_dump -Fc -d "$db" -f "$work/plain.dump"
restore_only() { # NAME: the restore check's seconds of the last run's records
    times[$1]+="$(sed -n 's/.*"detail":"restored in \([0-9.]*\)s.*/\1/p' "$work/restore.ndjson" | head -n1) "
}
for ((i = 1; i <= runs; i++)); do
    echo "restore run $i/$runs" >&2
    for j in 2 1; do
        time_cmd "restore_test_j$j" bash -c '"$@" >"'"$work"'/restore.ndjson"' _ \
            "$verify" --scratch "$work" --jobs "$j" "$zset_dir" --restore-into "postgresql:///postgres"
        restore_only "restore_only_j$j"
    done
    time_cmd pg_restore_j2 bash -c "dropdb --if-exists r && createdb r && pg_restore -j 2 --no-owner --exit-on-error -d r '$work/plain.dump'"
    time_cmd plain_restore bash -o pipefail -c "dropdb --if-exists r && createdb r && zstd -dcq '$zfile' | pg_restore --no-owner --exit-on-error -d r"
done

if [[ -z "$only" ]]; then
    row "pgbackup --compress gzip vs pg_dump -Fc (wall)" pgbackup pg_dump_fc "<= 0.60"
    row "one-liner pg_dump|gzip+sha256sum vs pgbackup" oneliner pgbackup ">= 2.00"
    row "pgbackup --compress 0 vs pg_dump -Fc -Z0" pgbackup_z0 pg_dump_z0 "<= 1.10"
    printf '%s\t%s\t%s\t%s\t%s\n' "pgbackup gzip dump bytes vs pg_dump -Fc bytes" "$set_bytes" "$fc_bytes" \
        "$(awk -v a="$set_bytes" -v b="$fc_bytes" 'BEGIN {printf "%.3f", a / b}')" "<= 1.05"
    row "pgbackup --compress zstd vs pg_dump -Fc (wall)" pgbackup_zstd pg_dump_fc "<= 0.30"
    row "pgbackup --compress zstd vs pg_dump -Fc -Z0 -f" pgbackup_zstd pg_dump_z0 "<= 1.10"
    printf '%s\t%s\t%s\t%s\t%s\n' "pgbackup zstd dump bytes vs pg_dump -Fc bytes" "$zstd_bytes" "$fc_bytes" \
        "$(awk -v a="$zstd_bytes" -v b="$fc_bytes" 'BEGIN {printf "%.3f", a / b}')" "<= 0.90"
    row "pgbackup --physical vs pg_basebackup -Ft | zstd -1 (wall)" physical basebackup_zstd "<= 1.10"
    printf '%s\t%s\t%s\t%s\t%s\n' "pgbackup --physical set bytes vs pg_basebackup | zstd -1" "$base_bytes" "$bb_bytes" \
        "$(awk -v a="$base_bytes" -v b="$bb_bytes" 'BEGIN {printf "%.3f", a / b}')" "<= 1.05"
    row "verify-backup vs sha256sum && gzip -t" verify sha_gzip "<= 0.50"
    row "verify-backup zstd set vs sha256sum && zstd -t" verify_zstd sha_zstd "<= 0.60"
    row "verify-backup vs gzip -t alone" verify gzip_t "<= 1.20"
    row "pgbackup zstd encrypted (age) vs unencrypted" pgbackup_age pgbackup_zstd "<= 1.05"
    row "verify-backup --identity encrypted vs unencrypted" verify_age verify_zstd2 "<= 1.10"
    row "verify-backup --identity vs sha256sum && age -d|zstd -t" verify_age sha_age_zstd "(report)"
fi
row "restore alone: --jobs 2 (copy + pg_restore -j 2) vs pg_restore -j 2 -Fc file" restore_only_j2 pg_restore_j2 "<= 1.05"
row "restore alone: --jobs 2 vs --jobs 1 (streamed)" restore_only_j2 restore_only_j1 "(report)"
row "verify --restore-into --jobs 2 (whole) vs zstd -dc|pg_restore" restore_test_j2 plain_restore "(report)"
row "verify --restore-into --jobs 1 (whole) vs zstd -dc|pg_restore" restore_test_j1 plain_restore "(report)"
if [[ -z "$only" ]]; then
    printf '%s\t%s\t%s\t%s\t%s\n' "verify-backup peak RSS MiB" "$((rss[verify] / 1024))" "-" "-" "< 64"
    printf '%s\t%s\t%s\t%s\t%s\n' "pgbackup peak RSS MiB (gzip, -Z0)" \
        "$((rss[pgbackup] / 1024))" "$((rss[pgbackup_z0] / 1024))" "-" "< 64"
    printf '%s\t%s\t%s\t%s\t%s\n' "pgbackup / verify-backup peak RSS MiB, zstd" \
        "$((rss[pgbackup_zstd] / 1024))" "$((rss[verify_zstd] / 1024))" "-" "< 64"
    printf '%s\t%s\t%s\t%s\t%s\n' "pgbackup / verify-backup peak RSS MiB, zstd+age" \
        "$((rss[pgbackup_age] / 1024))" "$((rss[verify_age] / 1024))" "-" "< 64"
fi
printf '%s\t%s\t%s\t%s\t%s\n' "pgbackup --physical / verify-backup --jobs 2 restore peak RSS MiB" \
    "$((${rss[physical]:-0} / 1024))" "$((rss[restore_test_j2] / 1024))" "-" "< 64"
