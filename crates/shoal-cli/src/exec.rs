//! Carrying out one [`ApiRequest`]: send it, wait for its long-running operation, print
//! what the command prints.

use anyhow::Context;
use futures::StreamExt;
use reqwest::Method;
use serde_json::Value;

use crate::client::Client;
use crate::lro;
use crate::output::{Printer, Table};
use crate::progress::StatusLine;
use crate::request::{ApiRequest, Kind};

pub(crate) async fn execute(
    client: &Client,
    printer: &Printer,
    request: ApiRequest,
) -> anyhow::Result<()> {
    match request.kind {
        Kind::Show(table) => {
            let reply = client
                .call(request.method, &request.path, request.body.as_ref())
                .await?;
            print(printer, table, &reply.body.unwrap_or(Value::Null))
        }
        Kind::List(table) => {
            let items = client.list(&request.path).await?;
            print(printer, table, &Value::Array(items))
        }
        Kind::Write { no_wait, table } => {
            let body = write(client, &request, no_wait).await?;
            match body {
                Some(body) => print(printer, table, &body),
                None => Ok(()),
            }
        }
        Kind::Action { no_wait } => {
            let reply = client
                .call(request.method, &request.path, request.body.as_ref())
                .await?;
            match reply.operation {
                Some(operation) if !no_wait => {
                    let mut line = StatusLine::stderr();
                    lro::wait(client, operation, reply.retry_after, &mut line).await?;
                    Ok(())
                }
                _ if no_wait => match reply.body {
                    Some(body) => print(printer, Table::Generic, &body),
                    None => Ok(()),
                },
                _ => Ok(()),
            }
        }
        Kind::Stream => stream(client, printer, request).await,
    }
}

/// Sends a create/update, waits for its operation unless `no_wait`, and returns what to
/// print: the resource read again after the operation, or the first answer.
pub(crate) async fn write(
    client: &Client,
    request: &ApiRequest,
    no_wait: bool,
) -> anyhow::Result<Option<Value>> {
    let reply = client
        .call(request.method.clone(), &request.path, request.body.as_ref())
        .await?;
    match reply.operation {
        Some(operation) if !no_wait => {
            let mut line = StatusLine::stderr();
            lro::wait(client, operation, reply.retry_after, &mut line).await?;
            Ok(Some(client.get_json(&request.path).await?))
        }
        _ if no_wait => Ok(reply.body),
        // Finished at once: the answer is the resource (read it if the server sent none).
        _ => match reply.body {
            Some(body) => Ok(Some(body)),
            None => Ok(Some(client.get_json(&request.path).await?)),
        },
    }
}

fn print(printer: &Printer, table: Table, value: &Value) -> anyhow::Result<()> {
    printer
        .print(table, value)
        .context("Cannot write to stdout")
}

/// Copies a streaming answer (logs) to stdout chunk by chunk.
async fn stream(client: &Client, printer: &Printer, request: ApiRequest) -> anyhow::Result<()> {
    let url = client.url(&request.path)?;
    let response = client
        .open(request.method.clone(), url.clone(), request.body.as_ref())
        .await?;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| client.transport_error(Method::GET, url.clone(), e))?;
        printer
            .write_raw(&chunk)
            .context("Cannot write to stdout")?;
    }
    Ok(())
}
