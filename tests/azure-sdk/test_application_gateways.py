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
