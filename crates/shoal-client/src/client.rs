//! [`ServerClient`]: every call an agent or a balancer makes to the server (the agent
//! protocol of `shoal_api::agent_api`), over any [`Transport`].
//!
//! Calls go out as `http::Request<Bytes>` and come back decoded into Shoal's records.
//! Watches come back as streams of store [`Event`]s whose values are still the JSON
//! bytes the server sent: the caller's typed cache decodes each value once.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::value::RawValue;
use shoal_model::ids::VmssRef;
use shoal_model::records::{
    BalancerRecord, DrainAck, HealthRecord, HostPeer, HostRecord, InstanceRecord, InstanceStatus,
};
use shoal_store::{Event, KeyValue, Revision};

use crate::transport::{Body, Deadline, HttpTransport, Transport, TransportError};

/// How long a metrics push may take (metrics are best effort; a slow server must not
/// hold up the next second's samples).
const METRICS_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Unreachable(#[from] TransportError),
    #[error("The Shoal server answered {status} to {what}: {body}")]
    Refused {
        what: &'static str,
        status: u16,
        body: String,
    },
    #[error("The Shoal server sent something unreadable for {what}")]
    Decode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// The server no longer has the history the watch needs: list again.
    #[error("The watch must start over from a fresh list")]
    Compacted,
    /// The server ended the watch with an error of its own (e.g. its store failed).
    #[error("The Shoal server ended the watch ({code})")]
    WatchEnded { code: String },
}

/// An answer passed on as it came (status and body).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
}

/// What `POST /shoal/v1/join` answers: a credential for `name`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Joined {
    pub name: String,
    pub role: String,
    pub credential: String,
    pub expires_on: String,
    /// The SHA-256 of the server's certificate the join token named (hex), kept with the
    /// credential so later starts trust the same server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_certificate_sha256: Option<String>,
}

/// A handle on one Shoal server; cheap to clone (all clones share the transport).
#[derive(Clone)]
pub struct ServerClient {
    transport: Arc<dyn Transport>,
    /// The host or balancer credential every call carries (`Authorization: Bearer`).
    credential: Option<Arc<str>>,
}

impl std::fmt::Debug for ServerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerClient")
            .field("target", &self.target())
            .finish()
    }
}

impl ServerClient {
    pub fn new(transport: Arc<dyn Transport>) -> Self {
        ServerClient {
            transport,
            credential: None,
        }
    }

    /// This client with a host or balancer credential on every call.
    pub fn with_credential(mut self, credential: &str) -> Self {
        self.credential = Some(credential.into());
        self
    }

    /// A client of the server at `base` (e.g. `http://127.0.0.1:7070`) over the network.
    pub fn http(base: &str) -> Self {
        ServerClient::new(Arc::new(HttpTransport::new(base)))
    }

    /// A client of `base` whose https connections trust only the certificate with SHA-256
    /// `pin` (see [`HttpTransport::pinned`]).
    pub fn http_pinned(base: &str, pin: Option<[u8; 32]>) -> Self {
        ServerClient::new(Arc::new(HttpTransport::pinned(base, pin)))
    }

    /// Where requests go, for logs.
    pub fn target(&self) -> &str {
        self.transport.target()
    }

    /// Sends a request and returns the answer whatever its status.
    async fn send(
        &self,
        method: Method,
        path: String,
        body: Option<Vec<u8>>,
        deadline: Option<Deadline>,
    ) -> Result<http::Response<Body>, ClientError> {
        let mut req = http::Request::builder().method(method).uri(path);
        if body.is_some() {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
        }
        if let Some(d) = deadline {
            req = req.extension(d);
        }
        if let Some(c) = &self.credential {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {c}"));
        }
        let req = req
            .body(Bytes::from(body.unwrap_or_default()))
            .map_err(|e| TransportError {
                target: self.target().to_string(),
                source: e.into(),
            })?;
        Ok(self.transport.send(req).await?)
    }

    /// Sends a request; an answer that is not a success is `Refused`.
    async fn call(
        &self,
        what: &'static str,
        method: Method,
        path: String,
        body: Option<Vec<u8>>,
        deadline: Option<Deadline>,
    ) -> Result<http::Response<Body>, ClientError> {
        let resp = self.send(method, path, body, deadline).await?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let body = self.read(resp).await.unwrap_or_default();
        Err(ClientError::Refused {
            what,
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    /// The whole body of an answer.
    async fn read(&self, resp: http::Response<Body>) -> Result<Bytes, ClientError> {
        let collected = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| self.broken(e))?;
        Ok(collected.to_bytes())
    }

    fn broken(&self, e: axum::Error) -> ClientError {
        ClientError::Unreachable(TransportError {
            target: self.target().to_string(),
            source: e.into(),
        })
    }

    async fn call_json<T: serde::de::DeserializeOwned>(
        &self,
        what: &'static str,
        path: String,
    ) -> Result<T, ClientError> {
        let resp = self.call(what, Method::GET, path, None, None).await?;
        let bytes = self.read(resp).await?;
        serde_json::from_slice(&bytes).map_err(|source| ClientError::Decode { what, source })
    }

    // --- Agents ---

    /// Trades a join token for the credential of `name` (`POST /shoal/v1/join`).
    pub async fn join(&self, token: &str, name: &str) -> Result<Joined, ClientError> {
        let body = serde_json::to_vec(&serde_json::json!({"token": token, "name": name}))
            .unwrap_or_default();
        let resp = self
            .call(
                "join",
                Method::POST,
                "/shoal/v1/join".into(),
                Some(body),
                None,
            )
            .await?;
        let bytes = self.read(resp).await?;
        serde_json::from_slice(&bytes).map_err(|source| ClientError::Decode {
            what: "join",
            source,
        })
    }

    /// Registers (or refreshes) a host.
    pub async fn register(&self, host: &HostRecord) -> Result<(), ClientError> {
        let path = format!("/shoal/v1/hosts/{}", host.name);
        self.call(
            "host registration",
            Method::PUT,
            path,
            Some(to_json(host)),
            None,
        )
        .await
        .map(|_| ())
    }

    /// Tells the server the host's agent is alive; answers the other hosts to route to.
    /// `Ok(None)` when the server does not know the host (register it again).
    pub async fn heartbeat(&self, host: &str) -> Result<Option<Vec<HostPeer>>, ClientError> {
        const WHAT: &str = "heartbeat";
        #[derive(Deserialize)]
        struct Beat {
            #[serde(default)]
            peers: Vec<HostPeer>,
        }
        let path = format!("/shoal/v1/hosts/{host}/heartbeat");
        let resp = match self.call(WHAT, Method::POST, path, None, None).await {
            Ok(resp) => resp,
            Err(ClientError::Refused { status: 404, .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let bytes = self.read(resp).await?;
        let beat: Beat = serde_json::from_slice(&bytes)
            .map_err(|source| ClientError::Decode { what: WHAT, source })?;
        Ok(Some(beat.peers))
    }

    /// A token of `rec`'s scale-set identity for `resource`, asked as the instance's host:
    /// the server's status and body, whatever they are (the agent passes them on).
    pub async fn instance_token(
        &self,
        rec: &InstanceRecord,
        query: &[(String, String)],
    ) -> Result<(u16, Bytes), ClientError> {
        let v = &rec.vmss;
        let enc = |s: &str| {
            let mut out = String::new();
            for b in s.bytes() {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    out.push(b as char);
                } else {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
            out
        };
        let query: Vec<String> = query
            .iter()
            .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
            .collect();
        let path = format!(
            "/shoal/v1/identity/{}/{}/{}/{}?{}",
            v.subscription,
            v.resource_group,
            v.name,
            rec.instance_id,
            query.join("&")
        );
        match self
            .call("identity token", Method::POST, path, None, None)
            .await
        {
            Ok(resp) => {
                let status = resp.status().as_u16();
                Ok((status, self.read(resp).await?))
            }
            Err(ClientError::Refused { status, body, .. }) => Ok((status, Bytes::from(body))),
            Err(e) => Err(e),
        }
    }

    /// The desired instances on `host`, as store records (`instance/...` keys, JSON
    /// values), and the revision to watch from.
    pub async fn host_instances(
        &self,
        host: &str,
    ) -> Result<(Vec<KeyValue>, Revision), ClientError> {
        const WHAT: &str = "instance list";
        #[derive(Deserialize)]
        struct Listed<'a> {
            revision: Revision,
            #[serde(borrow)]
            items: Vec<&'a RawValue>,
        }
        let resp = self
            .call(
                WHAT,
                Method::GET,
                format!("/shoal/v1/hosts/{host}/instances"),
                None,
                None,
            )
            .await?;
        let bytes = self.read(resp).await?;
        let listed: Listed = serde_json::from_slice(&bytes)
            .map_err(|source| ClientError::Decode { what: WHAT, source })?;
        let items = listed
            .items
            .into_iter()
            .map(|raw| {
                Ok(KeyValue {
                    key: instance_key_of(raw)?,
                    value: raw.get().as_bytes().to_vec(),
                    create_revision: 0,
                    mod_revision: 0,
                })
            })
            .collect::<Result<Vec<_>, serde_json::Error>>()
            .map_err(|source| ClientError::Decode { what: WHAT, source })?;
        Ok((items, listed.revision))
    }

    /// Changes of the instances on `host` after revision `after`. The stream ends with
    /// an error when the connection drops or the server asks for a fresh list.
    pub async fn watch_host_instances(
        &self,
        host: &str,
        after: Revision,
    ) -> Result<BoxStream<'static, Result<Event, ClientError>>, ClientError> {
        let path = format!("/shoal/v1/hosts/{host}/instances?watch=true&after={after}");
        let resp = self
            .call(
                "instance watch",
                Method::GET,
                path,
                None,
                Some(Deadline::Unbounded),
            )
            .await?;
        Ok(events(self.target().to_string(), resp.into_body()))
    }

    /// Reports an instance's status. `Ok(false)` when the server no longer knows it.
    pub async fn report(
        &self,
        rec: &InstanceRecord,
        status: &InstanceStatus,
    ) -> Result<bool, ClientError> {
        let path = format!(
            "/shoal/v1/status/{}",
            instance_path(&rec.vmss, rec.instance_id)
        );
        match self
            .call(
                "status report",
                Method::PUT,
                path,
                Some(to_json(status)),
                None,
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(ClientError::Refused { status: 404, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Reports many statuses in one request (`PUT /shoal/v1/statuses`). Per report, in
    /// order: `Ok(true)` taken, `Ok(false)` the instance is not this host's (any more),
    /// `Err` refused for another reason (the server's message). `Ok(None)` when the server
    /// does not know the batch route (one from before it): report one by one then.
    pub async fn report_many(
        &self,
        reports: &[(&InstanceRecord, &InstanceStatus)],
    ) -> Result<Option<Vec<Result<bool, String>>>, ClientError> {
        #[derive(Deserialize)]
        struct Results {
            results: Vec<ItemResult>,
        }
        #[derive(Deserialize)]
        struct ItemResult {
            ok: bool,
            #[serde(default)]
            status: u16,
            #[serde(default)]
            error: serde_json::Value,
        }
        let items: Vec<serde_json::Value> = reports
            .iter()
            .map(|(rec, status)| {
                serde_json::json!({
                    "instance": instance_path(&rec.vmss, rec.instance_id),
                    "status": status,
                })
            })
            .collect();
        let body = to_json(&serde_json::json!({ "statuses": items }));
        let what = "status reports";
        let resp = match self
            .call(
                what,
                Method::PUT,
                "/shoal/v1/statuses".into(),
                Some(body),
                None,
            )
            .await
        {
            Ok(resp) => resp,
            // An older server: no such route (404 NotFound for the path, or 405).
            Err(ClientError::Refused {
                status: 404 | 405,
                body,
                ..
            }) if !body.contains("\"results\"") => return Ok(None),
            Err(e) => return Err(e),
        };
        let bytes = self.read(resp).await?;
        let answer: Results = serde_json::from_slice(&bytes)
            .map_err(|source| ClientError::Decode { what, source })?;
        if answer.results.len() != reports.len() {
            return Err(ClientError::Refused {
                what,
                status: 200,
                body: format!(
                    "{} results for {} reports",
                    answer.results.len(),
                    reports.len()
                ),
            });
        }
        Ok(Some(
            answer
                .results
                .into_iter()
                .map(|r| match (r.ok, r.status) {
                    (true, _) => Ok(true),
                    (false, 404) => Ok(false),
                    (false, _) => Err(r.error["message"].as_str().unwrap_or("refused").to_string()),
                })
                .collect(),
        ))
    }

    /// Whether every balancer fronting the instance has stopped sending it work since it
    /// started draining (`episode` is the `since` of its draining status).
    pub async fn drained(&self, rec: &InstanceRecord, episode: &str) -> Result<bool, ClientError> {
        #[derive(Deserialize)]
        struct Drained {
            #[serde(default)]
            drained: bool,
        }
        let path = format!(
            "/shoal/v1/drain/{}?episode={}",
            instance_path(&rec.vmss, rec.instance_id),
            encode(episode)
        );
        let answer: Drained = self.call_json("drain check", path).await?;
        Ok(answer.drained)
    }

    /// Downloads a bundle, as a stream of chunks (no total time limit).
    pub async fn blob(
        &self,
        id: &str,
    ) -> Result<BoxStream<'static, Result<Bytes, ClientError>>, ClientError> {
        let resp = self
            .call(
                "bundle download",
                Method::GET,
                format!("/shoal/v1/blobs/{id}"),
                None,
                Some(Deadline::Unbounded),
            )
            .await?;
        let target = self.target().to_string();
        Ok(resp
            .into_body()
            .into_data_stream()
            .map(move |chunk| {
                chunk.map_err(|e| {
                    ClientError::Unreachable(TransportError {
                        target: target.clone(),
                        source: e.into(),
                    })
                })
            })
            .boxed())
    }

    /// Posts metric samples (`POST /shoal/v1/metrics`, `{"samples": [...]}`) and hands
    /// back the server's answer as it came, success or not.
    pub async fn push_metrics<T: serde::Serialize>(
        &self,
        samples: &[T],
    ) -> Result<Answer, ClientError> {
        #[derive(serde::Serialize)]
        struct Batch<'a, T> {
            samples: &'a [T],
        }
        let body = to_json(&Batch { samples });
        let resp = self
            .send(
                Method::POST,
                "/shoal/v1/metrics".into(),
                Some(body),
                Some(Deadline::After(METRICS_TIMEOUT)),
            )
            .await?;
        let status = resp.status();
        let body = self.read(resp).await?;
        Ok(Answer { status, body })
    }

    // --- Balancers ---

    /// Every record under `prefix` (one of the prefixes the server lets balancers read)
    /// and the revision to watch from.
    pub async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), ClientError> {
        const WHAT: &str = "store list";
        #[derive(Deserialize)]
        struct Item<'a> {
            key: String,
            #[serde(borrow)]
            value: &'a RawValue,
        }
        #[derive(Deserialize)]
        struct Listed<'a> {
            revision: Revision,
            #[serde(borrow)]
            items: Vec<Item<'a>>,
        }
        let resp = self
            .call(
                WHAT,
                Method::GET,
                format!("/shoal/v1/list?prefix={}", encode(prefix)),
                None,
                None,
            )
            .await?;
        let bytes = self.read(resp).await?;
        let listed: Listed = serde_json::from_slice(&bytes)
            .map_err(|source| ClientError::Decode { what: WHAT, source })?;
        let items = listed
            .items
            .into_iter()
            .map(|i| KeyValue {
                key: i.key,
                value: i.value.get().as_bytes().to_vec(),
                create_revision: 0,
                mod_revision: 0,
            })
            .collect();
        Ok((items, listed.revision))
    }

    /// Changes under `prefix` after revision `after`; ends with an error when the
    /// connection drops or the server asks for a fresh list.
    pub async fn watch(
        &self,
        prefix: &str,
        after: Revision,
    ) -> Result<BoxStream<'static, Result<Event, ClientError>>, ClientError> {
        let path = format!("/shoal/v1/watch?prefix={}&after={after}", encode(prefix));
        let resp = self
            .call(
                "store watch",
                Method::GET,
                path,
                None,
                Some(Deadline::Unbounded),
            )
            .await?;
        Ok(events(self.target().to_string(), resp.into_body()))
    }

    /// Registers (or refreshes) a balancer and the sets (`vmss/...` keys) it fronts.
    pub async fn register_balancer(
        &self,
        name: &str,
        fronts: &[String],
    ) -> Result<(), ClientError> {
        let rec = BalancerRecord {
            name: name.to_string(),
            fronts: fronts.to_vec(),
            last_seen: String::new(),
        };
        self.call(
            "balancer registration",
            Method::PUT,
            format!("/shoal/v1/balancers/{name}"),
            Some(to_json(&rec)),
            None,
        )
        .await
        .map(|_| ())
    }

    /// Reports what a balancer's probes see of an instance (`instance` is
    /// `{sub}/{rg}/{set}/{id}`). An instance the server no longer knows is not an error.
    pub async fn report_health(
        &self,
        instance: &str,
        rec: &HealthRecord,
    ) -> Result<(), ClientError> {
        match self
            .call(
                "health report",
                Method::PUT,
                format!("/shoal/v1/health/{instance}"),
                Some(to_json(rec)),
                None,
            )
            .await
        {
            Ok(_) | Err(ClientError::Refused { status: 404, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// A balancer's word that it sends nothing more to `instance` (`{sub}/{rg}/{set}/{id}`)
    /// since it started draining at `episode`.
    pub async fn ack_drain(
        &self,
        instance: &str,
        balancer: &str,
        episode: &str,
    ) -> Result<(), ClientError> {
        let ack = DrainAck {
            episode: episode.to_string(),
        };
        self.call(
            "drain acknowledgement",
            Method::PUT,
            format!("/shoal/v1/drain/{instance}/{balancer}"),
            Some(to_json(&ack)),
            None,
        )
        .await
        .map(|_| ())
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    // Serializing Shoal's own records cannot fail (no maps with non-string keys).
    serde_json::to_vec(v).unwrap_or_default()
}

/// `{sub}/{rg}/{set}/{id}`, as the status, health and drain paths take it.
fn instance_path(vmss: &VmssRef, id: u64) -> String {
    format!(
        "{}/{}/{}/{id}",
        vmss.subscription, vmss.resource_group, vmss.name
    )
}

/// The store key of an instance record sent without one (the host list).
fn instance_key_of(raw: &RawValue) -> Result<String, serde_json::Error> {
    #[derive(Deserialize)]
    struct KeyOf {
        vmss: VmssRef,
        instance_id: u64,
    }
    let k: KeyOf = serde_json::from_str(raw.get())?;
    Ok(k.vmss.instance_key(k.instance_id))
}

/// Percent-encodes a query value (everything but RFC 3986's unreserved characters).
/// Path segments go as they are: the server matches them undecoded.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One line of a watch answer. Put events carry the value as `value` (store watch) or
/// `record` (host watch); the host watch's key is derived from the record when absent.
#[derive(Deserialize)]
struct WireEvent<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    revision: Option<Revision>,
    #[serde(default, borrow)]
    value: Option<&'a RawValue>,
    #[serde(default, borrow)]
    record: Option<&'a RawValue>,
    #[serde(default)]
    code: Option<String>,
}

/// Turns a newline-delimited JSON answer into store events (bookmarks dropped). The
/// stream ends after an error: a broken connection, an unreadable line, or the
/// server's own error event (`Compacted` asks for a fresh list).
fn events(target: String, body: Body) -> BoxStream<'static, Result<Event, ClientError>> {
    lines(target, body)
        .filter_map(|line| async move {
            let line = match line {
                Ok(l) => l,
                Err(e) => return Some(Err(e)),
            };
            parse_event(&line).transpose()
        })
        .scan(false, |ended, ev| {
            if *ended {
                return futures::future::ready(None);
            }
            *ended = ev.is_err();
            futures::future::ready(Some(ev))
        })
        .boxed()
}

fn parse_event(line: &[u8]) -> Result<Option<Event>, ClientError> {
    const WHAT: &str = "watch event";
    let decode = |source| ClientError::Decode { what: WHAT, source };
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let ev: WireEvent = serde_json::from_slice(line).map_err(decode)?;
    let revision = ev.revision.unwrap_or(0);
    match ev.kind {
        "put" => {
            let (key, value) = match (ev.key, ev.value, ev.record) {
                (Some(key), Some(value), _) => (key, value),
                (key, None, Some(record)) => (
                    match key {
                        Some(k) => k,
                        None => instance_key_of(record).map_err(decode)?,
                    },
                    record,
                ),
                _ => return Ok(None),
            };
            Ok(Some(Event::Put(KeyValue {
                key,
                value: value.get().as_bytes().to_vec(),
                create_revision: 0,
                mod_revision: revision,
            })))
        }
        "delete" => Ok(ev.key.map(|key| Event::Delete { key, revision })),
        "error" => match ev.code.as_deref() {
            Some("Compacted") => Err(ClientError::Compacted),
            code => Err(ClientError::WatchEnded {
                code: code.unwrap_or("unknown").to_string(),
            }),
        },
        _ => Ok(None),
    }
}

/// Splits a streamed body into lines (each with its newline).
fn lines(target: String, body: Body) -> impl Stream<Item = Result<Bytes, ClientError>> {
    let chunks = body.into_data_stream();
    futures::stream::unfold(
        (chunks, bytes::BytesMut::new(), 0usize, target, false),
        // `scanned` marks how much of `buf` holds no newline, so a burst of a thousand
        // events is split in linear time.
        |(mut chunks, mut buf, mut scanned, target, done)| async move {
            if done {
                return None;
            }
            loop {
                if let Some(pos) = buf[scanned..].iter().position(|b| *b == b'\n') {
                    let line = buf.split_to(scanned + pos + 1).freeze();
                    return Some((Ok(line), (chunks, buf, 0, target, false)));
                }
                scanned = buf.len();
                match chunks.next().await {
                    Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                    Some(Err(e)) => {
                        let err = ClientError::Unreachable(TransportError {
                            target: target.clone(),
                            source: e.into(),
                        });
                        return Some((Err(err), (chunks, buf, scanned, target, true)));
                    }
                    None => return None,
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_lines_become_store_events() {
        let put = br#"{"type":"put","key":"lb/s/rg/a","revision":7,"value":{"x":[1, 2]}}"#;
        match parse_event(put) {
            Ok(Some(Event::Put(kv))) => {
                assert_eq!(kv.key, "lb/s/rg/a");
                assert_eq!(kv.mod_revision, 7);
                assert_eq!(kv.value, br#"{"x":[1, 2]}"#);
            }
            other => panic!("unexpected {other:?}"),
        }
        let del = br#"{"type":"delete","key":"lb/s/rg/a","revision":8}"#;
        assert!(matches!(
            parse_event(del),
            Ok(Some(Event::Delete { revision: 8, .. }))
        ));
        assert!(matches!(parse_event(br#"{"type":"bookmark"}"#), Ok(None)));
        assert!(matches!(
            parse_event(br#"{"type":"error","code":"Compacted"}"#),
            Err(ClientError::Compacted)
        ));
        assert!(matches!(
            parse_event(br#"{"type":"error","code":"StoreFailed","message":"disk"}"#),
            Err(ClientError::WatchEnded { .. })
        ));
        assert!(parse_event(b"not json").is_err());
    }

    #[test]
    fn host_watch_puts_without_a_key_take_the_records_key() {
        let line = br#"{"type":"put","revision":3,"record":{"vmss":{"subscription":"S","resource_group":"Rg","name":"Web"},"instance_id":4}}"#;
        match parse_event(line) {
            Ok(Some(Event::Put(kv))) => assert_eq!(kv.key, "instance/s/rg/web/00000004"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(encode("lb/"), "lb%2F");
        assert_eq!(
            encode("2024-01-01T00:00:00.5Z"),
            "2024-01-01T00%3A00%3A00.5Z"
        );
    }
}
