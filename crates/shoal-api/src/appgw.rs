//! `Microsoft.Network/applicationGateways`: what differs from other resources in their
//! create/replace, read, list and delete, which [`crate::arm_crud`] serves through
//! [`ApplicationGateways`]. A balancer process (inside `shoal serve` or `shoal balancer`)
//! follows these resources through the store watch (`appgw/` keys) and serves their
//! listeners.
//!
//! A PUT is parsed, normalized and validated by `shoal_model::appgw`; this module adds the
//! checks that need I/O or other resources — the certificate files can be read, and no
//! frontend port is taken by a load balancer, another gateway or another program — before
//! anything is stored, so a refused PUT changes nothing. A gateway a scale set still
//! joins cannot be deleted; GET shows each pool's members.

use std::path::Path;

use serde_json::Value;
use shoal_model::appgw::{self, ApplicationGateway, APPGW_TYPE};
use shoal_model::network::{self, PoolOwner};
use shoal_model::ArmError;

use crate::arm_crud::{self, Addr, ArmKind};
use crate::network::{refuse_while_joined, with_pool_members, LoadBalancers};
use crate::state::ApiState;

/// `Microsoft.Network/applicationGateways` for [`arm_crud`](crate::arm_crud), stored under
/// `appgw/`.
pub struct ApplicationGateways;

impl ArmKind for ApplicationGateways {
    type Model = ApplicationGateway;
    const TYPE: &'static str = APPGW_TYPE;
    const ID_PATH: &'static str = APPGW_TYPE;
    const KEY_PREFIX: &'static str = "appgw";
    const NOUN: &'static str = "application gateway";
    const MAX_NAME_LEN: usize = 80;

    async fn admit(
        st: &ApiState,
        gw: &mut ApplicationGateway,
        id: &str,
        _: Addr<'_>,
        existing: Option<&ApplicationGateway>,
    ) -> Result<(), ArmError> {
        crate::pfx::admit(gw, existing).await?;
        appgw::normalize_appgw(gw, id);
        appgw::validate_appgw(gw, id)?;
        check_certificates(gw, &st.certificate_dir).await?;
        check_ports_free(st, gw, id).await?;
        gw.properties.sku.get_or_insert_with(|| appgw::AppGwSku {
            name: Some("Standard_v2".into()),
            tier: Some("Standard_v2".into()),
            capacity: Some(1),
            family: None,
        });
        gw.properties.resource_guid = existing
            .and_then(|e| e.properties.resource_guid.clone())
            .or_else(|| Some(uuid::Uuid::new_v4().to_string()));
        Ok(())
    }

    async fn check_unused(
        st: &ApiState,
        gw: &ApplicationGateway,
        at: Addr<'_>,
    ) -> Result<(), ArmError> {
        // As for load balancers: not while a scale set still puts instances in it.
        refuse_while_joined(
            st,
            PoolOwner::ApplicationGateway,
            gw.id.as_deref().unwrap_or_default(),
            "InUseApplicationGatewayCannotBeDeleted",
            &format!("Application gateway '{}'", at.name),
            at.name,
        )
        .await
    }

    async fn view(
        st: &ApiState,
        gw: &ApplicationGateway,
        revision: u64,
    ) -> Result<Value, ArmError> {
        let mut v = with_pool_members(st, gw, revision, PoolOwner::ApplicationGateway).await?;
        // A certificate's key stays with the balancers: GET shows publicCertData only.
        if let Some(certs) = v
            .pointer_mut("/properties/sslCertificates")
            .and_then(Value::as_array_mut)
        {
            for c in certs {
                if let Some(p) = c.get_mut("properties").and_then(Value::as_object_mut) {
                    p.remove("shoalPem");
                }
            }
        }
        Ok(v)
    }
}

/// The base-64 body of the first PEM block labelled `label`, if any.
fn pem_block(text: &str, label: &str) -> Option<String> {
    let begin = format!("-----BEGIN {label}-----");
    let start = text.find(&begin)? + begin.len();
    let end = text[start..].find("-----END ")? + start;
    let body: String = text[start..end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    (!body.is_empty()).then_some(body)
}

/// Every certificate and key file must be readable PEM of the right kind: an unreadable
/// one is a 400 naming its field, now rather than a listener that never comes up.
/// Fills in `publicCertData` (the leaf certificate, base-64 DER) as Azure shows it.
async fn check_certificates(gw: &mut ApplicationGateway, dir: &Path) -> Result<(), ArmError> {
    let mut leaves = Vec::new();
    for (target, path) in appgw::certificate_files(gw) {
        let text = read_certificate_file(&path, dir)
            .await
            .map_err(|why| ArmError::invalid_parameter(target.clone(), why))?;
        if target.ends_with(".certificateFile") {
            let Some(leaf) = pem_block(&text, "CERTIFICATE") else {
                return Err(ArmError::invalid_parameter(
                    target,
                    format!("'{path}' holds no PEM certificate (-----BEGIN CERTIFICATE-----)."),
                ));
            };
            leaves.push(leaf);
        } else if !["PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"]
            .iter()
            .any(|label| pem_block(&text, label).is_some())
        {
            return Err(ArmError::invalid_parameter(
                target,
                format!("'{path}' holds no PEM private key (PKCS#8, PKCS#1 or SEC1)."),
            ));
        }
    }
    for (cert, leaf) in gw
        .properties
        .ssl_certificates
        .iter_mut()
        .filter(|c| c.properties.shoal.is_some())
        .zip(leaves)
    {
        cert.properties.public_cert_data = Some(leaf);
    }
    Ok(())
}

/// Largest certificate or key file read (a PEM chain is a few KiB).
const MAX_CERTIFICATE_FILE: u64 = 1 << 20;

/// Reads a certificate or key file a request names — only a regular file of at most
/// 1 MiB inside the server's certificate directory (`<data-dir>/certificates`), after
/// resolving symbolic links: never a device (`/dev/zero` would fill the memory), a FIFO
/// (the read would never end) or another file of the server's. The error says why.
async fn read_certificate_file(path: &str, dir: &Path) -> Result<String, String> {
    let where_to = format!(
        "put the PEM file in the server's certificate directory {} and name it by its absolute path",
        dir.display()
    );
    let given = Path::new(path);
    if !given.is_absolute() {
        return Err(format!("'{path}' is not an absolute path: {where_to}."));
    }
    let real = tokio::fs::canonicalize(given)
        .await
        .map_err(|e| format!("Cannot read '{path}' ({e}): {where_to}."))?;
    let allowed = tokio::fs::canonicalize(dir).await.ok();
    if !allowed.is_some_and(|d| real.starts_with(d)) {
        return Err(format!(
            "'{path}' is outside the server's certificate directory: {where_to}."
        ));
    }
    let meta = tokio::fs::metadata(&real)
        .await
        .map_err(|e| format!("Cannot read '{path}' ({e}): {where_to}."))?;
    if !meta.is_file() {
        return Err(format!("'{path}' is not a regular file: {where_to}."));
    }
    if meta.len() > MAX_CERTIFICATE_FILE {
        return Err(format!(
            "'{path}' is {} bytes, more than a certificate file may be ({MAX_CERTIFICATE_FILE} bytes).",
            meta.len()
        ));
    }
    let file = tokio::fs::File::open(&real)
        .await
        .map_err(|e| format!("Cannot read '{path}' ({e}): {where_to}."))?;
    let mut bytes = Vec::new();
    use tokio::io::AsyncReadExt;
    file.take(MAX_CERTIFICATE_FILE + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| format!("Cannot read '{path}' ({e}): {where_to}."))?;
    String::from_utf8(bytes).map_err(|_| format!("'{path}' is not PEM text."))
}

/// A frontend port held by a load-balancing rule, another gateway or another program is
/// a 409 naming the port, rather than a listener that fails later in the data plane.
/// Ports this gateway already serves are its own (our balancer holds them).
async fn check_ports_free(
    st: &ApiState,
    gw: &ApplicationGateway,
    id: &str,
) -> Result<(), ArmError> {
    let same = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    let mut taken: Vec<(std::net::IpAddr, u16, String)> = Vec::new();
    for lb in arm_crud::all::<LoadBalancers>(st).await? {
        let lb_id = lb.value.id.clone().unwrap_or_default();
        for rule in network::resolved_rules(&lb.value, &lb_id) {
            if let Ok(ip) = rule.frontend_ip.parse() {
                taken.push((
                    ip,
                    rule.frontend_port,
                    format!(
                        "load balancer '{}'",
                        lb.value.name.clone().unwrap_or_default()
                    ),
                ));
            }
        }
    }
    let mut ours = Vec::new();
    for other in arm_crud::all::<ApplicationGateways>(st).await? {
        let other_id = other.value.id.clone().unwrap_or_default();
        for front in appgw::resolved_frontends(&other.value, &other_id) {
            if same(&other_id, id) {
                ours.push((front.ip, front.port));
            } else {
                taken.push((
                    front.ip,
                    front.port,
                    format!(
                        "application gateway '{}'",
                        other.value.name.clone().unwrap_or_default()
                    ),
                ));
            }
        }
    }
    let target_of = |port: u16| {
        let i = gw
            .properties
            .frontend_ports
            .iter()
            .position(|p| p.properties.port == Some(i64::from(port)))
            .unwrap_or(0);
        format!("properties.frontendPorts[{i}].properties.port")
    };
    let overlaps = |a: std::net::IpAddr, b: std::net::IpAddr| {
        a == b || a.is_unspecified() || b.is_unspecified()
    };
    for front in appgw::resolved_frontends(gw, id) {
        if let Some((ip, port, user)) = taken
            .iter()
            .find(|(ip, port, _)| *port == front.port && overlaps(*ip, front.ip))
        {
            return Err(ArmError::conflict(format!(
                "Frontend {ip}:{port} is already used by {user}: choose another frontend port."
            ))
            .with_target(target_of(front.port)));
        }
        if ours.contains(&(front.ip, front.port)) {
            continue;
        }
        let addr = std::net::SocketAddr::new(front.ip, front.port);
        if let Err(e) = std::net::TcpListener::bind(addr) {
            return Err(ArmError::conflict(format!(
                "Frontend {addr} cannot be used ({e}): choose another frontend port."
            ))
            .with_target(target_of(front.port)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_blocks_are_found_by_label() {
        let text = "junk\n-----BEGIN CERTIFICATE-----\nAAAA\nBBBB\n-----END CERTIFICATE-----\n";
        assert_eq!(pem_block(text, "CERTIFICATE").as_deref(), Some("AAAABBBB"));
        assert_eq!(pem_block(text, "PRIVATE KEY"), None);
        assert_eq!(
            pem_block("-----BEGIN CERTIFICATE-----", "CERTIFICATE"),
            None
        );
    }

    proptest::proptest! {
        #[test]
        fn pem_scanning_never_panics(text in "\\PC{0,200}") {
            let _ = pem_block(&text, "CERTIFICATE");
        }
    }
}
