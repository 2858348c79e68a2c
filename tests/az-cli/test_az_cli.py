"""The real `az` CLI (azure-cli, pinned in requirements.txt) against `shoal serve`, as a
user points it at Shoal: `az cloud register` with endpoint discovery, `az login` with a
service principal and with a managed identity, then the everyday commands.

scripts/azure-sdk.sh runs this with its own virtualenv (.venv-az) and a server started
with --tls-listen (MSAL accepts only an https authority). Each test has its own
AZURE_CONFIG_DIR, so no test sees another's login."""

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

DATA = Path(os.environ["SHOAL_SDK_DATA_DIR"])
HTTP = os.environ["SHOAL_SDK_ENDPOINT"]
HTTPS = os.environ["SHOAL_SDK_TLS_ENDPOINT"]
SHOAL = os.environ["SHOAL_SDK_BIN"]
AZ = os.environ["SHOAL_AZ_BIN"]
SUB = "00000000-0000-0000-0000-000000000000"
TIMEOUT = 120


def owner():
    return json.loads((DATA / "credentials" / "owner.json").read_text())


class Az:
    """`az` with a config directory of its own, trusting Shoal's certificate."""

    def __init__(self, tmp_path, extra_env=None):
        self.env = {
            **os.environ,
            "AZURE_CONFIG_DIR": str(tmp_path / "az"),
            "AZURE_CORE_COLLECT_TELEMETRY": "false",
            "AZURE_CORE_INSTANCE_DISCOVERY": "false",
            "AZURE_CORE_ONLY_SHOW_ERRORS": "true",
            "REQUESTS_CA_BUNDLE": str(DATA / "tls" / "cert.pem"),
            **(extra_env or {}),
        }

    def run(self, *args, check=True):
        p = subprocess.run([AZ, *args], env=self.env, capture_output=True, text=True, timeout=TIMEOUT)
        if check and p.returncode != 0:
            raise AssertionError(f"az {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
        return p

    def json(self, *args):
        out = self.run(*args, "-o", "json").stdout
        return json.loads(out) if out.strip() else None

    def register(self):
        # Endpoint discovery: az reads {arm}/metadata/endpoints and fills in the rest.
        self.run("cloud", "register", "--name", "shoal", "--endpoint-resource-manager", f"{HTTPS}/")
        self.run("cloud", "set", "--name", "shoal")
        return self.json("cloud", "show", "--name", "shoal")


def shoal(*args):
    p = subprocess.run(
        [SHOAL, "--endpoint", HTTP, *args],
        env={**os.environ, "SHOAL_DATA_DIR": str(DATA)},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert p.returncode == 0, f"shoal {' '.join(args)}: {p.stdout}\n{p.stderr}"
    return p.stdout


@pytest.fixture(scope="module")
def scale_set():
    """A group with a two-instance set, made with Shoal's own CLI (`az vmss create` is
    another issue's)."""
    rg = f"az-{uuid.uuid4().hex[:6]}"
    shoal("group", "create", "--name", rg, "--location", "local")
    shoal(
        "image", "create", "-g", rg, "--gallery", "apps", "--name", "web", "--version", "1.0.0",
        "--dir", "examples/web", "--command", "./shoal-web", "--port", "8080",
    )
    image = f"/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Compute/galleries/apps/images/web/versions/1.0.0"
    shoal("vmss", "create", "-g", rg, "-n", "web", "--image", image, "--instance-count", "2")
    return rg


def test_cloud_register_discovers_the_endpoints(tmp_path):
    cloud = Az(tmp_path).register()
    endpoints = cloud["endpoints"]
    assert endpoints["resourceManager"] == f"{HTTPS}/"
    # The login endpoint az found is Shoal's own token authority.
    assert endpoints["activeDirectory"].rstrip("/") == HTTPS
    assert endpoints["activeDirectoryResourceId"]


def test_login_with_a_service_principal_then_the_everyday_commands(tmp_path, scale_set):
    az = Az(tmp_path)
    az.register()
    o = owner()
    accounts = az.json(
        "login", "--service-principal", "-u", o["appId"], "-p", o["password"], "--tenant", o["tenant"]
    )
    assert [a["id"] for a in accounts] == [SUB]
    assert accounts[0]["tenantId"] == o["tenant"]

    assert scale_set in [g["name"] for g in az.json("group", "list")]
    listed = az.json("vmss", "list", "-g", scale_set)
    assert [(s["name"], s["sku"]["capacity"]) for s in listed] == [("web", 2)]

    # az vmss scale GETs the set and PUTs back only {location, sku}: the model is kept.
    scaled = az.json("vmss", "scale", "-g", scale_set, "-n", "web", "--new-capacity", "3")
    assert scaled["sku"]["capacity"] == 3
    assert scaled["virtualMachineProfile"]["storageProfile"]["imageReference"]["id"].endswith("/versions/1.0.0")

    deadline = time.monotonic() + TIMEOUT
    while True:
        instances = az.json("vmss", "list-instances", "-g", scale_set, "-n", "web")
        if sorted(i["instanceId"] for i in instances) == ["0", "1", "2"] and all(
            i["provisioningState"] == "Succeeded" for i in instances
        ):
            break
        assert time.monotonic() < deadline, instances
        time.sleep(1)

    set_id = az.json("vmss", "show", "-g", scale_set, "-n", "web")["id"]
    # az sends the timespan percent-encoded twice, with times without a zone.
    metrics = az.json("monitor", "metrics", "list", "--resource", set_id, "--metric", "Percentage CPU")
    assert [m["name"]["value"] for m in metrics["value"]] == ["Percentage CPU"]
    assert metrics["value"][0]["unit"] == "Percent"
    # --offset 1h: $filter times with microseconds and no zone, read as UTC.
    events = az.json("monitor", "activity-log", "list", "--offset", "1h")
    # The scale above is there, as a write of this service principal that succeeded.
    writes = [
        e for e in events
        if e["operationName"]["value"] == "Microsoft.Compute/virtualMachineScaleSets/write"
        and e["resourceId"].lower() == set_id.lower()
    ]
    assert writes, [e["operationName"]["value"] for e in events]
    assert writes[0]["caller"] == o["appId"]
    assert writes[0]["status"]["value"] == "Succeeded"
    assert writes[0]["category"]["value"] == "Administrative"


def test_login_with_the_managed_identity(tmp_path, scale_set):
    # The App Service-style managed identity of the server's operator (IDENTITY_ENDPOINT,
    # IDENTITY_HEADER), as a process the operator gave the secret to sees it.
    secret = (DATA / "identity-header").read_text().strip()
    az = Az(tmp_path, {"IDENTITY_ENDPOINT": f"{HTTP}/msi/token", "IDENTITY_HEADER": secret})
    az.register()
    accounts = az.json("login", "--identity")
    assert [a["id"] for a in accounts] == [SUB]
    assert accounts[0]["user"]["assignedIdentityInfo"] == "MSI"
    assert "web" in [s["name"] for s in az.json("vmss", "list", "-g", scale_set)]


def test_a_wrong_secret_is_refused_and_az_says_so(tmp_path):
    az = Az(tmp_path)
    az.register()
    o = owner()
    p = az.run(
        "login", "--service-principal", "-u", o["appId"], "-p", "not-the-secret", "--tenant", o["tenant"],
        check=False,
    )
    assert p.returncode != 0
    assert "invalid_client" in p.stderr or "AADSTS" in p.stderr or "secret" in p.stderr.lower(), p.stderr
    # Without a login, az has no token to send.
    assert az.run("group", "list", check=False).returncode != 0


def test_login_with_a_certificate(tmp_path, scale_set):
    # A service principal made with `shoal ad sp create-for-rbac --cert`, signed in with
    # `az login --service-principal --certificate` (a client assertion signed by its key).
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "az-cert-login")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    both = tmp_path / "key-and-cert.pem"
    both.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        + cert_pem
    )
    sp = json.loads(shoal(
        "ad", "sp", "create-for-rbac", "--name", "az-cert", "--role", "Reader",
        "--scopes", f"/subscriptions/{SUB}/resourceGroups/{scale_set}", "--cert", str(tmp_path / "cert.pem"),
    ))
    az = Az(tmp_path)
    az.register()
    accounts = az.json(
        "login", "--service-principal", "-u", sp["appId"], "--certificate", str(both), "--tenant", sp["tenant"]
    )
    assert [a["id"] for a in accounts] == [SUB]
    assert [s["name"] for s in az.json("vmss", "list", "-g", scale_set)] == ["web"]
    # A Reader: the scale is refused.
    p = az.run("vmss", "scale", "-g", scale_set, "-n", "web", "--new-capacity", "4", check=False)
    assert p.returncode != 0 and "AuthorizationFailed" in p.stderr, p.stderr


def test_az_identity_create_then_vmss_identity_assign(tmp_path, scale_set):
    az = Az(tmp_path)
    az.register()
    o = owner()
    az.json("login", "--service-principal", "-u", o["appId"], "-p", o["password"], "--tenant", o["tenant"])
    made = az.json("identity", "create", "-g", scale_set, "-n", "web-id")
    assert made["principalId"] and made["clientId"], made
    assert [i["name"] for i in az.json("identity", "list", "-g", scale_set)] == ["web-id"]
    assigned = az.json("vmss", "identity", "assign", "-g", scale_set, "-n", "web", "--identities", "web-id")
    named = {k.lower(): v for k, v in (assigned.get("userAssignedIdentities") or {}).items()}
    assert named[made["id"].lower()]["principalId"] == made["principalId"], assigned
    shown = az.json("vmss", "show", "-g", scale_set, "-n", "web")
    assert "UserAssigned" in shown["identity"]["type"], shown["identity"]


def signed_in(tmp_path):
    az = Az(tmp_path)
    az.register()
    o = owner()
    az.json("login", "--service-principal", "-u", o["appId"], "-p", o["password"], "--tenant", o["tenant"])
    return az


def wait_answering(az, rg, name, count):
    """Waits until `count` instances of the set run and each answers on its address."""
    import urllib.request

    deadline = time.monotonic() + TIMEOUT
    while True:
        instances = az.json("vmss", "list-instances", "-g", rg, "-n", name)
        views = [shoal("vmss", "get-instance-view", "-g", rg, "-n", name, "--instance-id", i["instanceId"]) for i in instances]
        addresses = [json.loads(v).get("shoal", {}).get("address") for v in views]
        if len(instances) == count and all(addresses):
            try:
                return [urllib.request.urlopen(f"http://{a}/", timeout=5).read().decode() for a in addresses]
            except OSError:
                pass
        assert time.monotonic() < deadline, (instances, views)
        time.sleep(1)


def test_az_vmss_create_uniform_in_a_named_subnet(tmp_path, scale_set):
    az = signed_in(tmp_path)
    rg = f"azc-{uuid.uuid4().hex[:6]}"
    az.run("group", "create", "-n", rg, "-l", "local")
    image = f"/subscriptions/{SUB}/resourceGroups/{scale_set}/providers/Microsoft.Compute/galleries/apps/images/web/versions/1.0.0"
    p = az.run(
        "vmss", "create", "-g", rg, "-n", "web", "--image", image, "--orchestration-mode", "Uniform",
        "--lb", "", "--vnet-name", "v", "--subnet", "s", "--admin-username", "shoal",
        "--admin-password", "Shoal-pass-1234!", "--instance-count", "2", "--vm-sku", "Shoal_1vCPU_512MB",
        check=False,
    )
    assert p.returncode == 0, p.stderr
    answers = wait_answering(az, rg, "web", 2)
    assert all(a.startswith("instance ") for a in answers), answers
    # The template az sent made the network it named, and the set is in its subnet.
    vnet = az.json("network", "vnet", "show", "-g", rg, "-n", "v")
    assert [s["name"] for s in vnet["subnets"]] == ["s"], vnet
    shown = az.json("vmss", "show", "-g", rg, "-n", "web")
    nic = shown["virtualMachineProfile"]["networkProfile"]["networkInterfaceConfigurations"][0]
    assert nic["ipConfigurations"][0]["subnet"]["id"].lower() == vnet["subnets"][0]["id"].lower()
    assert shown["orchestrationMode"] == "Uniform"
    # A subnet in use cannot be deleted; az says why.
    p = az.run("network", "vnet", "subnet", "delete", "-g", rg, "--vnet-name", "v", "-n", "s", check=False)
    assert p.returncode != 0 and "InUseSubnetCannotBeDeleted" in p.stderr, p.stderr
    az.run("vmss", "delete", "-g", rg, "-n", "web")
    az.run("network", "vnet", "subnet", "delete", "-g", rg, "--vnet-name", "v", "-n", "s")


def get_text(url):
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()


def eventually(what, probe):
    """Polls `probe` until it returns something true (or gives up with `what`)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            got = probe()
        except OSError:
            got = None
        if got:
            return got
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(1)


def test_az_vmss_create_with_the_defaults(tmp_path, scale_set):
    # az's defaults: Flexible orchestration, a new virtual network, a public IP in front of
    # a new load balancer (TCP 80 -> 80, no probe), a security group and a NAT rule, all
    # in one template deployment.
    az = signed_in(tmp_path)
    rg = f"azd-{uuid.uuid4().hex[:6]}"
    az.run("group", "create", "-n", rg, "-l", "local")
    image = f"/subscriptions/{SUB}/resourceGroups/{scale_set}/providers/Microsoft.Compute/galleries/apps/images/web/versions/1.0.0"
    az.run(
        "vmss", "create", "-g", rg, "-n", "web", "--image", image, "--admin-username", "shoal",
        "--admin-password", "Shoal-pass-1234!", "--instance-count", "2", "--vm-sku", "Shoal_1vCPU_512MB",
    )
    shown = az.json("vmss", "show", "-g", rg, "-n", "web")
    assert shown["orchestrationMode"] == "Flexible"
    deployments = az.json("deployment", "group", "list", "-g", rg)
    assert [d["properties"]["provisioningState"] for d in deployments] == ["Succeeded"], deployments
    assert {r["name"] for r in az.json("network", "nsg", "list", "-g", rg)} == {"webNSG"}
    nat = az.json("network", "lb", "inbound-nat-rule", "list", "-g", rg, "--lb-name", "webLB")
    assert [(r["name"], r["frontendPortRangeStart"], r["backendPort"]) for r in nat] == [("NatRule", 50000, 22)], nat

    # The instances answer through the balancer az made, on its public IP's port 80 (the
    # rule's backend port 80 is forwarded to the image's 8080, and the rule says so).
    ip = az.json("network", "public-ip", "show", "-g", rg, "-n", "webLBPublicIP")["ipAddress"]
    seen = set()

    def both_answer():
        seen.add(get_text(f"http://{ip}:80/"))
        return len(seen) == 2

    eventually(f"both instances to answer on {ip}:80 (saw {seen})", both_answer)
    assert all(a.startswith("instance ") for a in seen), seen
    # (az's models drop Shoal's own properties: `az rest` shows the raw answer.)
    lb_url = f"{HTTPS}/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Network/loadBalancers/webLB?api-version=2022-01-01"
    rule = az.json("rest", "--method", "get", "--url", lb_url)["properties"]["loadBalancingRules"][0]
    assert rule["properties"]["shoal"]["forwardedTo"][0]["port"] == 8080, rule

    # Each instance is a virtual machine of its own.
    vms = az.json("vm", "list", "-g", rg)
    assert sorted(v["name"] for v in vms) == ["web_0", "web_1"], vms
    assert all(v["virtualMachineScaleSet"]["id"].lower() == shown["id"].lower() for v in vms), vms
    assert az.json("vm", "show", "-g", rg, "-n", "web_1")["hardwareProfile"]["vmSize"] == "Shoal_1vCPU_512MB"
    # With details: each VM's network interface gives its private address and power state.
    detailed = az.json("vm", "list", "-d", "-g", rg)
    assert all(v["privateIps"] and v["powerState"] == "VM running" for v in detailed), detailed

    az.json("vmss", "scale", "-g", rg, "-n", "web", "--new-capacity", "3")
    eventually("three VMs", lambda: len(az.json("vm", "list", "-g", rg)) == 3)
    # Deleting a Flexible VM lowers the set's capacity.
    az.run("vm", "delete", "-g", rg, "-n", "web_0", "--yes")
    eventually("the set's capacity to be 2", lambda: az.json("vmss", "show", "-g", rg, "-n", "web")["sku"]["capacity"] == 2)
    assert sorted(v["name"] for v in az.json("vm", "list", "-g", rg)) == ["web_1", "web_2"]

    az.run("vmss", "delete", "-g", rg, "-n", "web")
    assert az.json("vm", "list", "-g", rg) == []


TEMPLATE = Path(__file__).parent / "templates" / "sets-behind-lb.json"


def test_az_deployment_group_create_with_a_template_file(tmp_path):
    import socket

    az = signed_in(tmp_path)
    rg = f"azt-{uuid.uuid4().hex[:6]}"
    az.run("group", "create", "-n", rg, "-l", "local")
    for version in ("1.0.0", "1.1.0"):
        shoal(
            "image", "create", "-g", rg, "--gallery", "apps", "--name", "web", "--version", version,
            "--dir", "examples/web", "--command", "./shoal-web", "--port", "8080",
        )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    versions = json.dumps(["1.0.0", "1.1.0"])
    done = az.json(
        "deployment", "group", "create", "-g", rg, "-n", "sets", "--template-file", str(TEMPLATE),
        "--parameters", f"port={port}", f"versions={versions}",
    )
    assert done["properties"]["provisioningState"] == "Succeeded", done
    outputs = done["properties"]["outputs"]
    assert outputs["sets"]["value"] == 2
    assert outputs["lbId"]["value"].lower().endswith(f"/resourcegroups/{rg}/providers/microsoft.network/loadbalancers/web-lb")
    # The copy loop made one set per version; both answer behind the template's balancer.
    for i, version in enumerate(["1.0.0", "1.1.0"]):
        shown = az.json("vmss", "show", "-g", rg, "-n", f"web-{i}")
        assert shown["virtualMachineProfile"]["storageProfile"]["imageReference"]["id"].endswith(f"/versions/{version}")
    wait_answering(az, rg, "web-0", 1)
    wait_answering(az, rg, "web-1", 1)
    members = lambda: az.json("network", "lb", "show", "-g", rg, "-n", "web-lb")["backendAddressPools"][0]["backendIPConfigurations"]  # noqa: E731
    assert len(members()) == 2
    eventually("the balancer to answer", lambda: get_text(f"http://127.0.0.1:{port}/").startswith("instance "))

    # One bad expression (an index past the end of the versions list, met only in the
    # loop's second round): the deployment fails as DeploymentFailed naming it, and what
    # it made before the failure stays, as ARM leaves it.
    bad = json.loads(TEMPLATE.read_text())
    image = bad["resources"][1]["properties"]["virtualMachineProfile"]["storageProfile"]["imageReference"]
    image["id"] = image["id"].replace("copyIndex()", "copyIndex(1)")
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        other_port = s.getsockname()[1]
    p = az.run(
        "deployment", "group", "create", "-g", rg, "-n", "bad", "--template-file", str(tmp_path / "bad.json"),
        "--parameters", f"port={other_port}", f"versions={versions}", "prefix=bad",
        check=False,
    )
    assert p.returncode != 0
    assert "DeploymentFailed" in p.stderr and "copyIndex(1)" in p.stderr, p.stderr
    failed = az.json("deployment", "group", "show", "-g", rg, "-n", "bad")
    assert failed["properties"]["provisioningState"] == "Failed"
    assert az.json("vmss", "show", "-g", rg, "-n", "bad-0")["name"] == "bad-0"
    assert az.run("vmss", "show", "-g", rg, "-n", "bad-1", check=False).returncode != 0


def test_az_vmss_create_from_a_published_urn_and_its_alias(tmp_path, scale_set):
    az = signed_in(tmp_path)
    urn = "Canonical:0001-com-ubuntu-server-jammy:22_04-lts-gen2"
    shoal(
        "image", "publish", "-g", scale_set, "--gallery", "apps", "--name", "web", "--version", "1.0.0",
        "--urn", f"{urn}:1.0.0",
    )
    # az's image catalogue calls answer for what is published, and 404 for the rest.
    versions = az.json("vm", "image", "list", "--publisher", "Canonical", "--offer", "0001-com-ubuntu-server-jammy", "--sku", "22_04-lts-gen2", "--all")
    assert [v["urn"] for v in versions] == [f"{urn}:1.0.0"], versions
    rg = f"azu-{uuid.uuid4().hex[:6]}"
    az.run("group", "create", "-n", rg, "-l", "local")
    common = ["--orchestration-mode", "Uniform", "--lb", "", "--admin-username", "shoal", "--admin-password",
              "Shoal-pass-1234!", "--instance-count", "1", "--vm-sku", "Shoal_1vCPU_512MB"]
    az.run("vmss", "create", "-g", rg, "-n", "byurn", "--image", f"{urn}:latest", *common)
    ref = az.json("vmss", "show", "-g", rg, "-n", "byurn")["virtualMachineProfile"]["storageProfile"]["imageReference"]
    assert (ref["publisher"], ref["sku"]) == ("Canonical", "22_04-lts-gen2"), ref
    # Azure's alias for that URN finds it too.
    az.run("vmss", "create", "-g", rg, "-n", "byalias", "--image", "Ubuntu2204", *common)
    assert wait_answering(az, rg, "byurn", 1)[0].startswith("instance ")
    assert wait_answering(az, rg, "byalias", 1)[0].startswith("instance ")
    # A URN nobody published: az's own lookup fails, nothing is made.
    p = az.run("vmss", "create", "-g", rg, "-n", "nothere", "--image", "Nobody:nothing:none:latest", *common, check=False)
    assert p.returncode != 0, p.stdout
    assert az.run("vmss", "show", "-g", rg, "-n", "nothere", check=False).returncode != 0


def test_az_vmss_create_an_instance_mix(tmp_path, scale_set):
    # az's instance-mix flags reach a Flexible set whose VM shows the size the mix gave it
    # (two sizes side by side on a small host: tests/e2e/flexible.rs).
    az = signed_in(tmp_path)
    rg = f"azm-{uuid.uuid4().hex[:6]}"
    az.run("group", "create", "-n", rg, "-l", "local")
    image = f"/subscriptions/{SUB}/resourceGroups/{scale_set}/providers/Microsoft.Compute/galleries/apps/images/web/versions/1.0.0"
    az.run(
        "vmss", "create", "-g", rg, "-n", "mix", "--image", image, "--lb", "", "--admin-username", "shoal",
        "--admin-password", "Shoal-pass-1234!", "--instance-count", "1", "--vm-sku", "Mix",
        "--skuprofile-vmsizes", "Shoal_2vCPU_1024MB", "Shoal_1vCPU_512MB",
        "--skuprofile-allocation-strategy", "Prioritized", "--skuprofile-rank", "0", "1",
    )
    shown = az.json("vmss", "show", "-g", rg, "-n", "mix")
    assert shown["sku"]["name"] == "Mix" and shown["orchestrationMode"] == "Flexible", shown
    sizes = [s["name"] for s in shown["skuProfile"]["vmSizes"]]
    assert sizes == ["Shoal_2vCPU_1024MB", "Shoal_1vCPU_512MB"], shown["skuProfile"]
    vm = eventually("the mix's VM", lambda: az.json("vm", "list", "-g", rg))
    assert [v["hardwareProfile"]["vmSize"] for v in vm] == ["Shoal_2vCPU_1024MB"], vm
