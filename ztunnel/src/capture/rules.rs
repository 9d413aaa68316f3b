//! Istio's in-pod redirection, as istio-cni's node agent writes it into a pod's network
//! namespace, for the mode where the ztunnel sets pods up itself. Pure: the text and arguments
//! here are run by [`super::install`].
//!
//! - nat OUTPUT: the pod's outgoing TCP goes to the ztunnel's outbound listener (15001), except
//!   what the ztunnel itself sends (packet mark 0x539), connections it made into the pod
//!   (0x111), local traffic, and the kubelet's probes (from 169.254.7.127).
//! - nat PREROUTING: TCP arriving for the pod goes to the inbound plaintext listener (15006),
//!   except HBONE (15008, which the ztunnel serves in the pod) and marked packets.
//! - mangle: a connection whose first packet carried the ztunnel's mark is marked 0x111, and
//!   that mark is put back on every packet the app sends in it; packets so marked are routed to
//!   `lo` (policy table 100). That is what brings an app's answers back to the ztunnel's
//!   transparent socket when the ztunnel connected from the real client's address.

/// The mark on every packet the ztunnel sends from a pod's namespace (`SO_MARK`).
pub const ZTUNNEL_MARK: u32 = 0x539;
/// The connection mark of connections the ztunnel opened into the pod.
pub const CONNECTION_MARK: u32 = 0x111;
/// The bits of a mark these rules own.
pub const MARK_MASK: u32 = 0xfff;
/// The policy-routing table that sends marked answers to `lo`.
pub const ROUTE_TABLE: u32 = 100;
/// The address kubelet probes arrive from in ambient mode (SNATed by istio-cni on the node).
pub const PROBE_SOURCE: &str = "169.254.7.127";

/// The ports the rules send traffic to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CapturePorts {
    pub outbound: u16,
    pub inbound_plaintext: u16,
    pub inbound_hbone: u16,
}

impl Default for CapturePorts {
    fn default() -> Self {
        CapturePorts {
            outbound: mesh_core::ports::OUTBOUND_CAPTURE,
            inbound_plaintext: mesh_core::ports::INBOUND_PLAINTEXT,
            inbound_hbone: mesh_core::ports::HBONE,
        }
    }
}

/// `iptables-restore` input that replaces the pod's mangle and nat tables with the capture
/// rules (the pod's namespace is the mesh's to manage in this mode, so replacing is idempotent).
pub fn iptables(ports: CapturePorts) -> String {
    let ztunnel = format!("{ZTUNNEL_MARK:#x}/{MARK_MASK:#x}");
    let connection = format!("{CONNECTION_MARK:#x}/{MARK_MASK:#x}");
    let CapturePorts {
        outbound,
        inbound_plaintext,
        inbound_hbone,
    } = ports;
    [
        "*mangle".to_string(),
        ":ISTIO_OUTPUT - [0:0]".into(),
        ":ISTIO_PRERT - [0:0]".into(),
        "-A PREROUTING -j ISTIO_PRERT".into(),
        "-A OUTPUT -j ISTIO_OUTPUT".into(),
        format!(
            "-A ISTIO_OUTPUT -m connmark --mark {connection} -j CONNMARK --restore-mark --nfmask 0xffffffff --ctmask 0xffffffff"
        ),
        format!("-A ISTIO_PRERT -m mark --mark {ztunnel} -j CONNMARK --set-xmark {connection}"),
        "COMMIT".into(),
        "*nat".into(),
        ":ISTIO_OUTPUT - [0:0]".into(),
        ":ISTIO_PRERT - [0:0]".into(),
        "-A PREROUTING -j ISTIO_PRERT".into(),
        "-A OUTPUT -j ISTIO_OUTPUT".into(),
        format!("-A ISTIO_OUTPUT -d {PROBE_SOURCE}/32 -p tcp -m tcp -j ACCEPT"),
        format!("-A ISTIO_OUTPUT -p tcp -m mark --mark {connection} -j ACCEPT"),
        "-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -j ACCEPT".into(),
        format!(
            "-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -p tcp -m mark ! --mark {ztunnel} -j REDIRECT --to-ports {outbound}"
        ),
        format!("-A ISTIO_PRERT -s {PROBE_SOURCE}/32 -p tcp -m tcp -j ACCEPT"),
        format!(
            "-A ISTIO_PRERT ! -d 127.0.0.1/32 -p tcp -m tcp ! --dport {inbound_hbone} -m mark ! --mark {ztunnel} -j REDIRECT --to-ports {inbound_plaintext}"
        ),
        "COMMIT".into(),
        String::new(),
    ]
    .join("\n")
}

/// `iptables-restore` input that stops capturing new connections: the nat table without the
/// redirects, its built-in chains kept. Connections already redirected go on (their NAT lives
/// in conntrack, applied as long as the table's hooks are there); the mangle rules and the
/// policy route stay too, since they act only on connections the ztunnel made, and keep those
/// still open answered until they end.
pub fn iptables_released() -> String {
    let chains = ["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"];
    let declared: Vec<String> = chains
        .iter()
        .map(|c| format!(":{c} ACCEPT [0:0]"))
        .collect();
    format!("*nat\n{}\nCOMMIT\n", declared.join("\n"))
}

/// `ip` argument lists for the policy routing: marked packets are routed to `lo`. Each is
/// idempotent (`replace`), so setting a pod up twice is harmless.
pub fn policy_routing() -> Vec<Vec<String>> {
    let table = ROUTE_TABLE.to_string();
    let mark = format!("{CONNECTION_MARK:#x}/{MARK_MASK:#x}");
    vec![
        // `ip rule` has no `replace`: delete first (failing when absent), then add.
        vec![
            "-4", "rule", "del", "fwmark", &mark, "pref", "32764", "lookup", &table,
        ],
        vec![
            "-4", "rule", "add", "fwmark", &mark, "pref", "32764", "lookup", &table,
        ],
        vec![
            "-4",
            "route",
            "replace",
            "local",
            "0.0.0.0/0",
            "dev",
            "lo",
            "table",
            &table,
        ],
    ]
    .into_iter()
    .map(|args| args.into_iter().map(String::from).collect())
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_outbound_and_inbound_but_never_the_ztunnels_own_packets() {
        let rules = iptables(CapturePorts::default());
        let redirects: Vec<&str> = rules.lines().filter(|l| l.contains("REDIRECT")).collect();
        assert_eq!(redirects.len(), 2, "{rules}");
        for line in &redirects {
            assert!(line.contains("-m mark ! --mark 0x539/0xfff"), "{line}");
        }
        assert!(redirects[0].starts_with("-A ISTIO_OUTPUT") && redirects[0].ends_with("15001"));
        assert!(redirects[1].starts_with("-A ISTIO_PRERT") && redirects[1].ends_with("15006"));
        assert!(redirects[1].contains("! --dport 15008"));
        // Both tables are complete transactions.
        assert_eq!(rules.matches("COMMIT").count(), 2);
    }

    #[test]
    fn the_ports_are_the_callers() {
        let rules = iptables(CapturePorts {
            outbound: 25001,
            inbound_plaintext: 25006,
            inbound_hbone: 25008,
        });
        assert!(rules.contains("--to-ports 25001"));
        assert!(rules.contains("--to-ports 25006"));
        assert!(rules.contains("! --dport 25008"));
    }

    #[test]
    fn releasing_keeps_the_nat_hooks_and_the_marks() {
        let released = iptables_released();
        assert!(released.starts_with("*nat\n") && released.ends_with("COMMIT\n"));
        assert!(released.contains(":OUTPUT ACCEPT") && released.contains(":PREROUTING ACCEPT"));
        assert!(!released.contains("REDIRECT") && !released.contains("*mangle"));
    }

    #[test]
    fn answers_marked_by_connection_are_routed_locally() {
        let routing = policy_routing();
        assert_eq!(
            routing[1].join(" "),
            "-4 rule add fwmark 0x111/0xfff pref 32764 lookup 100"
        );
        assert_eq!(
            routing[2].join(" "),
            "-4 route replace local 0.0.0.0/0 dev lo table 100"
        );
    }
}
