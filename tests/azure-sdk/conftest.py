"""Fixtures for the Azure SDK compatibility suite.

scripts/azure-sdk.sh starts a fresh `shoal serve` and tells this suite where it is:

- SHOAL_SDK_ENDPOINT      http://127.0.0.1:PORT (plain http listener)
- SHOAL_SDK_TLS_ENDPOINT  https://127.0.0.1:PORT (TLS listener; tests needing it skip without it)
- SHOAL_SDK_TLS_CERT      the certificate the TLS listener serves (the client trusts it)
- SHOAL_SDK_DATA_DIR      the server's data directory (holds the identity header secret and
                          the Owner credential, credentials/owner.json)
- SHOAL_SDK_BIN           the `shoal` binary (image upload is done with `shoal image create`,
                          the one step the SDK cannot do)

Clients are built exactly as a user points them at a private endpoint:
`ComputeManagementClient(credential, subscription_id, base_url=endpoint)`, with a
`ClientSecretCredential` of the server's Owner credential whose authority is Shoal's https
listener (MSAL accepts only https authorities) and instance discovery off.
"""

import json
import os
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest
from azure.core.credentials import AccessToken
from azure.core.pipeline.policies import SansIOHTTPPolicy
from azure.identity import ClientSecretCredential
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.compute import models as cm
from azure.mgmt.monitor import MonitorManagementClient
from azure.mgmt.network import NetworkManagementClient
from azure.mgmt.resource.resources import ResourceManagementClient

REPO = Path(__file__).resolve().parents[2]
SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
LOCATION = "local"
SKU = "Shoal_1vCPU_512MB"
# Generous deadlines: tests wait for conditions, they do not measure speed.
DEADLINE = 120


def env(name):
    value = os.environ.get(name)
    if not value:
        pytest.skip(f"{name} is not set: run the suite with scripts/azure-sdk.sh")
    return value


# --- authentication -------------------------------------------------------------------


def owner():
    """The Owner credential the server wrote at first start (tenant, appId, password)."""
    path = Path(env("SHOAL_SDK_DATA_DIR")) / "credentials" / "owner.json"
    return json.loads(path.read_text())


def secret_credential(tenant, client_id, secret):
    """A ClientSecretCredential signing in at Shoal's token authority."""
    return ClientSecretCredential(
        tenant,
        client_id,
        secret,
        authority=env("SHOAL_SDK_TLS_ENDPOINT"),
        disable_instance_discovery=True,
        connection_verify=env("SHOAL_SDK_TLS_CERT"),
    )


def owner_token():
    o = owner()
    return secret_credential(o["tenant"], o["appId"], o["password"]).get_token(
        "https://management.azure.com/.default"
    ).token


def arm_request(method, path, body=None, token=None):
    """A raw ARM call to the http listener: (status, parsed JSON body or None, headers)."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    sep = "&" if "?" in path else "?"
    req = urllib.request.Request(
        f"{env('SHOAL_SDK_ENDPOINT')}{path}{sep}api-version=2022-04-01", data=data, method=method, headers=headers
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            text = r.read().decode()
            return r.status, (json.loads(text) if text.strip() else None), r.headers
    except urllib.error.HTTPError as e:
        text = e.read().decode()
        return e.code, (json.loads(text) if text.strip() else None), e.headers


def service_principal(name, role, scope):
    """A new service principal with `role` at `scope` (as `shoal ad sp create-for-rbac`):
    its credential."""
    token = owner_token()
    status, sp, _ = arm_request(
        "POST", "/providers/Shoal.Directory/servicePrincipals", {"displayName": name}, token
    )
    assert status == 201, sp
    status, defs, _ = arm_request(
        "GET", f"{scope}/providers/Microsoft.Authorization/roleDefinitions?$filter=" + urllib.parse.quote(f"roleName eq '{role}'"), token=token
    )
    assert status == 200 and defs["value"], defs
    status, body, _ = arm_request(
        "PUT",
        f"{scope}/providers/Microsoft.Authorization/roleAssignments/{uuid.uuid4()}",
        {"properties": {"roleDefinitionId": defs["value"][0]["id"], "principalId": sp["id"]}},
        token,
    )
    assert status == 201, body
    credential = secret_credential(sp["tenant"], sp["appId"], sp["password"])
    credential.shoal_sp = sp  # appId, password, tenant, as create-for-rbac prints
    return credential


class StaticTokenCredential:
    """A credential holding one fixed bearer token (Shoal refuses tokens it did not sign)."""

    def __init__(self, token="shoal-static-token"):
        self._token = token

    def get_token(self, *scopes, **kwargs):
        return AccessToken(self._token, int(time.time()) + 3600)


class AllowHttpBearer(SansIOHTTPPolicy):
    """Lets the bearer-token policy send its token over plain http.

    azure-core's BearerTokenCredentialPolicy (and azure-mgmt-core's
    ARMChallengeAuthenticationPolicy) refuse non-https URLs unless the request context
    says `enforce_https` is False. That flag is normally a per-call keyword
    (`client.virtual_machine_scale_sets.get(..., enforce_https=False)`); a per-call policy
    that sets it once covers every request of the client, LRO polls included.
    """

    def on_request(self, request):
        request.context["enforce_https"] = False


def http_client_kwargs():
    return {"per_call_policies": [AllowHttpBearer()]}


@pytest.fixture(scope="session")
def endpoint():
    return env("SHOAL_SDK_ENDPOINT")


@pytest.fixture(scope="session")
def credential():
    o = owner()
    return secret_credential(o["tenant"], o["appId"], o["password"])


@pytest.fixture(scope="session")
def compute(endpoint, credential):
    return ComputeManagementClient(credential, SUBSCRIPTION, base_url=endpoint, **http_client_kwargs())


@pytest.fixture(scope="session")
def resources(endpoint, credential):
    return ResourceManagementClient(credential, SUBSCRIPTION, base_url=endpoint, **http_client_kwargs())


@pytest.fixture(scope="session")
def network(endpoint, credential):
    return NetworkManagementClient(credential, SUBSCRIPTION, base_url=endpoint, **http_client_kwargs())


@pytest.fixture(scope="session")
def monitor(endpoint, credential):
    return MonitorManagementClient(credential, SUBSCRIPTION, base_url=endpoint, **http_client_kwargs())


# --- resources ------------------------------------------------------------------------


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def group(resources):
    """A fresh resource group, deleted (with everything in it) after the test."""
    name = unique("sdk")
    resources.resource_groups.create_or_update(name, {"location": LOCATION})
    yield name
    try:
        resources.resource_groups.begin_delete(name).result(timeout=DEADLINE)
    except Exception as e:  # a failed cleanup must not hide the test's own outcome
        print(f"cleanup of {name} failed: {e}")


def shoal_cli(*args):
    """Runs the `shoal` CLI against the suite's server and returns its JSON output."""
    out = subprocess.run(
        [env("SHOAL_SDK_BIN"), "--endpoint", env("SHOAL_SDK_ENDPOINT"), *args, "--output", "json"],
        env={**os.environ, "SHOAL_DATA_DIR": env("SHOAL_SDK_DATA_DIR")},
        check=True,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=DEADLINE,
    )
    return json.loads(out.stdout) if out.stdout.strip() else None


_images = {}


def web_image(group, version="1.0.0"):
    """Uploads examples/web as gallery image `apps/web:<version>` in `group` (via the CLI:
    the SDK has no bundle upload) and returns the version's ARM id."""
    key = (group, version)
    if key not in _images:
        shoal_cli(
            "image", "create", "-g", group, "--gallery", "apps", "--name", "web",
            "--version", version, "--dir", "examples/web", "--command", "./shoal-web",
            "--port", "8080",
        )
        _images[key] = (
            f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{group}/providers/"
            f"Microsoft.Compute/galleries/apps/images/web/versions/{version}"
        )
    return _images[key]


def vmss_model(image_id, capacity, upgrade_mode="Manual", custom_data=None):
    """A scale set as a user writes it with the SDK's model classes."""
    os_profile = cm.VirtualMachineScaleSetOSProfile(computer_name_prefix="web", admin_username="azureuser")
    if custom_data is not None:
        os_profile.custom_data = custom_data
    return cm.VirtualMachineScaleSet(
        location=LOCATION,
        sku=cm.Sku(name=SKU, capacity=capacity),
        properties=cm.VirtualMachineScaleSetProperties(
            upgrade_policy=cm.UpgradePolicy(mode=upgrade_mode),
            virtual_machine_profile=cm.VirtualMachineScaleSetVMProfile(
                os_profile=os_profile,
                storage_profile=cm.VirtualMachineScaleSetStorageProfile(
                    image_reference=cm.ImageReference(id=image_id)
                ),
            ),
        ),
    )


def create_vmss(compute, group, name, capacity, upgrade_mode="Manual", custom_data=None, **call_kwargs):
    image = web_image(group)
    poller = compute.virtual_machine_scale_sets.begin_create_or_update(
        group, name, vmss_model(image, capacity, upgrade_mode, custom_data), **call_kwargs
    )
    return poller.result(timeout=DEADLINE)


# --- effects --------------------------------------------------------------------------


def http_get(address, path="/", timeout=5):
    with urllib.request.urlopen(f"http://{address}{path}", timeout=timeout) as r:
        return r.status, r.read().decode().strip()


def wait_for(what, check, deadline=DEADLINE, interval=0.5):
    """Polls `check()` until it returns something truthy; fails with `what` otherwise."""
    end = time.monotonic() + deadline
    last = None
    while time.monotonic() < end:
        try:
            last = check()
            if last:
                return last
        except Exception as e:  # the condition may not be reachable yet
            last = e
        time.sleep(interval)
    pytest.fail(f"timed out waiting for {what} (last: {last!r})")


def shoal_ext(vm):
    """Shoal's extension object of an instance (`properties.shoal`), as a dict."""
    return dict(vm.properties.get("shoal") or {}) if vm.properties is not None else {}


def instances(compute, group, name):
    return list(compute.virtual_machine_scale_set_vms.list(group, name, expand="instanceView"))


def answers(compute, group, name, instance_id):
    """The instance's answer to `GET /` at the address the API reports for it."""
    vm = compute.virtual_machine_scale_set_vms.get(group, name, instance_id)
    address = shoal_ext(vm).get("address")
    assert address, f"instance {instance_id} has no address: {shoal_ext(vm)}"
    status, body = http_get(address)
    assert status == 200
    return body


def power_state(vm_or_view):
    view = getattr(vm_or_view, "properties", None)
    view = view.instance_view if view is not None else vm_or_view
    codes = [s.code for s in (view.statuses or []) if s.code.startswith("PowerState/")]
    return codes[0].split("/", 1)[1] if codes else None
