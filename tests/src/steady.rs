//! Well-behaved traffic to run beside an attack: keep-alive clients through the mesh, each
//! sending a GET at a steady pace. Every request must answer 200 in time; anything else is
//! recorded, so a test can assert that an attack cost the other callers nothing.

use std::net::SocketAddr;
use std::time::Duration;

use mesh::client::MeshClient;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Longest a well-behaved request may take before it counts as failed.
const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// Pause between one client's requests.
const PACE: Duration = Duration::from_millis(10);

/// Where the steady callers go: a pod's SOCKS5 entry and the service they address.
#[derive(Debug, Clone)]
pub struct Callers {
    pub socks: SocketAddr,
    pub host: &'static str,
    pub port: u16,
    pub connections: usize,
}

/// What the steady callers saw.
#[derive(Debug, Default)]
pub struct Tally {
    pub ok: u64,
    pub errors: Vec<String>,
}

impl Tally {
    /// Fails unless at least `min_ok` requests succeeded and none failed.
    pub fn assert_clean(&self, min_ok: u64) {
        assert!(
            self.errors.is_empty(),
            "{} well-behaved requests failed (of {}), first: {:?}",
            self.errors.len(),
            self.ok + self.errors.len() as u64,
            &self.errors[..self.errors.len().min(5)]
        );
        assert!(
            self.ok >= min_ok,
            "only {} well-behaved requests completed (want ≥ {min_ok})",
            self.ok
        );
    }
}

/// Running steady callers; [`SteadyLoad::finish`] stops them and returns the tally.
pub struct SteadyLoad {
    stop: watch::Sender<bool>,
    tasks: JoinSet<Tally>,
}

impl SteadyLoad {
    /// Connects every caller (failing at once if one cannot) and starts their loops.
    pub async fn start(groups: &[Callers]) -> anyhow::Result<Self> {
        let (stop, stopped) = watch::channel(false);
        let mut tasks = JoinSet::new();
        for group in groups {
            for _ in 0..group.connections {
                let client = MeshClient::connect(group.socks, group.host, group.port).await?;
                tasks.spawn(caller(client, group.clone(), stopped.clone()));
            }
        }
        Ok(SteadyLoad { stop, tasks })
    }

    pub async fn finish(self) -> Tally {
        let SteadyLoad { stop, tasks } = self;
        let _ = stop.send(true);
        let mut total = Tally::default();
        for tally in tasks.join_all().await {
            total.ok += tally.ok;
            total.errors.extend(tally.errors);
        }
        total
    }
}

/// One caller's loop: a GET, a pause, until stopped. A failed connection is replaced (and the
/// failure recorded), as an app's client library would.
async fn caller(mut client: MeshClient, to: Callers, mut stopped: watch::Receiver<bool>) -> Tally {
    let mut tally = Tally::default();
    let mut n = 0u64;
    while !*stopped.borrow() {
        n += 1;
        let path = format!("/steady/{n}");
        let failure = match tokio::time::timeout(REQUEST_DEADLINE, client.get(&path)).await {
            Ok(Ok(response)) if response.status == 200 => None,
            Ok(Ok(response)) => Some(format!("status {}", response.status)),
            Ok(Err(e)) => Some(format!("{e:#}")),
            Err(_) => Some(format!("no answer in {REQUEST_DEADLINE:?}")),
        };
        match failure {
            None => tally.ok += 1,
            Some(why) => {
                tally.errors.push(format!("{path}: {why}"));
                match MeshClient::connect(to.socks, to.host, to.port).await {
                    Ok(fresh) => client = fresh,
                    Err(e) => {
                        tally.errors.push(format!("reconnect: {e:#}"));
                        return tally;
                    }
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(PACE) => {}
            _ = stopped.changed() => {}
        }
    }
    tally
}
