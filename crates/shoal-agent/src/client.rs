//! The agent's side of the agent protocol (see `shoal_api::agent_api`): register the
//! host, list and watch the instances assigned to it, report statuses, fetch bundles.

use std::time::Duration;

use futures::{Stream, StreamExt};
use serde::Deserialize;
use shoal_model::records::{HostRecord, InstanceRecord, InstanceStatus};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("Cannot reach the Shoal server at {url}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("The Shoal server answered {status} to {what}: {body}")]
    Refused {
        what: String,
        status: u16,
        body: String,
    },
    #[error("The Shoal server sent something unreadable for {what}")]
    Decode {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("The watch must start over from a fresh list")]
    Compacted,
}

/// One change of the instances assigned to this host.
#[derive(Debug, Clone)]
pub enum WatchEvent {
    Put(Box<InstanceRecord>),
    /// The desired record at `key` (`instance/{sub}/{rg}/{vmss}/{id}`) was removed.
    Delete(String),
    Bookmark,
}

#[derive(Deserialize)]
struct ListAnswer {
    revision: u64,
    items: Vec<InstanceRecord>,
}

#[derive(Clone)]
pub struct ServerClient {
    base: String,
    http: reqwest::Client,
    /// A client without a total timeout, for the long-lived watch.
    stream_http: reqwest::Client,
}

impl ServerClient {
    pub fn new(base: &str) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(64)
            .build()
            .unwrap_or_default();
        let stream_http = reqwest::Client::builder()
            .tcp_keepalive(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        ServerClient {
            base: base.trim_end_matches('/').to_string(),
            http,
            stream_http,
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    async fn check(
        &self,
        what: &str,
        resp: Result<reqwest::Response, reqwest::Error>,
    ) -> Result<reqwest::Response, ClientError> {
        let resp = resp.map_err(|source| ClientError::Unreachable {
            url: self.base.clone(),
            source,
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        Err(ClientError::Refused {
            what: what.to_string(),
            status,
            body,
        })
    }

    pub async fn register(&self, host: &HostRecord) -> Result<(), ClientError> {
        let url = format!("{}/shoal/v1/hosts/{}", self.base, host.name);
        let resp = self.http.put(&url).json(host).send().await;
        self.check("host registration", resp).await.map(|_| ())
    }

    pub async fn list(&self, host: &str) -> Result<(u64, Vec<InstanceRecord>), ClientError> {
        let url = format!("{}/shoal/v1/hosts/{host}/instances", self.base);
        let resp = self
            .check("instance list", self.http.get(&url).send().await)
            .await?;
        let bytes = resp
            .bytes()
            .await
            .map_err(|source| ClientError::Unreachable {
                url: url.clone(),
                source,
            })?;
        let answer: ListAnswer =
            serde_json::from_slice(&bytes).map_err(|source| ClientError::Decode {
                what: "instance list".into(),
                source,
            })?;
        Ok((answer.revision, answer.items))
    }

    /// Changes after `after`, as a stream that ends with an error when the connection
    /// drops or the server asks for a fresh list.
    pub async fn watch(
        &self,
        host: &str,
        after: u64,
    ) -> Result<impl Stream<Item = Result<WatchEvent, ClientError>>, ClientError> {
        let url = format!(
            "{}/shoal/v1/hosts/{host}/instances?watch=true&after={after}",
            self.base
        );
        let resp = self
            .check("instance watch", self.stream_http.get(&url).send().await)
            .await?;
        let base = self.base.clone();
        let bytes = resp.bytes_stream();
        let lines = futures::stream::unfold(
            (bytes, bytes::BytesMut::new(), 0usize, base),
            // `scanned` marks how much of `buf` holds no newline, so a burst of a
            // thousand events is split in linear time.
            |(mut bytes, mut buf, mut scanned, base)| async move {
                loop {
                    if let Some(pos) = buf[scanned..].iter().position(|b| *b == b'\n') {
                        let line = buf.split_to(scanned + pos + 1).to_vec();
                        return Some((Ok(line), (bytes, buf, 0, base)));
                    }
                    scanned = buf.len();
                    match bytes.next().await {
                        Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                        Some(Err(source)) => {
                            return Some((
                                Err(ClientError::Unreachable {
                                    url: base.clone(),
                                    source,
                                }),
                                (bytes, buf, scanned, base),
                            ))
                        }
                        None => return None,
                    }
                }
            },
        );
        Ok(lines.map(|line| {
            let line = line?;
            let v: serde_json::Value =
                serde_json::from_slice(&line).map_err(|source| ClientError::Decode {
                    what: "watch event".into(),
                    source,
                })?;
            match v["type"].as_str() {
                Some("put") => {
                    let rec: InstanceRecord =
                        serde_json::from_value(v["record"].clone()).map_err(|source| {
                            ClientError::Decode {
                                what: "watch event".into(),
                                source,
                            }
                        })?;
                    Ok(WatchEvent::Put(Box::new(rec)))
                }
                Some("delete") => Ok(WatchEvent::Delete(
                    v["key"].as_str().unwrap_or_default().to_string(),
                )),
                Some("error") => Err(ClientError::Compacted),
                _ => Ok(WatchEvent::Bookmark),
            }
        }))
    }

    /// Reports a status. `Ok(false)` when the server no longer knows the instance.
    pub async fn report(
        &self,
        rec: &InstanceRecord,
        status: &InstanceStatus,
    ) -> Result<bool, ClientError> {
        let v = &rec.vmss;
        let url = format!(
            "{}/shoal/v1/status/{}/{}/{}/{}",
            self.base, v.subscription, v.resource_group, v.name, rec.instance_id
        );
        let resp = self.http.put(&url).json(status).send().await;
        match self.check("status report", resp).await {
            Ok(_) => Ok(true),
            Err(ClientError::Refused { status: 404, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether every balancer fronting the instance has stopped sending it work since it
    /// started draining (`episode` is the `since` of its draining status).
    pub async fn drained(&self, rec: &InstanceRecord, episode: &str) -> Result<bool, ClientError> {
        let v = &rec.vmss;
        let url = format!(
            "{}/shoal/v1/drain/{}/{}/{}/{}",
            self.base, v.subscription, v.resource_group, v.name, rec.instance_id
        );
        let resp = self
            .http
            .get(&url)
            .query(&[("episode", episode)])
            .send()
            .await;
        let resp = self.check("drain check", resp).await?;
        let v: serde_json::Value = resp
            .json()
            .await
            .map_err(|source| ClientError::Unreachable { url, source })?;
        Ok(v["drained"].as_bool().unwrap_or(false))
    }

    /// Downloads a bundle.
    pub async fn blob(&self, id: &str) -> Result<reqwest::Response, ClientError> {
        let url = format!("{}/shoal/v1/blobs/{id}", self.base);
        self.check("bundle download", self.stream_http.get(&url).send().await)
            .await
    }
}
