//! Network partitions on one machine: a [`Lab`] address on loopback where a test's own Redis and
//! Kafka listen, and [`Netns`] network namespaces whose processes reach that address over a veth
//! link and can be cut off from chosen ports of it with nftables rules: `drop` (the packets
//! vanish and nobody is told, as in a real partition) or `reject` (connections are reset). Needs root, `ip` and `nft`
//! (`scripts/services.sh up` installs them). A [`LinkCut`] drops one connection's packets on
//! loopback itself, outside every namespace.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Runs `program args`, failing the test with its output if it fails.
fn run(program: &str, args: &[&str]) {
    let output = Command::new(program).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "`{program} {}` failed (the network fault cases need root, ip and nft; scripts/services.sh up installs them): {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// An address of this machine (10.230.X.1 on `lo`) for servers that namespaced processes must
/// reach; the processes outside every namespace reach it as any local address. Removed when
/// dropped.
#[derive(Debug)]
pub struct Lab {
    /// The address, `10.230.X.1`.
    pub address: String,
    third: u8,
    namespaces: AtomicU32,
}

impl Lab {
    /// Takes the first 10.230.X.1 this machine does not have yet.
    pub fn new() -> Self {
        for third in 1..=250u8 {
            let address = format!("10.230.{third}.1");
            let added = Command::new("ip")
                .args(["addr", "add", &format!("{address}/32"), "dev", "lo"])
                .output()
                .unwrap();
            if added.status.success() {
                return Self {
                    address,
                    third,
                    namespaces: AtomicU32::new(0),
                };
            }
            let why = String::from_utf8_lossy(&added.stderr);
            assert!(
                why.contains("exists") || why.contains("already assigned"),
                "cannot add an address to lo (the network fault cases need root and ip): {why}"
            );
        }
        panic!("every address 10.230.1-250.1 is taken");
    }
}

impl Default for Lab {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["addr", "del", &format!("{}/32", self.address), "dev", "lo"])
            .output();
    }
}

/// A network namespace linked to this machine by a veth pair, routed to its [`Lab`]'s address
/// only, with an nftables output chain for cuts. Deleted when dropped (its processes must be
/// gone by then).
#[derive(Debug)]
pub struct Netns {
    /// The namespace's name, for `ip netns exec`.
    pub name: String,
    lab: String,
}

impl Netns {
    /// A new namespace reaching `lab`'s address.
    pub fn new(lab: &Lab) -> Self {
        let n = lab.namespaces.fetch_add(1, Ordering::Relaxed);
        assert!(n < 63, "at most 63 namespaces per lab");
        let pid = std::process::id() % 100_000;
        let name = format!("agency-{pid}-{}-{n}", lab.third);
        // Interface names are at most 15 bytes.
        let (host, inside) = (
            format!("ag{}h{n}", lab.third),
            format!("ag{}n{n}", lab.third),
        );
        let host_ip = format!("10.231.{}.{}", lab.third, 4 * n + 1);
        let inside_ip = format!("10.231.{}.{}", lab.third, 4 * n + 2);
        run("ip", &["netns", "add", &name]);
        let netns = Self {
            name: name.clone(),
            lab: lab.address.clone(),
        };
        run(
            "ip",
            &[
                "link", "add", &host, "type", "veth", "peer", "name", &inside,
            ],
        );
        run("ip", &["link", "set", &inside, "netns", &name]);
        run(
            "ip",
            &["addr", "add", &format!("{host_ip}/30"), "dev", &host],
        );
        run("ip", &["link", "set", &host, "up"]);
        netns.exec(&["ip", "link", "set", "lo", "up"]);
        netns.exec(&[
            "ip",
            "addr",
            "add",
            &format!("{inside_ip}/30"),
            "dev",
            &inside,
        ]);
        netns.exec(&["ip", "link", "set", &inside, "up"]);
        netns.exec(&[
            "ip",
            "route",
            "add",
            &format!("{}/32", lab.address),
            "via",
            &host_ip,
        ]);
        netns.exec(&["nft", "add", "table", "inet", "agency"]);
        netns.exec(&[
            "nft",
            "add",
            "chain",
            "inet",
            "agency",
            "out",
            "{ type filter hook output priority 0; }",
        ]);
        netns
    }

    fn exec(&self, command: &[&str]) {
        let mut args = vec!["netns", "exec", &self.name];
        args.extend_from_slice(command);
        run("ip", &args);
    }

    /// The prefix that runs a program in this namespace, for [`crate::Cluster::spawn_via`].
    pub fn via(&self) -> [&str; 4] {
        ["ip", "netns", "exec", &self.name]
    }

    /// Cuts this namespace's processes off from `ports` of the lab's address: every packet they
    /// send there is dropped, and nobody is told.
    pub fn cut(&self, ports: &[u16]) {
        self.rule(ports, &["drop"]);
    }

    /// Cuts them off answering: every connection there is reset (a TCP RST), as a firewall's
    /// REJECT does.
    pub fn refuse(&self, ports: &[u16]) {
        self.rule(ports, &["reject", "with", "tcp", "reset"]);
    }

    fn rule(&self, ports: &[u16], verdict: &[&str]) {
        for port in ports {
            let port = port.to_string();
            let mut rule = vec![
                "nft", "add", "rule", "inet", "agency", "out", "ip", "daddr", &self.lab, "tcp",
                "dport", &port,
            ];
            rule.extend_from_slice(verdict);
            self.exec(&rule);
        }
    }

    /// Ends every cut.
    pub fn heal(&self) {
        self.exec(&["nft", "flush", "chain", "inet", "agency", "out"]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// One TCP connection on 127.0.0.1 cut, in this machine's own namespace: nftables drops every
/// packet between its two ports, both ways, and neither end is told. The rest of loopback is
/// untouched. Ended when dropped.
#[derive(Debug)]
pub struct LinkCut {
    table: String,
}

impl LinkCut {
    /// Cuts the connection between ports `a` and `b` of 127.0.0.1.
    pub fn new(a: u16, b: u16) -> Self {
        let table = format!("agency_cut_{}_{a}_{b}", std::process::id());
        run("nft", &["add", "table", "inet", &table]);
        let cut = Self { table };
        run(
            "nft",
            &[
                "add",
                "chain",
                "inet",
                &cut.table,
                "out",
                "{ type filter hook output priority 0; }",
            ],
        );
        for (from, to) in [(a, b), (b, a)] {
            let (from, to) = (from.to_string(), to.to_string());
            run(
                "nft",
                &[
                    "add",
                    "rule",
                    "inet",
                    &cut.table,
                    "out",
                    "ip",
                    "saddr",
                    "127.0.0.1",
                    "tcp",
                    "sport",
                    &from,
                    "tcp",
                    "dport",
                    &to,
                    "drop",
                ],
            );
        }
        cut
    }
}

impl Drop for LinkCut {
    fn drop(&mut self) {
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", &self.table])
            .output();
    }
}
