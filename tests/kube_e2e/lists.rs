//! Where the ServiceEntry lists come from (`--kube-list`, src/kube/listing.rs): the whole list
//! from the apiserver's watch cache, pages from etcd after the cache list failed, and the cache
//! again at the next re-list. Which list the apiserver was asked for is read from its audit log.
//! (The cache list skipping bad objects one by one: tests/kube_decode.rs.)

use std::time::Duration;

use crate::common::{self, eventually, Server};
use crate::kube_cluster::{one_vip, se, serial, Cluster, Listed};

const SA_USER: &str = "system:serviceaccount:globaldns:globaldns";

/// The lists the ServiceAccount asked for.
fn lists_of_sa(c: &Cluster) -> Vec<Listed> {
    c.lists()
        .into_iter()
        .filter(|l| l.user == SA_USER)
        .collect()
}

/// A cache list refused (here by RBAC: the role is granted only later) is followed by paged
/// lists until one succeeds; the re-list after the next watch failure asks the cache again.
#[test]
fn a_failed_cache_list_falls_back_to_pages_then_the_cache_again() {
    let _g = serial();
    let c = Cluster::up("c1");
    c.ensure_namespace("bar");
    for i in 0..3 {
        c.apply(&se(
            "bar",
            &format!("s{i}"),
            &[&format!("s{i}.bar.global")],
            &[],
        ));
    }
    let kubeconfig = c.sa_kubeconfig("globaldns", "globaldns");
    let (_t, zones, state) = common::dirs();
    let flag = format!("c1={}", kubeconfig.display());
    let gd = Server::spawn(&zones, &state, &["--log", "info", "--cluster", &flag])
        .unwrap_or_else(|log| panic!("{log}"));

    // Not allowed to list: the cache list is refused, then the paged ones are.
    eventually(
        Duration::from_secs(30),
        "a refused paged list after the cache list",
        || {
            let lists = lists_of_sa(&c);
            let first = lists.first()?;
            assert!(first.cache_list() && first.code == 403, "{lists:?}");
            (lists.len() >= 3 && lists[1..].iter().all(|l| l.paged() && l.code == 403))
                .then_some(())
        },
    );
    assert!(gd.log_contains("the list from the apiserver's watch cache failed; listing in pages"));
    assert_eq!(gd.get("/readyz").0, 503);

    c.apply(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: se-reader}\n\
         rules:\n- apiGroups: [networking.istio.io]\n  resources: [serviceentries]\n  verbs: [list, watch]\n\
         ---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: se-reader}\n\
         roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: se-reader}\n\
         subjects:\n- {kind: ServiceAccount, name: globaldns, namespace: globaldns}\n",
    );
    eventually(Duration::from_secs(30), "/readyz 200", || {
        (gd.get("/readyz").0 == 200).then_some(())
    });
    for i in 0..3 {
        one_vip(&gd, &format!("s{i}.bar.global"));
    }
    // Every list after the failed cache list was paged; the one that served was paged too.
    let lists = lists_of_sa(&c);
    assert!(lists[1..].iter().all(Listed::paged), "{lists:?}");
    assert_eq!(
        lists.iter().filter(|l| l.code == 200).count(),
        1,
        "{lists:?}"
    );
    assert!(gd.log_contains("listed ServiceEntries cluster=c1 list=paged objects=3"));
    let lists_total = |list: &str, result: &str| {
        let name = format!(
            "globaldns_source_lists_total{{cluster=\"c1\",list=\"{list}\",result=\"{result}\"}}"
        );
        common::metric0(&gd, &name)
    };
    assert_eq!(lists_total("cache", "failed"), 1.0);
    assert_eq!(lists_total("paged", "ok"), 1.0);
    assert!(lists_total("paged", "failed") >= 1.0);
    assert_eq!(lists_total("cache", "ok"), 0.0);

    // The watch fails (the apiserver restarts): the re-list asks the cache, which serves it,
    // with what changed meanwhile.
    let before = lists.len();
    c.stop_apiserver();
    c.start_apiserver();
    c.apply(&se("bar", "s3", &["s3.bar.global"], &[]));
    one_vip(&gd, "s3.bar.global");
    let lists = lists_of_sa(&c);
    let relists: Vec<&Listed> = lists[before..].iter().filter(|l| l.code == 200).collect();
    assert!(
        !relists.is_empty() && relists.iter().all(|l| l.cache_list()),
        "{lists:?}"
    );
    assert!(gd.log_contains("list=cache"));
    assert!(lists_total("cache", "ok") >= 1.0);
    assert!(common::metric0(&gd, "globaldns_source_list_seconds{cluster=\"c1\"}") > 0.0);
}
