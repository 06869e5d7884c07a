//! Network namespaces for tests that need hosts with their own addresses and a network
//! cut: a star of namespaces around a hub, made with `ip netns` and veth pairs, and
//! removed on drop (also when the test fails).
//!
//! ```text
//!  root ns  <prefix>r ──── <prefix>h  hub ns (10.231.0.1; also reachable as .N.1)
//!  10.231.0.2                          │
//!                          <prefix>sN ─┴─ <prefix>lN   leaf ns N (10.231.N.2,
//!                                                      default route via 10.231.N.1)
//! ```
//!
//! The hub answers on 10.231.0.1 from every leaf (routed over the leaf's link), and
//! the test process reaches it over its own link. The hub forwards between its links,
//! so leaves reach each other and the test process reaches every leaf. `cut(N)` takes
//! leaf N's link down; `heal(N)` brings it back.

use std::path::PathBuf;
use std::process::Command;

/// The namespaces and links of one star.
pub struct Star {
    prefix: String,
    leaves: usize,
    /// `10.X`: each star its own, so that stars of tests running at once do not
    /// collide.
    net: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("running ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Star {
    /// A hub and `leaves` leaf namespaces named `<prefix>-hub`, `<prefix>-leafN`.
    /// `prefix` must be short (interface names are at most 15 bytes). Leftovers of an
    /// earlier run with the same prefix are removed first.
    pub fn new(prefix: &str, leaves: usize) -> Result<Star, String> {
        Star::in_net(prefix, leaves, 231)
    }

    /// `new` in `10.<net>.0.0/16` (each star running at once needs its own).
    pub fn in_net(prefix: &str, leaves: usize, net: u8) -> Result<Star, String> {
        assert!(
            prefix.len() <= 8,
            "prefix {prefix:?} is too long for link names"
        );
        assert!((1..=9).contains(&leaves));
        let star = Star {
            prefix: prefix.to_string(),
            leaves,
            net: format!("10.{net}"),
        };
        star.remove();
        star.build()?;
        Ok(star)
    }

    fn build(&self) -> Result<(), String> {
        let hub = self.hub();
        ip(&["netns", "add", &hub])?;
        ip(&["-n", &hub, "link", "set", "lo", "up"])?;
        let (root_link, hub_link) = (format!("{}r", self.prefix), format!("{}h", self.prefix));
        ip(&[
            "link", "add", &root_link, "type", "veth", "peer", "name", &hub_link,
        ])?;
        ip(&["link", "set", &hub_link, "netns", &hub])?;
        ip(&[
            "addr",
            "add",
            &format!("{}.0.2/24", self.net),
            "dev",
            &root_link,
        ])?;
        ip(&["link", "set", &root_link, "up"])?;
        ip(&[
            "-n",
            &hub,
            "addr",
            "add",
            &format!("{}.0.1/24", self.net),
            "dev",
            &hub_link,
        ])?;
        ip(&["-n", &hub, "link", "set", &hub_link, "up"])?;
        // Leaves reach each other, and the test process reaches them, through the hub.
        ip(&[
            "netns",
            "exec",
            &hub,
            "sh",
            "-c",
            "echo 1 > /proc/sys/net/ipv4/ip_forward",
        ])?;
        ip(&[
            "route",
            "add",
            &format!("{}.0.0/16", self.net),
            "via",
            &format!("{}.0.1", self.net),
        ])?;
        for n in 1..=self.leaves {
            let leaf = self.leaf(n);
            let (spoke, end) = (self.spoke_link(n), self.leaf_link(n));
            ip(&["netns", "add", &leaf])?;
            ip(&["-n", &leaf, "link", "set", "lo", "up"])?;
            ip(&["link", "add", &spoke, "type", "veth", "peer", "name", &end])?;
            ip(&["link", "set", &spoke, "netns", &hub])?;
            ip(&["link", "set", &end, "netns", &leaf])?;
            ip(&[
                "-n",
                &hub,
                "addr",
                "add",
                &format!("{}.{n}.1/24", self.net),
                "dev",
                &spoke,
            ])?;
            ip(&["-n", &hub, "link", "set", &spoke, "up"])?;
            ip(&[
                "-n",
                &leaf,
                "addr",
                "add",
                &format!("{}.{n}.2/24", self.net),
                "dev",
                &end,
            ])?;
            ip(&["-n", &leaf, "link", "set", &end, "up"])?;
            ip(&[
                "-n",
                &leaf,
                "route",
                "add",
                "default",
                "via",
                &format!("{}.{n}.1", self.net),
            ])?;
        }
        Ok(())
    }

    fn hub(&self) -> String {
        format!("{}-hub", self.prefix)
    }

    fn leaf(&self, n: usize) -> String {
        format!("{}-leaf{n}", self.prefix)
    }

    fn spoke_link(&self, n: usize) -> String {
        format!("{}s{n}", self.prefix)
    }

    fn leaf_link(&self, n: usize) -> String {
        format!("{}l{n}", self.prefix)
    }

    /// The hub's namespace file, for `setns`.
    pub fn hub_ns(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(self.hub())
    }

    /// Leaf `n`'s namespace file (1-based).
    pub fn leaf_ns(&self, n: usize) -> PathBuf {
        PathBuf::from("/var/run/netns").join(self.leaf(n))
    }

    /// The hub's address, reachable from the test process and every leaf.
    pub fn hub_addr(&self) -> String {
        format!("{}.0.1", self.net)
    }

    /// Leaf `n`'s address.
    pub fn leaf_addr(&self, n: usize) -> String {
        format!("{}.{n}.2", self.net)
    }

    /// Leaf `n`'s namespace name, for `ip netns exec`.
    pub fn leaf_name(&self, n: usize) -> String {
        self.leaf(n)
    }

    /// Cuts leaf `n` off: its link goes down, so nothing reaches it or leaves it.
    pub fn cut(&self, n: usize) {
        ip(&[
            "-n",
            &self.leaf(n),
            "link",
            "set",
            &self.leaf_link(n),
            "down",
        ])
        .expect("cut");
    }

    /// Cuts leaf `n` off at the hub: nothing reaches it or leaves it, but its own link
    /// stays up, so a process inside it still reaches its own address.
    pub fn isolate(&self, n: usize) {
        ip(&[
            "-n",
            &self.hub(),
            "link",
            "set",
            &self.spoke_link(n),
            "down",
        ])
        .expect("isolate");
    }

    /// Undoes `isolate`.
    pub fn rejoin(&self, n: usize) {
        ip(&["-n", &self.hub(), "link", "set", &self.spoke_link(n), "up"]).expect("rejoin");
    }

    /// Brings leaf `n`'s link back, with its default route.
    pub fn heal(&self, n: usize) {
        let leaf = self.leaf(n);
        ip(&["-n", &leaf, "link", "set", &self.leaf_link(n), "up"]).expect("heal");
        // The default route went with the link; put it back (it may already be there).
        let _ = ip(&[
            "-n",
            &leaf,
            "route",
            "replace",
            "default",
            "via",
            &format!("{}.{n}.1", self.net),
        ]);
    }

    /// Deletes the namespaces (their links go with them) and the root's link.
    fn remove(&self) {
        for n in 1..=self.leaves {
            let _ = ip(&["netns", "del", &self.leaf(n)]);
        }
        let _ = ip(&["netns", "del", &self.hub()]);
        let _ = ip(&["link", "del", &format!("{}r", self.prefix)]);
    }
}

impl Drop for Star {
    fn drop(&mut self) {
        self.remove();
    }
}
