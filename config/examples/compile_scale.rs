//! How compiling a snapshot scales: a cluster-sized manifest (by default 100 namespaces, each
//! with a waypoint, 100 Services of 5 pods, 50 HTTPRoutes and an AuthorizationPolicy: 10,000
//! Services, 50,000 endpoints, 5,000 routes) and fractions of it, each parsed from YAML
//! (`Resources::add_file`: what a file source pays and a Kubernetes source does not, its
//! objects arriving decoded) and compiled (`Resources::compile`: what every update pays), with
//! the time each took.
//!
//! `cargo run --release -p mesh-config --example compile_scale [namespaces...]` times them;
//! `... -- --yaml 100 > big.yaml` writes the manifest instead, and `... -- --file big.yaml`
//! loads it in a process of its own, to report the peak memory of loading it too.
//! BENCHMARKS.md has the figures.

use std::path::Path;
use std::time::Instant;

use mesh_config::Resources;
use mesh_config::fixtures::{self, yaml};
use serde_json::{Value, json};

const SERVICES: usize = 100;
const PODS_PER_SERVICE: usize = 5;
const ROUTES: usize = 50;

/// Namespace `n`'s objects: a waypoint, Services bound to it with their pods, routes, a policy.
fn namespace(n: usize) -> Vec<Value> {
    let ns = format!("ns-{n}");
    let mut objs = vec![
        fixtures::namespace(&ns, json!({"istio.io/use-waypoint": "waypoint"})),
        fixtures::waypoint_gateway(&ns, "waypoint", Some("service")),
        fixtures::waypoint_pod(&ns, "waypoint", &format!("10.{n}.255.1")),
    ];
    for s in 0..SERVICES {
        let app = format!("app-{s}");
        let vip = format!("10.{}.{}.{}", 200 + n / 250, n % 250, s + 1);
        objs.push(fixtures::service(&ns, &app, &vip, json!({"app": app})));
        for p in 0..PODS_PER_SERVICE {
            let i = s * PODS_PER_SERVICE + p;
            let ip = format!("10.{n}.{}.{}", i / 250, i % 250 + 1);
            let name = format!("{app}-{p}");
            objs.push(fixtures::pod(&ns, &name, &ip, json!({"app": app})));
        }
    }
    for r in 0..ROUTES {
        let service = format!("app-{}", r % SERVICES);
        let parent = json!([{"group": "", "kind": "Service", "name": service, "port": 80}]);
        let rules = json!([{
            "matches": [{"path": {"type": "PathPrefix", "value": format!("/r{r}")}},
                        {"headers": [{"name": "x-version", "value": "v2"}]}],
            "backendRefs": [{"name": service, "port": 80}]
        }]);
        objs.push(fixtures::http_route(
            &ns,
            &format!("route-{r}"),
            parent,
            rules,
        ));
    }
    objs.push(fixtures::policy(
        &ns,
        "viewers",
        json!({"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway",
                               "name": "waypoint"}],
               "action": "ALLOW",
               "rules": [{"from": [{"source": {"namespaces": [ns]}}],
                          "to": [{"operation": {"methods": ["GET"]}}]}]}),
    ));
    objs
}

fn manifest(namespaces: usize) -> String {
    let mut objs = fixtures::nodes();
    for n in 0..namespaces {
        objs.extend(namespace(n));
    }
    yaml(&objs)
}

/// Loads one manifest file as `mesh validate` does; prints the time and the peak memory.
fn load(path: &Path) {
    let started = Instant::now();
    let text = std::fs::read_to_string(path).expect("a readable manifest");
    let snapshot = mesh_config::compile(vec![(path.into(), text)]).expect("a valid manifest");
    let took = started.elapsed().as_secs_f64();
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let peak = (status.lines()).find(|l| l.starts_with("VmHWM:"));
    let services = snapshot.services().count();
    println!(
        "{services} services loaded in {took:.3} s; {}",
        peak.unwrap_or("VmHWM: ?")
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let count = |a: &String| a.parse::<usize>().expect("a namespace count");
    match args.as_slice() {
        [flag, n] if flag == "--yaml" => return println!("{}", manifest(count(n))),
        [flag, path] if flag == "--file" => return load(Path::new(path)),
        _ => {}
    }
    let sizes: Vec<usize> = args.iter().map(count).collect();
    let sizes = if sizes.is_empty() {
        vec![10, 50, 100]
    } else {
        sizes
    };
    println!("namespaces  services  endpoints  routes   yaml MiB  parse s  compile s");
    for namespaces in sizes {
        let text = manifest(namespaces);
        let started = Instant::now();
        let mut resources = Resources::default();
        resources.add_file(Path::new("scale.yaml"), &text);
        let parsed = started.elapsed();
        let started = Instant::now();
        let snapshot = resources.compile().expect("the scale manifest compiles");
        let compiled = started.elapsed();
        assert_eq!(snapshot.services().count(), namespaces * SERVICES);
        println!(
            "{namespaces:>10}  {:>8}  {:>9}  {:>6}  {:>9.1}  {:>7.3}  {:>9.3}",
            namespaces * SERVICES,
            namespaces * SERVICES * PODS_PER_SERVICE,
            namespaces * ROUTES,
            text.len() as f64 / (1 << 20) as f64,
            parsed.as_secs_f64(),
            compiled.as_secs_f64(),
        );
    }
}
