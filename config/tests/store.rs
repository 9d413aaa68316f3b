//! Store versions and notifications; FileSource hot reload, rejection and recovery on disk.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use mesh_config::{FileSource, Snapshot, Store, load_path};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(5);

fn manifest(pods: usize) -> String {
    let mut objs = nodes();
    for i in 0..pods {
        objs.push(pod(
            "default",
            &format!("p{i}"),
            &format!("127.0.1.{}", 10 + i),
            json!({"app": "p"}),
        ));
    }
    yaml(&objs)
}

#[tokio::test]
async fn replace_bumps_version_and_notifies() {
    let store = Store::new(Snapshot::default());
    assert_eq!(store.load().version(), 1);
    let mut rx = store.subscribe();
    assert_eq!(*rx.borrow_and_update(), 1);
    let held = store.load();
    let v = store.replace(must_compile(&nodes()));
    assert_eq!(v, Some(2));
    tokio::time::timeout(WAIT, rx.changed())
        .await
        .expect("notified")
        .expect("sender alive");
    assert_eq!(*rx.borrow_and_update(), 2);
    assert_eq!(store.load().version(), 2);
    assert_eq!(store.load().nodes().len(), 2);
    // A reader holding the old snapshot keeps a consistent view.
    assert_eq!((held.version(), held.nodes().len()), (1, 0));
    assert_eq!(store.replace(Snapshot::default()), Some(3));
}

/// A mesh config naming `trust_domain`.
fn mesh_config(trust_domain: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "istio", "namespace": "istio-system"},
        "data": {"mesh": format!("trustDomain: {trust_domain}\n")}})
}

#[test]
fn the_trust_domain_is_the_mesh_configs_and_cannot_change_while_serving() {
    let mut objects = nodes();
    objects.push(pod("default", "web", "127.0.1.10", json!({"app": "web"})));
    objects.push(mesh_config("example.org"));
    let snapshot = must_compile(&objects);
    assert_eq!(snapshot.trust_domain(), "example.org");
    let web = snapshot.workloads().next().expect("web");
    assert_eq!(
        web.identity.to_string(),
        "spiffe://example.org/ns/default/sa/web"
    );
    // A principal in another trust domain can match no workload of this mesh: said so.
    let mut with_policy = objects.clone();
    with_policy.push(
        json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {"rules": [{"from": [{"source": {"principals": [
            "cluster.local/ns/default/sa/web", "other.org/ns/default/sa/web"]}}]}]}}),
    );
    let warned = must_compile(&with_policy)
        .warnings()
        .iter()
        .map(|w| w.to_string())
        .collect::<Vec<_>>();
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(
        warned[0].contains("principals[1]")
            && warned[0].contains("\"other.org/ns/default/sa/web\" is outside"),
        "{warned:?}"
    );
    let store = Store::new(snapshot);
    // The same trust domain: applied. Another (or none: Istio's default): rejected, counted
    // and explained, the last good config still serving.
    assert_eq!(store.replace(must_compile(&objects)), Some(2));
    objects.pop();
    assert_eq!(store.replace(must_compile(&objects)), None);
    assert_eq!((store.load().version(), store.rejections()), (2, 1));
    let why = store.last_rejection().expect("kept");
    assert!(
        why.contains("\"cluster.local\" is not \"example.org\""),
        "{why}"
    );
    // Not a trust domain: refused where it is written.
    objects.push(mesh_config("Example.org/x"));
    let errors = must_fail(&objects).to_string();
    assert!(
        errors.contains("data.mesh.trustDomain") && errors.contains("not a SPIFFE trust domain"),
        "{errors}"
    );
}

#[test]
fn rejections_are_counted_and_kept() {
    let store = Store::new(Snapshot::default());
    assert_eq!((store.rejections(), store.last_rejection()), (0, None));
    let errors =
        must_fail(&[json!({"apiVersion": "v1", "kind": "Bogus", "metadata": {"name": "x"}})]);
    store.record_rejection(&errors);
    store.record_rejection(&errors);
    assert_eq!(store.rejections(), 2);
    assert!(store.last_rejection().expect("kept").contains("Bogus"));
    assert_eq!(
        store.load().version(),
        1,
        "a rejection never changes the snapshot"
    );
}

/// Waits (bounded) until `cond` holds.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn start(path: &Path) -> (Arc<Store>, CancellationToken, tokio::task::JoinHandle<()>) {
    let store = Store::new(load_path(path).expect("initial config valid"));
    let token = CancellationToken::new();
    let source = FileSource::new(path.to_path_buf(), Arc::clone(&store))
        .with_debounce(Duration::from_millis(50));
    let task = source.spawn(token.clone()).expect("watching");
    (store, token, task)
}

/// Gives the watcher time to register before the first edit.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_edit_swaps_invalid_edit_is_rejected_then_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("mesh.yaml");
    std::fs::write(&file, manifest(1)).expect("write");
    let (store, token, task) = start(&file);
    let mut rx = store.subscribe();
    rx.borrow_and_update();
    settle().await;

    let started = std::time::Instant::now();
    std::fs::write(&file, manifest(2)).expect("write");
    tokio::time::timeout(Duration::from_secs(2), rx.changed())
        .await
        .expect("swapped within 2 s")
        .expect("alive");
    assert!(started.elapsed() < Duration::from_secs(2));
    let snap = store.load();
    assert_eq!((snap.version(), snap.workloads().count()), (2, 2));

    std::fs::write(
        &file,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: broken}\nstatus: {podIP: nope}\n",
    )
    .expect("write");
    eventually("the rejection", || store.rejections() == 1).await;
    let snap = store.load();
    assert_eq!(
        (snap.version(), snap.workloads().count()),
        (2, 2),
        "last good snapshot still served"
    );
    let why = store.last_rejection().expect("recorded");
    assert!(
        why.contains("mesh.yaml") && why.contains("Pod default/broken"),
        "{why}"
    );

    std::fs::write(&file, manifest(3)).expect("write");
    eventually("recovery", || store.load().version() == 3).await;
    assert_eq!(store.load().workloads().count(), 3);
    assert_eq!(store.rejections(), 1);

    token.cancel();
    tokio::time::timeout(WAIT, task)
        .await
        .expect("run stops on cancel")
        .expect("no panic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_replaced_by_rename_is_picked_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("mesh.yaml");
    std::fs::write(&file, manifest(1)).expect("write");
    let (store, token, task) = start(&file);
    settle().await;
    let tmp = dir.path().join(".mesh.yaml.tmp");
    std::fs::write(&tmp, manifest(4)).expect("write tmp");
    std::fs::rename(&tmp, &file).expect("rename");
    eventually("the renamed file", || store.load().workloads().count() == 4).await;
    assert_eq!(store.load().version(), 2);
    // An unrelated file in the same directory changes nothing.
    std::fs::write(dir.path().join("other.yaml"), "not: [valid").expect("write");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!((store.load().version(), store.rejections()), (2, 0));
    token.cancel();
    tokio::time::timeout(WAIT, task)
        .await
        .expect("stops")
        .expect("no panic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_source_sees_new_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("nodes.yaml"), yaml(&nodes())).expect("write");
    let (store, token, task) = start(dir.path());
    assert_eq!(store.load().workloads().count(), 0);
    settle().await;
    let p = pod("default", "late", "127.0.1.40", json!({}));
    std::fs::write(dir.path().join("pods.yml"), yaml(&[p])).expect("write");
    eventually("the new file", || store.load().workloads().count() == 1).await;
    token.cancel();
    tokio::time::timeout(WAIT, task)
        .await
        .expect("stops")
        .expect("no panic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_watches_before_returning_and_catches_edits_since_the_initial_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("mesh.yaml");
    std::fs::write(&file, manifest(1)).expect("write");
    let docs = mesh_config::read_path(&file).expect("read");
    let store = Store::new(mesh_config::compile(docs.clone()).expect("valid"));
    // Edited after the initial read, before the watch starts: must not be lost.
    std::fs::write(&file, manifest(2)).expect("write");
    let token = CancellationToken::new();
    let task = FileSource::new(file.clone(), Arc::clone(&store))
        .with_debounce(Duration::from_millis(50))
        .with_initial(docs)
        .spawn(token.clone())
        .expect("watch");
    eventually("the edit made before the watch", || {
        store.load().workloads().count() == 2
    })
    .await;
    // Edited right after spawn returned, with no settling time: seen as well.
    std::fs::write(&file, manifest(3)).expect("write");
    eventually("the edit made right after spawn", || {
        store.load().workloads().count() == 3
    })
    .await;
    token.cancel();
    task.await.expect("source task");
}

/// Deleting a directory's only manifest would stop every component: an editor's
/// delete-and-recreate must not, and a real deletion applies only after the grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emptying_the_config_waits_for_a_grace_period() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("mesh.yaml");
    std::fs::write(&file, manifest(2)).expect("write");
    let store = Store::new(load_path(dir.path()).expect("initial config valid"));
    let token = CancellationToken::new();
    let source = FileSource::new(dir.path().to_path_buf(), Arc::clone(&store))
        .with_debounce(Duration::from_millis(50))
        .with_emptying_grace(Duration::from_millis(1500));
    let task = source.spawn(token.clone()).expect("watching");
    settle().await;
    let serving = || store.load().workloads().count() == 2;

    // Delete, and recreate 300 ms later: the mesh never sees an empty config.
    std::fs::remove_file(&file).expect("delete");
    for _ in 0..15 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(serving(), "a deletion applied at once");
    }
    std::fs::write(&file, manifest(2)).expect("recreate");
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(25)).await;
        assert!(serving(), "the recreated config must keep serving");
    }

    // Deleted for good: held for the grace period, then applied.
    std::fs::remove_file(&file).expect("delete");
    let deleted = tokio::time::Instant::now();
    eventually("the deletion, after its grace period", || {
        store.load().workloads().count() == 0
    })
    .await;
    assert!(
        deleted.elapsed() >= Duration::from_millis(1500),
        "applied after {:?}",
        deleted.elapsed()
    );
    token.cancel();
    tokio::time::timeout(WAIT, task)
        .await
        .expect("stops")
        .expect("no panic");
}

#[test]
fn a_huge_rejection_is_logged_and_kept_bounded() {
    let objs: Vec<_> = (0..1500)
        .map(
            |i| json!({"apiVersion": "v1", "kind": "Bogus", "metadata": {"name": format!("x{i}")}}),
        )
        .collect();
    let errors = must_fail(&objs);
    assert_eq!(errors.len(), 1500);
    let summary = errors.summary(20);
    assert_eq!(summary.lines().count(), 21);
    assert!(summary.ends_with("… and 1480 more errors"), "{summary}");
    assert_eq!(
        errors.summary(2000).lines().count(),
        1500,
        "nothing to count"
    );
    let store = Store::new(Snapshot::default());
    store.record_rejection(&errors);
    let kept = store.last_rejection().expect("kept");
    assert_eq!(kept.lines().count(), 1001);
}
