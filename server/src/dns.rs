//! The DNS interface to the service catalog: answers `NAME.service.orch.` (and
//! `TAG.NAME.service.orch.`) with A/AAAA records of the passing instances and SRV
//! records carrying their ports, over UDP and TCP, with hickory-server doing the wire
//! protocol. Authoritative for `orch.` only; everything else is REFUSED (no recursion).
//! See docs/operations.md ("DNS").
//!
//! SRV targets are `<address>.addr.orch.` (`10-0-0-5.addr.orch.` for 10.0.0.5, the
//! IPv6 groups joined by `-` for AAAA), answered from the name itself, so a target
//! resolves for as long as a resolver caches the SRV record, without a catalog read.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{Edns, Metadata, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA, SOA, SRV};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use orch_common::api::ServiceInstance;
use orch_common::model::CheckHealth;

use crate::catalog;
use crate::state::StateStore;

/// The zone answered for.
pub const ZONE: &str = "orch";
/// Default port of `[ports] dns`.
pub const DEFAULT_PORT: u16 = 4753;
/// How long a TCP connection may stay idle before it is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// The largest UDP answer: 512 bytes without EDNS; with it, what the query offers up
/// to 1232 (the DNS flag day 2020 size, which avoids IP fragmentation).
const UDP_PLAIN: u16 = 512;
const UDP_EDNS_MAX: u16 = 1232;
/// UDP queries answered per second per source address, and the burst allowed: above
/// it queries are dropped, so a spoofed source cannot aim the server's answers at a
/// victim at more than this rate. TCP is not limited (its handshake proves the source).
const PER_SOURCE_RATE: f64 = 100.0;
const PER_SOURCE_BURST: f64 = 200.0;
/// Sources remembered at most (idle ones are forgotten first).
const MAX_SOURCES: usize = 65_536;

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("binding the DNS {proto} socket to {addr}: {source}")]
    Bind {
        proto: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("reading the DNS {proto} socket address: {source}")]
    LocalAddr {
        proto: &'static str,
        source: std::io::Error,
    },
}

/// A running DNS server (UDP and TCP on the same port).
pub struct DnsServer {
    inner: hickory_server::Server<Handler>,
    addr: SocketAddr,
}

impl DnsServer {
    /// Binds UDP and TCP on `addr` (port 0: a free port, the same for both) and serves
    /// the catalog from `store`, records with time-to-live `ttl` seconds.
    pub async fn start(addr: SocketAddr, store: StateStore, ttl: u32) -> Result<Self, DnsError> {
        let (tcp, udp) = bind_pair(addr).await?;
        let bound = tcp.local_addr().map_err(|source| DnsError::LocalAddr {
            proto: "TCP",
            source,
        })?;
        let mut inner = hickory_server::Server::new(Handler {
            store,
            ttl,
            limiter: SourceLimiter::default(),
        });
        inner.register_socket(udp);
        inner.register_listener(tcp, TCP_IDLE, 64);
        tracing::info!(addr = %bound, ttl, "DNS interface listening (UDP and TCP)");
        Ok(DnsServer { inner, addr: bound })
    }

    /// The bound address (its port is the real one when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting queries and waits for the socket tasks to end.
    pub async fn shutdown(mut self) {
        if let Err(e) = self.inner.shutdown_gracefully().await {
            tracing::warn!(error = %e, "DNS server shutdown");
        }
    }
}

/// How many free ports to try when port 0 is asked for.
const PORT_ATTEMPTS: usize = 32;

/// A TCP listener and a UDP socket on the same port of `addr`. With port 0 the TCP
/// port is free but its UDP twin may not be (nor, the other way round, would a free UDP
/// port's TCP twin: outgoing connections use the same ephemeral range), so another
/// port is tried, a bounded number of times.
async fn bind_pair(
    addr: SocketAddr,
) -> Result<(tokio::net::TcpListener, tokio::net::UdpSocket), DnsError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let tcp = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| DnsError::Bind {
                proto: "TCP",
                addr,
                source,
            })?;
        let bound = tcp.local_addr().map_err(|source| DnsError::LocalAddr {
            proto: "TCP",
            source,
        })?;
        match tokio::net::UdpSocket::bind(bound).await {
            Ok(udp) => return Ok((tcp, udp)),
            Err(e)
                if addr.port() == 0
                    && e.kind() == std::io::ErrorKind::AddrInUse
                    && attempt < PORT_ATTEMPTS =>
            {
                continue
            }
            Err(source) => {
                return Err(DnsError::Bind {
                    proto: "UDP",
                    addr: bound,
                    source,
                })
            }
        }
    }
}

/// What a query name means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Not under `orch.`: refused (this is no recursive resolver).
    Outside,
    /// `orch.` itself.
    Apex,
    /// `[TAG.]NAME.service.orch.`
    Service { name: String, tag: Option<String> },
    /// `<address>.addr.orch.`: an SRV target.
    Addr(IpAddr),
    /// Under `orch.` but nothing we serve.
    Unknown,
}

/// Reads a (lowercased, fully qualified or not) query name.
pub fn parse(qname: &str) -> Target {
    let name = qname
        .strip_suffix('.')
        .unwrap_or(qname)
        .to_ascii_lowercase();
    let labels: Vec<&str> = name.split('.').collect();
    let Some((&last, rest)) = labels.split_last() else {
        return Target::Outside;
    };
    if last != ZONE {
        return Target::Outside;
    }
    match rest {
        [] => Target::Apex,
        [name, "service"] => Target::Service {
            name: name.to_string(),
            tag: None,
        },
        [tag, name, "service"] => Target::Service {
            name: name.to_string(),
            tag: Some(tag.to_string()),
        },
        [addr, "addr"] => parse_addr_label(addr).map_or(Target::Unknown, Target::Addr),
        _ => Target::Unknown,
    }
}

/// `10-0-0-5` -> 10.0.0.5; `fd00-0-0-0-0-0-0-1` -> fd00::1 (8 groups, `-` for `:`).
fn parse_addr_label(label: &str) -> Option<IpAddr> {
    let parts: Vec<&str> = label.split('-').collect();
    match parts.len() {
        4 => label
            .replace('-', ".")
            .parse::<Ipv4Addr>()
            .ok()
            .map(IpAddr::V4),
        8 => label
            .replace('-', ":")
            .parse::<Ipv6Addr>()
            .ok()
            .map(IpAddr::V6),
        _ => None,
    }
}

/// The SRV target name of an address (see the module doc).
pub fn addr_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{a}-{b}-{c}-{d}.addr.{ZONE}.")
        }
        IpAddr::V6(v6) => {
            let groups: Vec<String> = v6.segments().iter().map(|g| format!("{g:x}")).collect();
            format!("{}.addr.{ZONE}.", groups.join("-"))
        }
    }
}

/// An answer, before it is put on the wire.
#[derive(Debug, Default, PartialEq)]
pub struct Answer {
    pub code: ResponseCode,
    pub answers: Vec<Record>,
    pub additionals: Vec<Record>,
    /// The zone's SOA in the authority section (negative answers, for their caching).
    pub soa: bool,
}

impl Answer {
    fn nxdomain() -> Self {
        Answer {
            code: ResponseCode::NXDomain,
            soa: true,
            ..Answer::default()
        }
    }
}

fn fqdn(name: &str) -> Option<Name> {
    Name::from_ascii(name).ok().map(|mut n| {
        n.set_fqdn(true);
        n
    })
}

fn address_record(name: &Name, ip: IpAddr, ttl: u32) -> Record {
    let rdata = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(name.clone(), ttl, rdata)
}

fn wants(qtype: RecordType, ip: IpAddr) -> bool {
    match qtype {
        RecordType::A => ip.is_ipv4(),
        RecordType::AAAA => ip.is_ipv6(),
        RecordType::ANY => true,
        _ => false,
    }
}

/// The answer for `[tag.]name.service.orch.`: `instances` are all of the service's
/// catalog instances (any health). The name exists when one of them matches the tag
/// (NXDOMAIN otherwise); only `passing` ones with a usable IP address are answered, so
/// a service whose instances are all pending or critical is NOERROR with no records.
pub fn service_answer(
    qname: &Name,
    qtype: RecordType,
    tag: Option<&str>,
    instances: &[ServiceInstance],
    ttl: u32,
) -> Answer {
    let matching: Vec<&ServiceInstance> = instances
        .iter()
        .filter(|i| tag.is_none_or(|t| i.tags.iter().any(|it| it.eq_ignore_ascii_case(t))))
        .collect();
    if matching.is_empty() {
        return Answer::nxdomain();
    }
    let mut out = Answer::default();
    for i in matching {
        if i.health != CheckHealth::Passing {
            continue;
        }
        let Ok(ip) = i.address.parse::<IpAddr>() else {
            continue;
        };
        if wants(qtype, ip) && !out.answers.iter().any(|r| same_addr(r, ip)) {
            out.answers.push(address_record(qname, ip, ttl));
        }
        if matches!(qtype, RecordType::SRV | RecordType::ANY) {
            // An instance without a port has nothing to put in an SRV record.
            let (Some(port), Some(target)) = (i.port, fqdn(&addr_name(ip))) else {
                continue;
            };
            let srv = SRV::new(0, 0, port, target.clone());
            out.answers
                .push(Record::from_rdata(qname.clone(), ttl, RData::SRV(srv)));
            if !out.additionals.iter().any(|r| r.name == target) {
                out.additionals.push(address_record(&target, ip, ttl));
            }
        }
    }
    out.soa = out.answers.is_empty();
    out
}

fn same_addr(r: &Record, ip: IpAddr) -> bool {
    match (&r.data, ip) {
        (RData::A(a), IpAddr::V4(v4)) => a.0 == v4,
        (RData::AAAA(a), IpAddr::V6(v6)) => a.0 == v6,
        _ => false,
    }
}

/// An upper bound of a record's size on the wire (its owner and target names counted
/// uncompressed).
fn wire_len(r: &Record) -> usize {
    let name_len = |n: &Name| n.to_ascii().len() + 1;
    let rdata = match &r.data {
        RData::A(_) => 4,
        RData::AAAA(_) => 16,
        RData::SRV(s) => 6 + name_len(&s.target),
        RData::SOA(s) => name_len(&s.mname) + name_len(&s.rname) + 20,
        _ => 512,
    };
    name_len(&r.name) + 10 + rdata
}

/// Whether `answer` surely fits a UDP response of `max_payload` bytes (header,
/// question of `qname`, OPT and SOA included). When it does not, the response is sent
/// empty with the TC bit, and resolvers retry over TCP, where any size goes: better than
/// a partial list of instances, which a client would take as the whole service.
pub fn fits_udp(answer: &Answer, qname: &Name, max_payload: usize) -> bool {
    let fixed = 12 + (qname.to_ascii().len() + 1 + 4) + 11 + 120;
    let records: usize = answer
        .answers
        .iter()
        .chain(&answer.additionals)
        .map(wire_len)
        .sum();
    fixed + records <= max_payload
}

/// The answer for `<address>.addr.orch.`: the address in its own name.
pub fn addr_answer(qname: &Name, qtype: RecordType, ip: IpAddr, ttl: u32) -> Answer {
    let mut out = Answer::default();
    if wants(qtype, ip) {
        out.answers.push(address_record(qname, ip, ttl));
    }
    out.soa = out.answers.is_empty();
    out
}

/// The zone's SOA record; its minimum (the negative-caching time) is `ttl`.
fn soa_record(ttl: u32) -> Option<Record> {
    let zone = fqdn(ZONE)?;
    let mname = fqdn(&format!("ns.{ZONE}"))?;
    let rname = fqdn(&format!("hostmaster.{ZONE}"))?;
    let soa = SOA::new(mname, rname, 1, 3600, 600, 86400, ttl);
    Some(Record::from_rdata(zone, ttl, RData::SOA(soa)))
}

struct Handler {
    store: StateStore,
    ttl: u32,
    limiter: SourceLimiter,
}

/// The UDP answer size limit for a query that offers `edns_payload` (`None`: no EDNS).
fn udp_payload_limit(edns_payload: Option<u16>) -> u16 {
    edns_payload.map_or(UDP_PLAIN, |p| p.clamp(UDP_PLAIN, UDP_EDNS_MAX))
}

/// A token bucket per source address for UDP queries.
#[derive(Default)]
struct SourceLimiter {
    buckets: std::sync::Mutex<std::collections::HashMap<IpAddr, (f64, std::time::Instant)>>,
}

impl SourceLimiter {
    /// Whether a query from `ip` at `now` is answered (and takes a token).
    fn allow(&self, ip: IpAddr, now: std::time::Instant) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_SOURCES && !buckets.contains_key(&ip) {
            // Full sources refill in BURST/RATE seconds: forget those, else all.
            let idle = Duration::from_secs_f64(PER_SOURCE_BURST / PER_SOURCE_RATE);
            buckets.retain(|_, (_, at)| now.saturating_duration_since(*at) < idle);
            if buckets.len() >= MAX_SOURCES {
                buckets.clear();
            }
        }
        let (tokens, at) = buckets.entry(ip).or_insert((PER_SOURCE_BURST, now));
        let refill = now.saturating_duration_since(*at).as_secs_f64() * PER_SOURCE_RATE;
        *tokens = (*tokens + refill).min(PER_SOURCE_BURST);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl Handler {
    async fn answer(&self, qname: &Name, qtype: RecordType) -> Answer {
        match parse(&qname.to_ascii()) {
            Target::Outside => Answer {
                code: ResponseCode::Refused,
                ..Answer::default()
            },
            Target::Unknown => Answer::nxdomain(),
            Target::Apex => {
                let mut out = Answer::default();
                match soa_record(self.ttl) {
                    Some(soa) if matches!(qtype, RecordType::SOA | RecordType::ANY) => {
                        out.answers.push(soa)
                    }
                    _ => out.soa = true,
                }
                out
            }
            Target::Addr(ip) => addr_answer(qname, qtype, ip, self.ttl),
            Target::Service { name, tag } => {
                let store = self.store.clone();
                let lookup = name.clone();
                // The same read as `GET /v1/service/{name}`; every instance, since one
                // that is not passing still makes the name exist.
                let read = tokio::task::spawn_blocking(move || {
                    catalog::service_instances(&store, &lookup, false)
                })
                .await;
                match read {
                    Ok(Ok(instances)) => {
                        service_answer(qname, qtype, tag.as_deref(), &instances, self.ttl)
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(service = %name, error = %e, "DNS: reading the catalog");
                        Answer {
                            code: ResponseCode::ServFail,
                            ..Answer::default()
                        }
                    }
                    Err(e) => {
                        tracing::warn!(service = %name, error = %e, "DNS: catalog read task");
                        Answer {
                            code: ResponseCode::ServFail,
                            ..Answer::default()
                        }
                    }
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        if request.protocol() == Protocol::Udp
            && !self
                .limiter
                .allow(request.src().ip(), std::time::Instant::now())
        {
            // Dropped: no answer to amplify. Nothing is sent; the info is for the log.
            let mut meta = Metadata::response_from_request(&request.metadata);
            meta.response_code = ResponseCode::Refused;
            return hickory_server::proto::op::Header {
                metadata: meta,
                counts: Default::default(),
            }
            .into();
        }
        let edns = request.edns.as_ref().map(|req| {
            let mut e = Edns::new();
            e.set_max_payload(udp_payload_limit(Some(req.max_payload())));
            e.set_version(0);
            e
        });
        let builder = MessageResponseBuilder::new(&request.queries, edns.as_ref());
        let answer = match request.request_info() {
            Ok(info) => {
                let qname: Name = info.query.name().into();
                self.answer(&qname, info.query.query_type()).await
            }
            // Not exactly one question.
            Err(_) => Answer {
                code: ResponseCode::FormErr,
                ..Answer::default()
            },
        };
        let mut meta = Metadata::response_from_request(&request.metadata);
        meta.authoritative = answer.code != ResponseCode::Refused;
        meta.response_code = answer.code;
        let max_payload = usize::from(udp_payload_limit(edns.as_ref().map(|e| e.max_payload())));
        let answer = match request.request_info() {
            Ok(info)
                if request.protocol() == Protocol::Udp
                    && !fits_udp(&answer, &info.query.name().into(), max_payload) =>
            {
                meta.truncation = true;
                Answer {
                    code: answer.code,
                    ..Answer::default()
                }
            }
            _ => answer,
        };
        let soa: Vec<Record> = if answer.soa {
            soa_record(self.ttl).into_iter().collect()
        } else {
            Vec::new()
        };
        let response = builder.build(
            meta,
            answer.answers.iter(),
            std::iter::empty(),
            soa.iter(),
            answer.additionals.iter(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(error = %e, "DNS: sending a response");
                let mut meta = Metadata::response_from_request(&request.metadata);
                meta.response_code = ResponseCode::ServFail;
                hickory_server::proto::op::Header {
                    metadata: meta,
                    counts: Default::default(),
                }
                .into()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(alloc: &str, address: &str, port: Option<u16>, health: CheckHealth) -> ServiceInstance {
        ServiceInstance {
            service: "web".into(),
            alloc_id: alloc.into(),
            job_id: "j".into(),
            group: "g".into(),
            node_id: "n".into(),
            node_name: "n".into(),
            address: address.into(),
            port,
            address_mode: "auto".into(),
            tags: vec!["v1".into()],
            canary_tags: vec![],
            canary: false,
            meta: Default::default(),
            health,
            checks: Default::default(),
        }
    }

    fn name(s: &str) -> Name {
        fqdn(s).expect("valid name")
    }

    #[test]
    fn names_are_parsed() {
        assert_eq!(
            parse("web.service.orch."),
            Target::Service {
                name: "web".into(),
                tag: None
            }
        );
        assert_eq!(
            parse("V1.Web.service.orch"),
            Target::Service {
                name: "web".into(),
                tag: Some("v1".into())
            }
        );
        assert_eq!(parse("orch."), Target::Apex);
        assert_eq!(parse("example.com."), Target::Outside);
        assert_eq!(parse("a.b.web.service.orch."), Target::Unknown);
        assert_eq!(parse("web.node.orch."), Target::Unknown);
        assert_eq!(
            parse("10-0-0-5.addr.orch."),
            Target::Addr("10.0.0.5".parse().expect("ip"))
        );
        assert_eq!(parse("10-0-0.addr.orch."), Target::Unknown);
        assert_eq!(parse("300-0-0-1.addr.orch."), Target::Unknown);
    }

    #[test]
    fn addr_names_round_trip() {
        for ip in ["10.0.0.5", "fd00::1", "::1", "2001:db8::a:b"] {
            let ip: IpAddr = ip.parse().expect("ip");
            let n = addr_name(ip);
            assert_eq!(parse(&n), Target::Addr(ip), "{n}");
        }
        assert_eq!(
            addr_name("10.0.0.5".parse().expect("ip")),
            "10-0-0-5.addr.orch."
        );
    }

    #[test]
    fn srv_lists_passing_instances_with_address_targets() {
        let all = [
            inst("a1", "10.0.0.5", Some(20001), CheckHealth::Passing),
            inst("a2", "10.0.0.5", Some(20002), CheckHealth::Passing),
            inst("a3", "10.0.0.6", Some(20003), CheckHealth::Critical),
            inst("a4", "10.0.0.7", Some(20004), CheckHealth::Pending),
        ];
        let q = name("web.service.orch.");
        let a = service_answer(&q, RecordType::SRV, None, &all, 0);
        assert_eq!(a.code, ResponseCode::NoError);
        let srv: Vec<(u16, String)> = a
            .answers
            .iter()
            .map(|r| match &r.data {
                RData::SRV(s) => (s.port, s.target.to_ascii()),
                other => panic!("not SRV: {other:?}"),
            })
            .collect();
        assert_eq!(
            srv,
            [
                (20001, "10-0-0-5.addr.orch.".to_string()),
                (20002, "10-0-0-5.addr.orch.".to_string())
            ]
        );
        // One glue A record per distinct target.
        assert_eq!(a.additionals.len(), 1);
        assert_eq!(a.additionals[0].name.to_ascii(), "10-0-0-5.addr.orch.");
        assert!(a.answers.iter().all(|r| r.ttl == 0));
    }

    #[test]
    fn a_and_aaaa_answer_distinct_passing_addresses() {
        let all = [
            inst("a1", "10.0.0.5", Some(1), CheckHealth::Passing),
            inst("a2", "10.0.0.5", Some(2), CheckHealth::Passing),
            inst("a3", "fd00::1", Some(3), CheckHealth::Passing),
            inst("a4", "10.0.0.9", Some(4), CheckHealth::Critical),
            inst("a5", "", None, CheckHealth::Passing),
        ];
        let q = name("web.service.orch.");
        let a = service_answer(&q, RecordType::A, None, &all, 5);
        assert_eq!(a.answers.len(), 1);
        assert_eq!(
            a.answers[0].data,
            RData::A(A("10.0.0.5".parse().expect("ip")))
        );
        assert_eq!(a.answers[0].ttl, 5);
        let aaaa = service_answer(&q, RecordType::AAAA, None, &all, 5);
        assert_eq!(aaaa.answers.len(), 1);
        assert!(aaaa.additionals.is_empty());
    }

    #[test]
    fn unknown_is_nxdomain_but_unhealthy_is_empty_noerror() {
        let q = name("web.service.orch.");
        let none = service_answer(&q, RecordType::SRV, None, &[], 0);
        assert_eq!(none.code, ResponseCode::NXDomain);
        assert!(none.soa);
        let sick = [inst("a1", "10.0.0.5", Some(1), CheckHealth::Critical)];
        let empty = service_answer(&q, RecordType::SRV, None, &sick, 0);
        assert_eq!(empty.code, ResponseCode::NoError);
        assert!(empty.answers.is_empty() && empty.soa);
        // A record type we don't serve for an existing name: NOERROR, no records.
        let ok = [inst("a1", "10.0.0.5", Some(1), CheckHealth::Passing)];
        let txt = service_answer(&q, RecordType::TXT, None, &ok, 0);
        assert_eq!(txt.code, ResponseCode::NoError);
        assert!(txt.answers.is_empty());
    }

    #[test]
    fn tags_filter_and_an_unknown_tag_is_nxdomain() {
        let mut other = inst("a2", "10.0.0.6", Some(2), CheckHealth::Passing);
        other.tags = vec!["v2".into()];
        let all = [inst("a1", "10.0.0.5", Some(1), CheckHealth::Passing), other];
        let q = name("v2.web.service.orch.");
        let a = service_answer(&q, RecordType::A, Some("v2"), &all, 0);
        assert_eq!(a.answers.len(), 1);
        assert_eq!(
            a.answers[0].data,
            RData::A(A("10.0.0.6".parse().expect("ip")))
        );
        let x = service_answer(&q, RecordType::A, Some("v9"), &all, 0);
        assert_eq!(x.code, ResponseCode::NXDomain);
    }

    #[test]
    fn a_large_answer_does_not_fit_udp() {
        let q = name("web.service.orch.");
        let many: Vec<ServiceInstance> = (0..60u16)
            .map(|n| {
                let addr = format!("10.0.{}.{}", n / 200, n % 200);
                inst(
                    &format!("a{n}"),
                    &addr,
                    Some(20000 + n),
                    CheckHealth::Passing,
                )
            })
            .collect();
        let big = service_answer(&q, RecordType::SRV, None, &many, 0);
        assert_eq!(big.answers.len(), 60);
        assert!(!fits_udp(&big, &q, 512));
        assert!(!fits_udp(&big, &q, 1232));
        let small = service_answer(&q, RecordType::SRV, None, &many[..2], 0);
        assert!(fits_udp(&small, &q, 512));
    }

    #[test]
    fn udp_answers_are_capped_at_512_bytes_or_1232_with_edns() {
        assert_eq!(udp_payload_limit(None), 512);
        assert_eq!(udp_payload_limit(Some(100)), 512);
        assert_eq!(udp_payload_limit(Some(1000)), 1000);
        assert_eq!(udp_payload_limit(Some(4096)), 1232);
        assert_eq!(udp_payload_limit(Some(u16::MAX)), 1232);
    }

    #[test]
    fn each_source_gets_its_burst_then_its_rate() {
        let limiter = SourceLimiter::default();
        let t0 = std::time::Instant::now();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let answered = (0..1000).filter(|_| limiter.allow(a, t0)).count();
        assert_eq!(answered, PER_SOURCE_BURST as usize);
        assert!(limiter.allow(b, t0), "another source has its own bucket");
        // A second later, a second's worth more.
        let t1 = t0 + Duration::from_secs(1);
        let later = (0..1000).filter(|_| limiter.allow(a, t1)).count();
        assert_eq!(later, PER_SOURCE_RATE as usize);
    }

    #[tokio::test]
    async fn port_zero_binds_udp_and_tcp_on_one_port() {
        for _ in 0..20 {
            let (tcp, udp) = bind_pair("127.0.0.1:0".parse().expect("addr"))
                .await
                .expect("bind");
            let port = tcp.local_addr().expect("tcp addr").port();
            assert_ne!(port, 0);
            assert_eq!(udp.local_addr().expect("udp addr").port(), port);
        }
    }

    #[test]
    fn addr_names_answer_their_own_address() {
        let q = name("10-0-0-5.addr.orch.");
        let ip = "10.0.0.5".parse().expect("ip");
        assert_eq!(addr_answer(&q, RecordType::A, ip, 0).answers.len(), 1);
        let aaaa = addr_answer(&q, RecordType::AAAA, ip, 0);
        assert!(aaaa.answers.is_empty() && aaaa.soa);
    }
}
