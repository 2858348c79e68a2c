//! The server as a [`WatchSource`]: what agents and balancers feed their watchers and
//! typed caches with (`shoal_store::watcher`), over a [`ServerClient`].
//!
//! [`ServerSource`] lists and watches the prefixes the server lets balancers read
//! (`GET /shoal/v1/list`, `/shoal/v1/watch`); [`HostSource`] lists and watches the
//! instance records of one host (`GET /shoal/v1/hosts/{host}/instances`), which the
//! server filters for that host. The server's `Compacted` answer becomes
//! [`SourceError::Compacted`], so the watcher lists again.

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::StreamExt;
use shoal_store::watcher::{SourceError, WatchSource};
use shoal_store::{Event, KeyValue, Revision};

use crate::{ClientError, ServerClient};

fn source_error(e: ClientError) -> SourceError {
    match e {
        ClientError::Compacted => SourceError::Compacted,
        e => SourceError::Failed(Box::new(e)),
    }
}

fn events(
    stream: BoxStream<'static, Result<Event, ClientError>>,
) -> BoxStream<'static, Result<Event, SourceError>> {
    stream.map(|e| e.map_err(source_error)).boxed()
}

/// Any readable prefix of the server's store.
pub struct ServerSource {
    client: ServerClient,
}

impl ServerSource {
    pub fn new(client: ServerClient) -> Self {
        ServerSource { client }
    }
}

#[async_trait]
impl WatchSource for ServerSource {
    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), SourceError> {
        self.client.list(prefix).await.map_err(source_error)
    }

    async fn watch(
        &self,
        prefix: &str,
        after: Revision,
    ) -> Result<BoxStream<'static, Result<Event, SourceError>>, SourceError> {
        let stream = self
            .client
            .watch(prefix, after)
            .await
            .map_err(source_error)?;
        Ok(events(stream))
    }
}

/// The instance records (`instance/...`) assigned to one host; the only prefix it
/// serves is [`HostSource::PREFIX`].
pub struct HostSource {
    client: ServerClient,
    host: String,
}

#[derive(Debug, thiserror::Error)]
#[error("A host's source serves only {expected}, not {asked}")]
pub struct WrongPrefix {
    pub expected: &'static str,
    pub asked: String,
}

impl HostSource {
    pub const PREFIX: &'static str = shoal_model::keys::INSTANCE;

    pub fn new(client: ServerClient, host: &str) -> Self {
        HostSource {
            client,
            host: host.to_string(),
        }
    }

    fn check(prefix: &str) -> Result<(), SourceError> {
        if prefix == Self::PREFIX {
            return Ok(());
        }
        Err(SourceError::Failed(Box::new(WrongPrefix {
            expected: Self::PREFIX,
            asked: prefix.to_string(),
        })))
    }
}

#[async_trait]
impl WatchSource for HostSource {
    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), SourceError> {
        Self::check(prefix)?;
        self.client
            .host_instances(&self.host)
            .await
            .map_err(source_error)
    }

    async fn watch(
        &self,
        prefix: &str,
        after: Revision,
    ) -> Result<BoxStream<'static, Result<Event, SourceError>>, SourceError> {
        Self::check(prefix)?;
        let stream = self
            .client
            .watch_host_instances(&self.host, after)
            .await
            .map_err(source_error)?;
        Ok(events(stream))
    }
}
