//! A cluster laid out as Debian and Ubuntu lay theirs out
//! (`pg_createcluster`): `postgresql.conf`, `pg_hba.conf` and
//! `pg_ident.conf` live in /etc/postgresql/VERSION/NAME, none in the data
//! directory, so none in its base sets; a setting a recovery needs at
//! least the primary's value of (`max_prepared_transactions = 3`) is set
//! there only. A base set of it replays (the weekly restore test) and
//! recovers to a point in time: before, the copy did not start ("could
//! not access the server configuration file").

use opskit_testkit::drill::Drill;
use opskit_testkit::tools::run;
use opskit_testkit::wal::outside_conf_cluster;

#[test]
fn a_base_set_of_a_cluster_configured_outside_its_data_directory_replays_and_recovers() {
    let d = Drill::on(outside_conf_cluster());
    let c = d.c;
    assert!(
        !c.data().join("postgresql.conf").exists(),
        "the layout under test"
    );
    c.query(
        &d.db,
        "CREATE TABLE orders (id bigserial PRIMARY KEY, note text); \
         INSERT INTO orders (note) SELECT 'before' FROM generate_series(1, 300)",
    );
    let set = d.take_base(c);
    let out = run(&mut d.replay(&set, &d.dir.join("scratch")));
    assert!(out.code == 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("postgresql.conf: the set has none"),
        "{}",
        out.stderr
    );
    c.query(
        &d.db,
        "INSERT INTO orders (note) SELECT 'after' FROM generate_series(1, 200)",
    );
    let t = d.time_then_delete();
    let side = d.dir.join("side");
    let (out, port) = d.recover_to(&t, &side);
    let up = side.join("postmaster.pid").exists();
    let rows = (out.code == 0).then(|| d.side_orders(&side, port));
    if up {
        d.stop_side(&side);
    }
    assert!(out.code == 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(rows, Some((500, 500)));
}
