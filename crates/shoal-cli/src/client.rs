//! The HTTP side: signs in, sends requests to the ARM-shaped API with a bearer token and
//! `api-version`, turns ARM error bodies into [`ClientError::Api`], and follows
//! `nextLink` paging.
//!
//! Credentials, first found wins: `SHOAL_ACCESS_TOKEN` (a token as it is);
//! `AZURE_CLIENT_ID` + `AZURE_CLIENT_SECRET` + `AZURE_TENANT_ID` (a service principal, as
//! azure-identity reads them); what `shoal login` kept for this endpoint
//! ([`crate::login`]); the Owner credential a local server wrote to
//! `$SHOAL_DATA_DIR/credentials/owner.json` (default `./.shoal`). A secret is exchanged
//! once per command for a token at the server's `/{tenant}/oauth2/v2.0/token`.
//!
//! In: a method, a path below the endpoint (or an absolute URL the server handed out) and
//! an optional JSON body. Out: a [`Reply`] with the parsed body and the long-running
//! operation headers, or a [`ClientError`].

use std::time::Duration;

use reqwest::header::{HeaderMap, AUTHORIZATION};
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;

use crate::{ClientOptions, API_VERSION};

/// The audience of the tokens the CLI asks for.
const ARM_SCOPE: &str = "https://management.azure.com/.default";
/// Longest stretch of a non-JSON error body quoted in a message.
const QUOTED_BODY_LIMIT: usize = 300;
/// Most pages a listing follows before deciding the server is looping.
const MAX_PAGES: usize = 10_000;

/// An error body in ARM's shape: `{"error": {"code", "message", "target"}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArmError {
    pub code: String,
    pub message: String,
    pub target: Option<String>,
}

impl ArmError {
    /// Reads `{"error": {...}}` (or a bare `{...}` with `code`), if `body` has that shape.
    pub fn from_body(body: &Value) -> Option<ArmError> {
        let error = body.get("error").unwrap_or(body);
        let code = error.get("code")?.as_str()?.to_owned();
        let message = error
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let target = error
            .get("target")
            .and_then(Value::as_str)
            .map(str::to_owned);
        Some(ArmError {
            code,
            message,
            target,
        })
    }
}

/// Everything that can go wrong talking to the server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach Shoal at {endpoint}: is `shoal serve` running? (set --endpoint or SHOAL_ENDPOINT)"
    )]
    Unreachable {
        endpoint: String,
        #[source]
        source: reqwest::Error,
    },
    /// The server refused the request with an ARM error body (or an operation failed).
    #[error("({}) {}", .0.code, .0.message)]
    Api(ArmError),
    #[error("{method} {url} answered {status}{}", quote_body(.body))]
    UnexpectedStatus {
        method: Method,
        url: String,
        status: StatusCode,
        body: String,
    },
    #[error("{method} {url} failed")]
    Transport {
        method: Method,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("The answer to {method} {url} is not JSON")]
    InvalidJson {
        method: Method,
        url: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("The server answered with an invalid URL in {what}: {url}")]
    InvalidUrl {
        what: &'static str,
        url: String,
        #[source]
        source: UrlParseError,
    },
    #[error("Endpoint {endpoint} must be an http:// URL (TLS is not supported yet)")]
    UnsupportedEndpoint { endpoint: String },
    #[error("Listing {url} did not end after {MAX_PAGES} pages")]
    EndlessPaging { url: String },
    #[error("Signing in to {endpoint} failed: {message}")]
    SignIn { endpoint: String, message: String },
}

/// How the CLI proves who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// None found: requests go without a token (and a server that checks tokens says so).
    None,
    /// An access token as it is.
    Token(String),
    /// A service principal's secret, exchanged for a token.
    ClientSecret {
        tenant: String,
        client_id: String,
        secret: String,
    },
}

impl Credential {
    /// The credential from the environment or the local data directory (see the module
    /// docs for the order).
    pub fn discover(endpoint: &Endpoints) -> Credential {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        if let Some(t) = var("SHOAL_ACCESS_TOKEN") {
            return Credential::Token(t);
        }
        if let (Some(client_id), Some(secret), Some(tenant)) = (
            var("AZURE_CLIENT_ID"),
            var("AZURE_CLIENT_SECRET"),
            var("AZURE_TENANT_ID"),
        ) {
            return Credential::ClientSecret {
                tenant,
                client_id,
                secret,
            };
        }
        if let Some(c) = crate::login::credential_for(endpoint) {
            return c;
        }
        let dir = var("SHOAL_DATA_DIR").unwrap_or_else(|| ".shoal".into());
        Credential::from_owner_file(&std::path::Path::new(&dir).join("credentials/owner.json"))
            .unwrap_or(Credential::None)
    }

    /// The credential in an `owner.json` (`tenant`, `appId`, `password`).
    pub fn from_owner_file(path: &std::path::Path) -> Option<Credential> {
        let text = std::fs::read_to_string(path).ok()?;
        let v: Value = serde_json::from_str(&text).ok()?;
        Some(Credential::ClientSecret {
            tenant: v["tenant"].as_str()?.to_string(),
            client_id: v["appId"].as_str()?.to_string(),
            secret: v["password"].as_str()?.to_string(),
        })
    }
}

fn quote_body(body: &str) -> String {
    let body = body.trim();
    if body.is_empty() {
        return String::new();
    }
    let mut quoted: String = body.chars().take(QUOTED_BODY_LIMIT).collect();
    if quoted.len() < body.len() {
        quoted.push('…');
    }
    format!(": {quoted}")
}

/// `url::ParseError`, named through reqwest so the crate needs no direct `url` dependency.
pub type UrlParseError = <Url as std::str::FromStr>::Err;

/// A successful (2xx) answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    /// The `Azure-AsyncOperation` URL, when the request started a long-running operation.
    pub operation: Option<Url>,
    /// `Retry-After`, in whole seconds as ARM sends it.
    pub retry_after: Option<Duration>,
    /// The JSON body, if there was one.
    pub body: Option<Value>,
}

/// `--endpoint`: one server's URL, or several, comma-separated (the servers of one
/// install). Derefs to the first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints(Vec<Url>);

impl Endpoints {
    pub fn all(&self) -> &[Url] {
        &self.0
    }
}

impl std::ops::Deref for Endpoints {
    type Target = Url;
    fn deref(&self) -> &Url {
        &self.0[0]
    }
}

impl From<Url> for Endpoints {
    fn from(url: Url) -> Self {
        Endpoints(vec![url])
    }
}

impl std::str::FromStr for Endpoints {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let urls = s
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(|u| Url::parse(u).map_err(|e| format!("'{u}' is not a URL: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        if urls.is_empty() {
            return Err("no URL given".into());
        }
        Ok(Endpoints(urls))
    }
}

impl std::fmt::Display for Endpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let texts: Vec<&str> = self
            .0
            .iter()
            .map(|u| u.as_str().trim_end_matches('/'))
            .collect();
        f.write_str(&texts.join(","))
    }
}

/// How long a server of several is given to answer before the next is tried.
const PICK_TIMEOUT: Duration = Duration::from_secs(2);

/// A connection to one Shoal endpoint, scoped to one subscription.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    /// The servers `--endpoint` named; `endpoint` is the one in use.
    endpoints: Vec<Url>,
    endpoint: Url,
    subscription: String,
    credential: Credential,
    /// The token every request carries, once signed in.
    token: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

impl Client {
    pub fn new(opts: &ClientOptions) -> Result<Client, ClientError> {
        let endpoint: Url = (*opts.endpoint).clone();
        if let Some(other) = opts.endpoint.all().iter().find(|u| u.scheme() != "http") {
            return Err(ClientError::UnsupportedEndpoint {
                endpoint: other.to_string(),
            });
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("shoal-cli/", env!("CARGO_PKG_VERSION")));
        // A proxy from the environment has no business between a user and a Shoal on
        // this machine.
        let host = endpoint.host_str().unwrap_or_default();
        let loopback = host == "localhost"
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if loopback {
            builder = builder.no_proxy();
        }
        let http = builder.build().map_err(|source| ClientError::Transport {
            method: Method::GET,
            url: endpoint.to_string(),
            source,
        })?;
        Ok(Client {
            http,
            endpoints: opts.endpoint.all().to_vec(),
            endpoint,
            subscription: opts.subscription.clone(),
            credential: opts
                .access_token
                .clone()
                .filter(|t| !t.trim().is_empty())
                .map(Credential::Token)
                .unwrap_or_else(|| Credential::discover(&opts.endpoint)),
            token: Default::default(),
        })
    }

    /// With several servers named, this client on the first that answers `/healthz`
    /// within [`PICK_TIMEOUT`] (in the order given); with one, or none answering, as is.
    pub async fn reachable(mut self) -> Client {
        if self.endpoints.len() < 2 {
            return self;
        }
        for url in self.endpoints.clone() {
            let health = format!("{}/healthz", url.as_str().trim_end_matches('/'));
            let answered = self
                .http
                .get(health)
                .timeout(PICK_TIMEOUT)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if answered {
                self.endpoint = url;
                return self;
            }
            eprintln!(
                "{} does not answer; trying the next server",
                url.as_str().trim_end_matches('/')
            );
        }
        self
    }

    /// This client with `credential` instead of the discovered one.
    pub fn with_credential(mut self, credential: Credential) -> Client {
        self.credential = credential;
        self.token = Default::default();
        self
    }

    /// Gets a token for the credential (once; later calls reuse it).
    pub async fn sign_in(&self) -> Result<(), ClientError> {
        if self.current_token().is_some() {
            return Ok(());
        }
        let token = match &self.credential {
            Credential::None => return Ok(()),
            Credential::Token(t) => t.clone(),
            Credential::ClientSecret {
                tenant,
                client_id,
                secret,
            } => {
                let url = self.url(&format!("/{tenant}/oauth2/v2.0/token"))?;
                let form = [
                    ("grant_type", "client_credentials"),
                    ("client_id", client_id.as_str()),
                    ("client_secret", secret.as_str()),
                    ("scope", ARM_SCOPE),
                ];
                let response = self
                    .http
                    .post(url.clone())
                    .form(&form)
                    .send()
                    .await
                    .map_err(|e| self.transport_error(Method::POST, url.clone(), e))?;
                let status = response.status();
                let body: Value = response.json().await.unwrap_or(Value::Null);
                match body["access_token"].as_str() {
                    Some(t) if status.is_success() => t.to_string(),
                    _ => {
                        return Err(ClientError::SignIn {
                            endpoint: self.endpoint_text(),
                            message: body["error_description"]
                                .as_str()
                                .or(body["error"]["message"].as_str())
                                .unwrap_or("the token endpoint refused")
                                .to_string(),
                        })
                    }
                }
            }
        };
        if let Ok(mut t) = self.token.lock() {
            *t = Some(token);
        }
        Ok(())
    }

    fn current_token(&self) -> Option<String> {
        self.token.lock().ok().and_then(|t| t.clone())
    }

    pub fn subscription(&self) -> &str {
        &self.subscription
    }

    /// The endpoint as the user wrote it, for messages.
    pub fn endpoint_text(&self) -> String {
        self.endpoint.as_str().trim_end_matches('/').to_owned()
    }

    /// The URL of `path` (below the endpoint, may carry a query), with `api-version`.
    pub fn url(&self, path: &str) -> Result<Url, ClientError> {
        let text = format!("{}{}", self.endpoint_text(), path);
        let url = Url::parse(&text).map_err(|source| ClientError::InvalidUrl {
            what: "a request path",
            url: text.clone(),
            source,
        })?;
        Ok(with_api_version(url))
    }

    /// An absolute URL the server handed out (`nextLink`, `Azure-AsyncOperation`), with
    /// `api-version` added if it lacks one.
    pub fn absolute(&self, what: &'static str, text: &str) -> Result<Url, ClientError> {
        let url = Url::parse(text).map_err(|source| ClientError::InvalidUrl {
            what,
            url: text.to_owned(),
            source,
        })?;
        Ok(with_api_version(url))
    }

    /// A request builder with the headers every request carries.
    pub fn request(&self, method: Method, url: Url) -> reqwest::RequestBuilder {
        let request = self.http.request(method, url);
        match self.current_token() {
            Some(token) => request.header(AUTHORIZATION, format!("Bearer {token}")),
            None => request,
        }
    }

    /// Maps a transport failure to [`ClientError`].
    pub fn transport_error(&self, method: Method, url: Url, source: reqwest::Error) -> ClientError {
        if source.is_connect() {
            ClientError::Unreachable {
                endpoint: self.endpoint_text(),
                source,
            }
        } else {
            ClientError::Transport {
                method,
                url: url.to_string(),
                source,
            }
        }
    }

    /// Sends a request and returns the raw response if it is a 2xx; anything else becomes
    /// an error. Used directly for streaming answers.
    pub async fn open(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
    ) -> Result<reqwest::Response, ClientError> {
        let mut request = self.request(method.clone(), url.clone());
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| self.transport_error(method.clone(), url.clone(), e))?;
        check_status(method, url, response).await
    }

    /// Sends a request and reads its JSON answer.
    pub async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
    ) -> Result<Reply, ClientError> {
        let response = self.open(method.clone(), url.clone(), body).await?;
        self.reply(method, url, response).await
    }

    /// Reads a response: a non-2xx becomes an error, a 2xx a [`Reply`] with its JSON body
    /// and operation headers.
    pub async fn reply(
        &self,
        method: Method,
        url: Url,
        response: reqwest::Response,
    ) -> Result<Reply, ClientError> {
        let response = check_status(method.clone(), url.clone(), response).await?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(method.clone(), url.clone(), e))?;
        let body = if bytes.iter().all(u8::is_ascii_whitespace) {
            None
        } else {
            Some(
                serde_json::from_slice(&bytes).map_err(|source| ClientError::InvalidJson {
                    method,
                    url: url.to_string(),
                    source,
                })?,
            )
        };
        Ok(Reply {
            status,
            operation: self.operation_url(&headers)?,
            retry_after: retry_after(&headers),
            body,
        })
    }

    /// Sends `method path` with an optional body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Reply, ClientError> {
        let url = self.url(path)?;
        self.send(method, url, body).await
    }

    /// GETs `path` and returns its JSON body (`null` if it had none).
    pub async fn get_json(&self, path: &str) -> Result<Value, ClientError> {
        let reply = self.call(Method::GET, path, None).await?;
        Ok(reply.body.unwrap_or(Value::Null))
    }

    /// GETs a list at `path`, following every absolute `nextLink`, and returns the items.
    pub async fn list(&self, path: &str) -> Result<Vec<Value>, ClientError> {
        let mut url = self.url(path)?;
        let mut items = Vec::new();
        for _ in 0..MAX_PAGES {
            let reply = self.send(Method::GET, url.clone(), None).await?;
            let next = match reply.body {
                Some(Value::Array(page)) => {
                    items.extend(page);
                    None
                }
                Some(Value::Object(mut page)) => {
                    if let Some(Value::Array(values)) = page.remove("value") {
                        items.extend(values);
                    }
                    match page.remove("nextLink") {
                        Some(Value::String(link)) if !link.is_empty() => Some(link),
                        _ => None,
                    }
                }
                _ => None,
            };
            match next {
                Some(link) => url = self.absolute("nextLink", &link)?,
                None => return Ok(items),
            }
        }
        Err(ClientError::EndlessPaging {
            url: url.to_string(),
        })
    }

    fn operation_url(&self, headers: &HeaderMap) -> Result<Option<Url>, ClientError> {
        let Some(value) = headers.get("azure-asyncoperation") else {
            return Ok(None);
        };
        let text = value.to_str().unwrap_or_default();
        self.absolute("the Azure-AsyncOperation header", text)
            .map(Some)
    }
}

/// Turns a non-2xx response into an error, reading its ARM error body.
async fn check_status(
    method: Method,
    url: Url,
    response: reqwest::Response,
) -> Result<reqwest::Response, ClientError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let text = response.text().await.unwrap_or_default();
    let arm = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|body| ArmError::from_body(&body));
    Err(match arm {
        Some(arm) => ClientError::Api(arm),
        None => ClientError::UnexpectedStatus {
            method,
            url: url.to_string(),
            status,
            body: text,
        },
    })
}

/// `Retry-After` in seconds (the HTTP-date form is ignored, as ARM never sends it).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers
        .get("retry-after")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds))
}

/// `url` with `api-version` in its query, unless it already has one.
pub fn with_api_version(mut url: Url) -> Url {
    if !url.query_pairs().any(|(key, _)| key == "api-version") {
        url.query_pairs_mut()
            .append_pair("api-version", API_VERSION);
    }
    url
}

#[cfg(test)]
mod tests {

    #[test]
    fn endpoints_are_one_url_or_several() {
        let one: Endpoints = "http://127.0.0.1:7070".parse().unwrap();
        assert_eq!(one.all().len(), 1);
        let two: Endpoints = "http://a:1, http://b:2/".parse().unwrap();
        assert_eq!(two.as_str(), "http://a:1/", "derefs to the first");
        assert_eq!(two.to_string(), "http://a:1,http://b:2");
        assert!("".parse::<Endpoints>().is_err());
        assert!("http://a:1,nope".parse::<Endpoints>().is_err());
    }

    #[tokio::test]
    async fn the_first_server_that_answers_is_used() {
        // A port nothing listens on, then one that answers /healthz.
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead_url = format!("http://{}", dead.local_addr().unwrap());
        drop(dead);
        let live = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live_url = format!("http://{}", live.local_addr().unwrap());
        tokio::spawn(async move {
            let app = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok" }));
            axum::serve(live, app).await.unwrap();
        });
        let opts = ClientOptions {
            endpoint: format!("{dead_url},{live_url}").parse().unwrap(),
            ..ClientOptions::new("http://127.0.0.1:1".parse().unwrap())
        };
        let client = Client::new(&opts).unwrap().reachable().await;
        assert_eq!(client.endpoint_text(), live_url);
    }
    use super::*;
    use serde_json::json;

    fn client(endpoint: &str) -> Client {
        Client::new(&ClientOptions::new(endpoint.parse().unwrap())).unwrap()
    }

    #[test]
    fn urls_carry_api_version_once() {
        let c = client("http://127.0.0.1:7070/");
        let url = c.url("/subscriptions/s/resourcegroups/demo").unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:7070/subscriptions/s/resourcegroups/demo?api-version=2024-07-01"
        );
        let url = c.url("/x/virtualMachines?$expand=instanceView").unwrap();
        assert_eq!(
            url.query(),
            Some("$expand=instanceView&api-version=2024-07-01")
        );
        let next = c
            .absolute(
                "nextLink",
                "http://h:1/x?api-version=2020-01-01&$skiptoken=5",
            )
            .unwrap();
        assert_eq!(next.query(), Some("api-version=2020-01-01&$skiptoken=5"));
    }

    #[test]
    fn endpoint_with_base_path_is_kept() {
        let c = client("http://example.test/shoal/");
        let url = c.url("/subscriptions/s").unwrap();
        assert_eq!(url.path(), "/shoal/subscriptions/s");
    }

    #[test]
    fn https_is_refused_clearly() {
        let err = Client::new(&ClientOptions::new("https://h".parse().unwrap())).unwrap_err();
        assert!(
            err.to_string().contains("TLS is not supported yet"),
            "{err}"
        );
    }

    #[test]
    fn arm_error_bodies_are_read() {
        let body = json!({"error": {"code": "InvalidParameter", "message": "Bad sku", "target": "sku.name"}});
        assert_eq!(
            ArmError::from_body(&body),
            Some(ArmError {
                code: "InvalidParameter".into(),
                message: "Bad sku".into(),
                target: Some("sku.name".into()),
            })
        );
        assert_eq!(ArmError::from_body(&json!({"status": "Failed"})), None);
    }

    #[test]
    fn unexpected_bodies_are_quoted_briefly() {
        assert_eq!(quote_body("  "), "");
        assert_eq!(quote_body("oops\n"), ": oops");
        let long = "x".repeat(1000);
        assert_eq!(quote_body(&long).chars().count(), 2 + QUOTED_BODY_LIMIT + 1);
    }
}
