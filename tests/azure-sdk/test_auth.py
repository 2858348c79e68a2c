"""The two ways to authenticate: a static token over plain http, and unchanged
`DefaultAzureCredential()` code (managed identity served by Shoal) over https."""

import json
import os
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError
from azure.identity import DefaultAzureCredential, ManagedIdentityCredential
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.resource.resources import ResourceManagementClient

from conftest import (
    DEADLINE,
    LOCATION,
    SUBSCRIPTION,
    StaticTokenCredential,
    answers,
    create_vmss,
    env,
    unique,
)

ARM_SCOPE = "https://management.azure.com/.default"


def test_bearer_token_over_http_needs_enforce_https_off(endpoint):
    # As shipped, azure-core refuses to send a bearer token over http...
    # (retry_total=0: azure-core would otherwise retry the refusal with backoff.)
    plain = ComputeManagementClient(StaticTokenCredential(), SUBSCRIPTION, base_url=endpoint, retry_total=0)
    with pytest.raises(ServiceRequestError, match="non-TLS"):
        list(plain.virtual_machine_scale_sets.list_all())
    # ...unless the call says enforce_https=False (per call)...
    assert isinstance(list(plain.virtual_machine_scale_sets.list_all(enforce_https=False)), list)


def test_static_token_client_sends_the_token(compute, group):
    # ...or the client carries the policy from conftest.AllowHttpBearer (every call).
    seen = {}

    def hook(response):
        seen["authorization"] = response.http_request.headers.get("Authorization")

    list(compute.virtual_machine_scale_sets.list(group, raw_response_hook=hook))
    assert seen["authorization"] == "Bearer shoal-static-token"


@pytest.fixture
def managed_identity(monkeypatch, endpoint):
    """The environment an App Service-style managed identity gives a process."""
    secret = (Path(env("SHOAL_SDK_DATA_DIR")) / "identity-header").read_text().strip()
    # Only this suite's variables: nothing else in the environment may pick another credential.
    for name in list(os.environ):
        if name.startswith(("AZURE_", "MSI_", "IDENTITY_", "IMDS_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("IDENTITY_ENDPOINT", f"{endpoint}/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", secret)
    return secret


def test_token_endpoint_shape(endpoint, managed_identity):
    # The secret lives in the data directory, readable by the server's user only.
    assert (Path(env("SHOAL_SDK_DATA_DIR")) / "identity-header").stat().st_mode & 0o777 == 0o600
    url = f"{endpoint}/msi/token?api-version=2019-08-01&resource=https://management.azure.com"
    req = urllib.request.Request(url, headers={"X-IDENTITY-HEADER": managed_identity})
    with urllib.request.urlopen(req, timeout=5) as r:
        body = json.load(r)
    assert set(body) >= {"access_token", "expires_on", "resource", "token_type"}
    assert body["resource"] == "https://management.azure.com" and body["token_type"] == "Bearer"
    assert int(body["expires_on"]) > 0

    bad = urllib.request.Request(url, headers={"X-IDENTITY-HEADER": "wrong"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(bad, timeout=5)
    assert e.value.code == 401
    refused = json.load(e.value)
    assert refused["error"]["code"] == "Unauthorized" and refused["statusCode"] == 401
    assert e.value.headers.get("Retry-After") is None


def test_default_azure_credential_over_https(managed_identity, monkeypatch):
    tls_endpoint = env("SHOAL_SDK_TLS_ENDPOINT")
    cert = env("SHOAL_SDK_TLS_CERT")

    # The user's code, unchanged but for where ARM is and which certificate to trust.
    credential = DefaultAzureCredential()
    token = credential.get_token(ARM_SCOPE)
    assert token.token.startswith("shoal.")
    resources = ResourceManagementClient(credential, SUBSCRIPTION, base_url=tls_endpoint, connection_verify=cert)
    compute = ComputeManagementClient(credential, SUBSCRIPTION, base_url=tls_endpoint, connection_verify=cert)

    urls = []

    def hook(response):
        urls.append(response.http_request.url)
        assert response.http_request.headers["Authorization"] == f"Bearer {token.token}"

    group = unique("tls")
    resources.resource_groups.create_or_update(group, {"location": LOCATION}, raw_response_hook=hook)
    try:
        name = unique("web")
        vmss = create_vmss(compute, group, name, capacity=1, raw_response_hook=hook)
        assert vmss.properties.provisioning_state == "Succeeded"
        assert answers(compute, group, name, "0") == "instance 0"
        # Every request, the operation polls included, went to the https listener: the
        # URLs Shoal hands out (Azure-AsyncOperation) keep the scheme the client used.
        assert any("/operations/" in u for u in urls)
        assert all(u.startswith(tls_endpoint) for u in urls), urls
    finally:
        resources.resource_groups.begin_delete(group).result(timeout=DEADLINE)


def test_https_refused_without_trusting_the_certificate(managed_identity):
    tls_endpoint = env("SHOAL_SDK_TLS_ENDPOINT")
    compute = ComputeManagementClient(DefaultAzureCredential(), SUBSCRIPTION, base_url=tls_endpoint, retry_total=0)
    with pytest.raises(ServiceRequestError):
        list(compute.virtual_machine_scale_sets.list_all())


def test_wrong_identity_secret_is_refused(managed_identity, monkeypatch):
    monkeypatch.setenv("IDENTITY_HEADER", "not-the-secret")
    with pytest.raises(ClientAuthenticationError):
        ManagedIdentityCredential().get_token(ARM_SCOPE)
