"""application_gateways (azure-mgmt-network 33.1) in front of a scale set: the gateway
written with the SDK's model classes, a set joining its pool, bad input answered as the
SDK expects (HttpResponseError with the field in `error.target`), and Shoal's certificate
extension (`sslCertificates[].properties.shoal`, unknown to the SDK's models) sent in a
plain JSON body."""

import os
import socket
import uuid
from pathlib import Path

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.network import models as nm

from conftest import DEADLINE, LOCATION, SKU, SUBSCRIPTION, env, http_get, unique, wait_for, web_image


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gateway_id(group, name):
    return f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{group}/providers/Microsoft.Network/applicationGateways/{name}"


def gateway_model(group, name, port):
    """One listener on 127.0.0.1:port, one Basic rule to pool `pool` on the image's port."""
    gid = gateway_id(group, name)

    def ref(kind, child):
        return nm.SubResource(id=f"{gid}/{kind}/{child}")

    return nm.ApplicationGateway(
        location=LOCATION,
        sku=nm.ApplicationGatewaySku(name="Standard_v2", tier="Standard_v2", capacity=1),
        frontend_ip_configurations=[nm.ApplicationGatewayFrontendIPConfiguration(name="fe", private_ip_address="127.0.0.1")],
        frontend_ports=[nm.ApplicationGatewayFrontendPort(name="http", port=port)],
        probes=[nm.ApplicationGatewayProbe(name="health", protocol="Http", path="/health", interval=1, timeout=1, unhealthy_threshold=2)],
        backend_address_pools=[nm.ApplicationGatewayBackendAddressPool(name="pool")],
        backend_http_settings_collection=[
            nm.ApplicationGatewayBackendHttpSettings(
                name="settings", port=8080, protocol="Http", cookie_based_affinity="Disabled", request_timeout=20,
                probe=ref("probes", "health"),
            )
        ],
        http_listeners=[
            nm.ApplicationGatewayHttpListener(
                name="listener", protocol="Http",
                frontend_ip_configuration=ref("frontendIPConfigurations", "fe"),
                frontend_port=ref("frontendPorts", "http"),
            )
        ],
        request_routing_rules=[
            nm.ApplicationGatewayRequestRoutingRule(
                name="rule", rule_type="Basic", priority=100,
                http_listener=ref("httpListeners", "listener"),
                backend_address_pool=ref("backendAddressPools", "pool"),
                backend_http_settings=ref("backendHttpSettingsCollection", "settings"),
            )
        ],
    )


def vmss_behind(image_id, pool_id, capacity):
    return {
        "location": LOCATION,
        "sku": {"name": SKU, "capacity": capacity},
        "properties": {
            "upgradePolicy": {"mode": "Manual"},
            "virtualMachineProfile": {
                "storageProfile": {"imageReference": {"id": image_id}},
                "networkProfile": {"networkInterfaceConfigurations": [{"name": "nic", "properties": {
                    "primary": True,
                    "ipConfigurations": [{"name": "ip", "properties": {"applicationGatewayBackendAddressPools": [{"id": pool_id}]}}],
                }}]},
            },
        },
    }


def test_application_gateway_create_get_list_delete(network, compute, group):
    name, port = unique("gw"), free_port()
    gw = network.application_gateways.begin_create_or_update(group, name, gateway_model(group, name, port)).result(timeout=DEADLINE)
    assert gw.id == gateway_id(group, name) and gw.provisioning_state == "Succeeded"
    assert gw.operational_state == "Running"
    assert gw.backend_http_settings_collection[0].request_timeout == 20
    assert [g.name for g in network.application_gateways.list(group)] == [name]

    pool_id = f"{gw.id}/backendAddressPools/pool"
    set_name = unique("web")
    compute.virtual_machine_scale_sets.begin_create_or_update(
        group, set_name, vmss_behind(web_image(group), pool_id, 2)
    ).result(timeout=DEADLINE)
    seen = set()

    def both_answer():
        seen.add(http_get(f"127.0.0.1:{port}", timeout=2)[1])
        return seen >= {"instance 0", "instance 1"}

    wait_for("both instances to answer through the application gateway", both_answer)
    members = network.application_gateways.get(group, name).backend_address_pools[0].backend_ip_configurations
    assert len(members) == 2

    compute.virtual_machine_scale_sets.begin_delete(group, set_name).result(timeout=DEADLINE)
    network.application_gateways.begin_delete(group, name).result(timeout=DEADLINE)
    with pytest.raises(ResourceNotFoundError):
        network.application_gateways.get(group, name)
    wait_for("the frontend to close", lambda: not _answers(port))


def _answers(port):
    try:
        http_get(f"127.0.0.1:{port}", timeout=1)
        return True
    except Exception:
        return False


def test_a_missing_reference_is_a_400_naming_the_field(network, group):
    name = unique("gw")
    model = gateway_model(group, name, free_port())
    model.request_routing_rules[0].backend_address_pool = nm.SubResource(id=f"{gateway_id(group, name)}/backendAddressPools/nope")
    with pytest.raises(HttpResponseError) as e:
        network.application_gateways.begin_create_or_update(group, name, model).result(timeout=DEADLINE)
    assert e.value.status_code == 400
    assert e.value.error.target == "properties.requestRoutingRules[0].properties.backendAddressPool.id"
    with pytest.raises(ResourceNotFoundError):
        network.application_gateways.get(group, name)


def fifo_in_the_certificate_directory():
    path = Path(env("SHOAL_SDK_DATA_DIR")) / "certificates" / f"fifo-{uuid.uuid4().hex[:6]}.pem"
    os.mkfifo(path)
    return str(path)


@pytest.mark.parametrize(
    "certificate_file",
    ["/nonexistent/cert.pem", "/dev/zero", "fifo", "/etc/passwd", "relative/cert.pem"],
)
def test_an_unreadable_certificate_file_is_a_400_naming_the_field(network, group, certificate_file):
    # Only regular files of the server's certificate directory are read: a device would
    # fill the memory, a FIFO would hang the request, any other file is the server's own.
    if certificate_file == "fifo":
        certificate_file = fifo_in_the_certificate_directory()
    name = unique("gw")
    gid = gateway_id(group, name)
    body = gateway_model(group, name, free_port()).as_dict()
    body["properties"]["sslCertificates"] = [
        {"name": "cert", "properties": {"shoal": {"certificateFile": certificate_file, "keyFile": "/nonexistent/key.pem"}}}
    ]
    listener = body["properties"]["httpListeners"][0]["properties"]
    listener["protocol"] = "Https"
    listener["sslCertificate"] = {"id": f"{gid}/sslCertificates/cert"}
    # A request that hung on the file would end in a read timeout, not an HttpResponseError.
    with pytest.raises(HttpResponseError) as e:
        network.application_gateways.begin_create_or_update(group, name, body, read_timeout=30).result(
            timeout=DEADLINE
        )
    assert e.value.status_code == 400
    assert e.value.error.target == "properties.sslCertificates[0].properties.shoal.certificateFile"
    assert "certificate directory" in e.value.error.message or "not an absolute path" in e.value.error.message


def pfx(password, legacy=False):
    """A self-signed certificate for localhost with its key, as base-64 PFX (AES-256 as
    OpenSSL 3 exports by default, or the legacy 3DES many tools still write), and the
    leaf's DER."""
    import base64
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import pkcs12
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    if legacy:
        encryption = (
            serialization.PrivateFormat.PKCS12.encryption_builder()
            .kdf_rounds(2048)
            .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
            .hmac_hash(hashes.SHA1())
            .build(password.encode())
        )
    else:
        encryption = serialization.BestAvailableEncryption(password.encode())
    data = pkcs12.serialize_key_and_certificates(b"gw", key, cert, None, encryption)
    return base64.b64encode(data).decode(), cert.public_bytes(serialization.Encoding.DER)


def https_get(port, cafile_pem):
    """GET / over TLS, verifying the gateway's certificate against the one we made."""
    import ssl
    import urllib.request

    context = ssl.create_default_context(cadata=cafile_pem)
    with urllib.request.urlopen(f"https://localhost:{port}/", timeout=2, context=context) as r:
        return r.status, r.read().decode().strip()


@pytest.mark.parametrize("legacy", [False, True], ids=["aes256", "3des"])
def test_a_pfx_certificate_is_served_and_its_key_never_answered(network, compute, group, legacy):
    import base64
    import ssl as _ssl

    name, port = unique("gw"), free_port()
    gid = gateway_id(group, name)
    data, leaf = pfx("s3cret-pw", legacy)
    model = gateway_model(group, name, port)
    model.ssl_certificates = [nm.ApplicationGatewaySslCertificate(name="cert", data=data, password="s3cret-pw")]
    model.http_listeners[0].protocol = "Https"
    model.http_listeners[0].ssl_certificate = nm.SubResource(id=f"{gid}/sslCertificates/cert")

    # A wrong password: 400 naming the field, nothing made.
    wrong = gateway_model(group, name, port)
    wrong.ssl_certificates = [nm.ApplicationGatewaySslCertificate(name="cert", data=data, password="nope")]
    wrong.http_listeners[0].protocol = "Https"
    wrong.http_listeners[0].ssl_certificate = nm.SubResource(id=f"{gid}/sslCertificates/cert")
    with pytest.raises(HttpResponseError) as e:
        network.application_gateways.begin_create_or_update(group, name, wrong).result(timeout=DEADLINE)
    assert (e.value.status_code, e.value.error.target) == (400, "properties.sslCertificates[0].properties.data")
    with pytest.raises(ResourceNotFoundError):
        network.application_gateways.get(group, name)

    gw = network.application_gateways.begin_create_or_update(group, name, model).result(timeout=DEADLINE)
    cert = gw.ssl_certificates[0]
    assert base64.b64decode(cert.public_cert_data) == leaf
    assert cert.data is None and cert.password is None
    raw = network.application_gateways.get(group, name).as_dict()
    assert "shoalPem" not in str(raw) and "PRIVATE KEY" not in str(raw), "the key is never answered"

    compute.virtual_machine_scale_sets.begin_create_or_update(
        group, unique("web"), vmss_behind(web_image(group), f"{gid}/backendAddressPools/pool", 1)
    ).result(timeout=DEADLINE)
    ca = _ssl.DER_cert_to_PEM_cert(leaf)

    def answers_over_tls():
        try:
            return https_get(port, ca) == (200, "instance 0")
        except OSError:
            return False

    wait_for("the instance to answer over HTTPS with the uploaded certificate", answers_over_tls)

    # GET-modify-PUT sends no data back: the certificate stays.
    again = network.application_gateways.get(group, name)
    again.tags = {"touched": "yes"}
    network.application_gateways.begin_create_or_update(group, name, again).result(timeout=DEADLINE)
    assert https_get(port, ca) == (200, "instance 0")
