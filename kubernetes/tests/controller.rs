//! The waypoint controller against a scripted API server that speaks the real HTTP protocol
//! (`mesh_kubernetes::testing`) to an unmodified kube-rs client: what it applies for a
//! Gateway, the status it writes, the overlays it merges, and what it refuses.

use std::net::SocketAddr;
use std::time::Duration;

use mesh_kubernetes::controller::{self, ControllerSettings, DEFAULTS_LABEL};
use mesh_kubernetes::testing::{FakeApi, serve};
use mesh_kubernetes::waypoint_deploy::{
    self, CONTROLLER_NAME, MANAGED_LABEL, MANAGER, PodSettings, WAYPOINT_CLASS,
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

async fn client(addr: SocketAddr) -> kube::Client {
    let config = kube::Config::new(format!("http://{addr}").parse().expect("url"));
    kube::Client::try_from(config).expect("client")
}

fn settings() -> ControllerSettings {
    ControllerSettings {
        pod: PodSettings {
            image: "registry.example/waypoint:1".into(),
            ca_address: "istiod.istio-system.svc:15012".into(),
            trust_domain: "cluster.local".into(),
        },
        system_namespace: "mesh-system".into(),
        cluster_domain: "cluster.local".into(),
    }
}

/// The API server and a controller running against it, until the guard drops.
async fn start(api: &FakeApi) -> tokio_util::sync::DropGuard {
    let stop = CancellationToken::new();
    let addr = serve(api.clone(), stop.clone()).await;
    let client = client(addr).await;
    let (installed, is_installed) = tokio::sync::oneshot::channel();
    let run = controller::run(
        client,
        settings(),
        move || {
            let _ = installed.send(());
        },
        stop.clone(),
    );
    tokio::spawn(async move {
        if let Err(error) = run.await {
            panic!("the controller stopped: {error}");
        }
    });
    tokio::time::timeout(Duration::from_secs(10), is_installed)
        .await
        .expect("installed in time")
        .expect("installed");
    stop.drop_guard()
}

/// Waits (bounded) until `check` holds of what the API server has.
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn gateway(namespace: &str, name: &str) -> Value {
    waypoint_deploy::gateway(namespace, name, "service")
}

fn condition(object: &Value, kind: &str) -> (String, String) {
    let conditions = object["status"]["conditions"].as_array();
    let found = (conditions.into_iter().flatten()).find(|c| c["type"] == kind);
    match found {
        Some(c) => (
            c["status"].as_str().unwrap_or("").to_string(),
            c["reason"].as_str().unwrap_or("").to_string(),
        ),
        None => (String::new(), String::new()),
    }
}

fn programmed(api: &FakeApi, namespace: &str, name: &str) -> bool {
    (api.get("gateways", namespace, name))
        .is_some_and(|gw| condition(&gw, "Programmed").0 == "True")
}

fn config_map(namespace: &str, name: &str, labels: Value, data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"namespace": namespace, "name": name, "labels": labels},
           "data": data})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waypoint_gateway_is_applied_and_programmed_with_its_addresses() {
    let api = FakeApi::default();
    let _running = start(&api).await;
    let class = api
        .get("gatewayclasses", "", WAYPOINT_CLASS)
        .expect("class");
    assert_eq!(class["spec"]["controllerName"], CONTROLLER_NAME);
    assert_eq!(condition(&class, "Accepted").0, "True");
    assert!(
        api.get("clusterroles", "", waypoint_deploy::CONFIG_READER)
            .is_some()
    );

    let mut first = gateway("shop", "waypoint");
    first["spec"]["infrastructure"] = json!({"labels": {"team": "payments"}});
    api.put(first);
    until("programmed", || programmed(&api, "shop", "waypoint")).await;
    let gw = api.get("gateways", "shop", "waypoint").expect("gateway");
    let service = api.get("services", "shop", "waypoint").expect("service");
    let ip = service["spec"]["clusterIP"].as_str().expect("an IP");
    assert_eq!(
        gw["status"]["addresses"],
        json!([{"type": "IPAddress", "value": ip},
               {"type": "Hostname", "value": "waypoint.shop.svc.cluster.local"}])
    );
    assert_eq!(
        condition(&gw, "Accepted"),
        ("True".into(), "Accepted".into())
    );
    let uid = gw["metadata"]["uid"].clone();
    let deployment = api
        .get("deployments", "shop", "waypoint")
        .expect("deployment");
    assert!(deployment["spec"].get("replicas").is_none());
    assert_eq!(deployment["metadata"]["labels"]["team"], "payments");
    assert_eq!(deployment["metadata"]["ownerReferences"][0]["uid"], uid);
    assert!(api.get("serviceaccounts", "shop", "waypoint").is_some());
    let binding = format!("{}-shop-waypoint", waypoint_deploy::CONFIG_READER);
    assert!(api.get("clusterrolebindings", "", &binding).is_some());
    assert!(api.all("horizontalpodautoscalers").is_empty());
    // Every object went in by server-side apply, forced, as the one field manager.
    let applies: Vec<_> = (api.writes().into_iter())
        .filter(|w| w.namespace == "shop")
        .collect();
    assert!(!applies.is_empty());
    for write in &applies {
        if write.verb == "apply" {
            assert_eq!(write.manager.as_deref(), Some(MANAGER), "{write:?}");
            assert!(write.force, "{write:?}");
        }
    }

    // Settled: nothing more is written while nothing changes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let settled = api.writes().len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        api.writes().len(),
        settled,
        "{:?}",
        &api.writes()[settled..]
    );

    // A Deployment deleted by hand is put back; a Gateway of another class is left alone.
    api.delete("deployments", "shop", "waypoint");
    until("the deployment is back", || {
        api.get("deployments", "shop", "waypoint").is_some()
    })
    .await;
    let mut other = gateway("shop", "istio-one");
    other["spec"]["gatewayClassName"] = json!("istio-waypoint");
    api.put(other);
    api.put(gateway("shop", "second"));
    until("second programmed", || programmed(&api, "shop", "second")).await;
    assert!(api.get("deployments", "shop", "istio-one").is_none());
    assert!(
        (api.get("gateways", "shop", "istio-one")).is_some_and(|gw| gw.get("status").is_none())
    );

    // A Gateway deleted: its binding (which no owner reference removes) goes at the next
    // reconcile.
    api.delete("gateways", "shop", "second");
    let mut touched = gateway("shop", "waypoint");
    touched["metadata"]["labels"]["team"] = json!("a");
    api.put(touched);
    let second = format!("{}-shop-second", waypoint_deploy::CONFIG_READER);
    until("the binding of the deleted Gateway is gone", || {
        api.get("clusterrolebindings", "", &second).is_none()
    })
    .await;
    assert!(api.get("clusterrolebindings", "", &binding).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlays_add_and_remove_an_hpa_and_a_pdb_and_shape_every_waypoint_of_the_class() {
    let api = FakeApi::default();
    let _running = start(&api).await;
    api.put(config_map(
        "mesh-system",
        "waypoint-defaults",
        json!({DEFAULTS_LABEL: WAYPOINT_CLASS}),
        json!({"deployment": "spec: {template: {spec: {priorityClassName: high}}}"}),
    ));
    api.put(config_map(
        "shop",
        "waypoint-params",
        json!({}),
        json!({"horizontalPodAutoscaler": "spec: {minReplicas: 2, maxReplicas: 5}",
               "podDisruptionBudget": "spec: {minAvailable: 1}"}),
    ));
    let mut gw = gateway("shop", "waypoint");
    gw["spec"]["infrastructure"] = json!({"parametersRef":
        {"group": "", "kind": "ConfigMap", "name": "waypoint-params"}});
    api.put(gw);
    until("programmed", || programmed(&api, "shop", "waypoint")).await;
    let hpa = (api.get("horizontalpodautoscalers", "shop", "waypoint")).expect("an HPA");
    assert_eq!(hpa["spec"]["maxReplicas"], 5);
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "waypoint");
    let pdb = api
        .get("poddisruptionbudgets", "shop", "waypoint")
        .expect("a PDB");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    let deployment = api
        .get("deployments", "shop", "waypoint")
        .expect("deployment");
    assert_eq!(
        deployment["spec"]["template"]["spec"]["priorityClassName"],
        "high"
    );

    // The parameters change: the HPA is resized, the PDB no longer asked for is deleted.
    api.put(config_map(
        "shop",
        "waypoint-params",
        json!({}),
        json!({"horizontalPodAutoscaler": "spec: {minReplicas: 2, maxReplicas: 8}"}),
    ));
    until("the PDB is gone and the HPA resized", || {
        api.get("poddisruptionbudgets", "shop", "waypoint")
            .is_none()
            && (api.get("horizontalpodautoscalers", "shop", "waypoint"))
                .is_some_and(|h| h["spec"]["maxReplicas"] == 8)
    })
    .await;

    // Class defaults change: every waypoint of the class follows.
    api.put(config_map(
        "mesh-system",
        "waypoint-defaults",
        json!({DEFAULTS_LABEL: WAYPOINT_CLASS}),
        json!({"deployment": "spec: {template: {spec: {priorityClassName: low}}}"}),
    ));
    until("the class default follows", || {
        (api.get("deployments", "shop", "waypoint"))
            .is_some_and(|d| d["spec"]["template"]["spec"]["priorityClassName"] == "low")
    })
    .await;

    // A broken overlay: refused on the Gateway's status, naming the ConfigMap and the key;
    // what runs stays as it was.
    api.put(config_map(
        "shop",
        "waypoint-params",
        json!({}),
        json!({"horizontalPodAutoscaler": "spec: {maxReplicas: [oops"}),
    ));
    until("refused", || {
        (api.get("gateways", "shop", "waypoint")).is_some_and(|gw| {
            condition(&gw, "Accepted") == ("False".into(), "InvalidParameters".into())
        })
    })
    .await;
    let gw = api.get("gateways", "shop", "waypoint").expect("gateway");
    let message = gw["status"]["conditions"][0]["message"]
        .as_str()
        .unwrap_or("");
    assert!(
        message.contains("shop/waypoint-params") && message.contains("horizontalPodAutoscaler"),
        "{message}"
    );
    assert!(gw["status"].get("addresses").is_none(), "{gw}");
    assert!(
        api.get("horizontalpodautoscalers", "shop", "waypoint")
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_cannot_be_served_is_refused_on_the_gateway_and_nothing_is_taken_over() {
    let api = FakeApi::default();
    let _running = start(&api).await;
    let mut http = gateway("shop", "http");
    http["spec"]["listeners"] = json!([{"name": "web", "port": 80, "protocol": "HTTP"}]);
    api.put(http);
    let mut missing = gateway("shop", "missing-params");
    missing["spec"]["infrastructure"] = json!({"parametersRef":
        {"group": "", "kind": "ConfigMap", "name": "nowhere"}});
    api.put(missing);
    // A Deployment someone else made, with the name a waypoint would take.
    api.put(json!({"apiVersion": "apps/v1", "kind": "Deployment",
                   "metadata": {"namespace": "shop", "name": "taken"},
                   "spec": {"template": {"spec": {"containers": [{"name": "mine"}]}}}}));
    api.put(gateway("shop", "taken"));

    let status_of = |name: &str, kind: &str| {
        (api.get("gateways", "shop", name))
            .map(|gw| condition(&gw, kind))
            .unwrap_or_default()
    };
    until("all three decided", || {
        !status_of("http", "Accepted").0.is_empty()
            && !status_of("missing-params", "Accepted").0.is_empty()
            && !status_of("taken", "Programmed").0.is_empty()
    })
    .await;
    assert_eq!(
        status_of("http", "Accepted"),
        ("False".into(), "ListenersNotValid".into())
    );
    let http = api.get("gateways", "shop", "http").expect("gateway");
    let listener = &http["status"]["listeners"][0];
    assert_eq!(listener["conditions"][0]["reason"], "UnsupportedProtocol");
    assert!(api.get("deployments", "shop", "http").is_none());
    assert_eq!(
        status_of("missing-params", "Accepted"),
        ("False".into(), "InvalidParameters".into())
    );
    assert!(api.get("deployments", "shop", "missing-params").is_none());
    assert_eq!(
        status_of("taken", "Programmed"),
        ("False".into(), "Invalid".into())
    );
    let taken = api
        .get("deployments", "shop", "taken")
        .expect("still there");
    assert_eq!(
        taken["spec"]["template"]["spec"]["containers"][0]["name"],
        "mine"
    );
    assert!(taken["metadata"]["labels"].get(MANAGED_LABEL).is_none());

    // Fixed: the listener made HBONE, the Gateway is served.
    let mut fixed = gateway("shop", "http");
    fixed["spec"]["listeners"] = json!([{"name": "mesh", "port": 15008, "protocol": "HBONE"}]);
    api.put(fixed);
    until("served once fixed", || programmed(&api, "shop", "http")).await;
    let http = api.get("gateways", "shop", "http").expect("gateway");
    assert_eq!(http["status"]["conditions"][0]["observedGeneration"], 2);
}

/// The status entry the controller wrote on `route` for its `index`th parent:
/// (Accepted status, reason, message).
fn route_condition(api: &FakeApi, route: &str, index: usize) -> Option<(String, String, String)> {
    let route = api.get("httproutes", "shop", route)?;
    let entry = &route["status"]["parents"][index];
    (entry["controllerName"] == CONTROLLER_NAME).then_some(())?;
    let conditions = entry["conditions"].as_array()?;
    let accepted = conditions.iter().find(|c| c["type"] == "Accepted")?;
    let text = |key: &str| accepted[key].as_str().unwrap_or("").to_string();
    Some((text("status"), text("reason"), text("message")))
}

/// Routes and policies on the controller's waypoint get its status: a route the config leaves
/// out says why (and is accepted once fixed), a good one is accepted, another controller's
/// entry is kept, a policy left out is not accepted, and an unchanged route is not written
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_and_policies_on_the_waypoint_are_given_their_status() {
    use mesh_config::fixtures;
    let api = FakeApi::default();
    for object in fixtures::nodes() {
        api.put(object);
    }
    api.put(fixtures::namespace("shop", json!({})));
    api.put(gateway("shop", "waypoint"));
    api.put(fixtures::waypoint_pod("shop", "waypoint", "10.0.0.50"));
    api.put(fixtures::pod(
        "shop",
        "cart-0",
        "10.0.0.10",
        json!({"app": "cart"}),
    ));
    let mut cart = fixtures::service("shop", "cart", "10.96.0.10", json!({"app": "cart"}));
    cart["metadata"]["labels"] = json!({"istio.io/use-waypoint": "waypoint"});
    api.put(cart);
    let parent = json!([{"group": "", "kind": "Service", "name": "cart", "port": 80}]);
    let rules = json!([{"backendRefs": [{"name": "cart", "port": 80}]}]);
    let good = fixtures::http_route("shop", "good", parent.clone(), rules.clone());
    let mut bad = fixtures::http_route("shop", "bad", parent.clone(), rules);
    bad["spec"]["rules"][0]["sessionPersistence"] = json!({"sessionName": "s"});
    let istio = json!({"parentRef": {"name": "elsewhere"}, "controllerName": "istio.io/gateway-controller",
                       "conditions": []});
    bad["status"] = json!({"parents": [istio]});
    api.put(good);
    api.put(bad.clone());
    let target = json!([{"group": "", "kind": "Service", "name": "cart"}]);
    let unknown_key = json!([{"when": [{"key": "request.nonsense", "values": ["a"]}]}]);
    let policy = json!({"targetRefs": target, "action": "ALLOW", "rules": unknown_key});
    api.put(fixtures::policy("shop", "cart-callers", policy));
    let _running = start(&api).await;

    until("both routes have a status", || {
        route_condition(&api, "good", 0).is_some() && route_condition(&api, "bad", 1).is_some()
    })
    .await;
    let (status, reason, _) = route_condition(&api, "good", 0).expect("good");
    assert_eq!((status.as_str(), reason.as_str()), ("True", "Accepted"));
    let (status, reason, message) = route_condition(&api, "bad", 1).expect("bad");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "UnsupportedValue")
    );
    assert!(message.contains("sessionPersistence"), "{message}");
    let stored = api.get("httproutes", "shop", "bad").expect("bad");
    assert_eq!(
        stored["status"]["parents"][0], istio,
        "Istio's entry is kept"
    );
    // So does a policy.
    until("the policy has a status", || {
        api.get("authorizationpolicies", "shop", "cart-callers")
            .is_some_and(|policy| condition(&policy, "WaypointAccepted").0 == "False")
    })
    .await;

    // Fixed, the route is accepted.
    let mut fixed = stored.clone();
    fixed["spec"]["rules"][0]
        .as_object_mut()
        .expect("rule")
        .remove("sessionPersistence");
    api.put(fixed);
    until("the fixed route is accepted", || {
        route_condition(&api, "bad", 1).is_some_and(|(status, ..)| status == "True")
    })
    .await;
    // Nothing changes: nothing more is written.
    let route_writes = || {
        (api.writes().into_iter())
            .filter(|w| w.plural == "httproutes")
            .count()
    };
    let settled = route_writes();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        route_writes(),
        settled,
        "an unchanged status is not written again"
    );
}
