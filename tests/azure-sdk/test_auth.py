"""Signing in as Azure clients do, and Azure RBAC: `ClientSecretCredential` and
`DefaultAzureCredential` (service-principal variables, managed identity) against Shoal's
token authority; no token is a 401; a Reader can list but not write; a Contributor of one
group cannot touch another."""

import base64

import json
import os
import uuid
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ServiceRequestError
from azure.identity import DefaultAzureCredential, ManagedIdentityCredential
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.resource.resources import ResourceManagementClient

from conftest import (
    DEADLINE,
    LOCATION,
    SUBSCRIPTION,
    StaticTokenCredential,
    answers,
    arm_request,
    create_vmss,
    env,
    http_client_kwargs,
    owner,
    owner_token,
    service_principal,
    unique,
)

ARM_SCOPE = "https://management.azure.com/.default"


def claims(token):
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def test_bearer_token_over_http_needs_enforce_https_off(endpoint, credential):
    # As shipped, azure-core refuses to send a bearer token over http...
    # (retry_total=0: azure-core would otherwise retry the refusal with backoff.)
    plain = ComputeManagementClient(credential, SUBSCRIPTION, base_url=endpoint, retry_total=0)
    with pytest.raises(ServiceRequestError, match="non-TLS"):
        list(plain.virtual_machine_scale_sets.list_all())
    # ...unless the call says enforce_https=False (per call)...
    assert isinstance(list(plain.virtual_machine_scale_sets.list_all(enforce_https=False)), list)


def test_client_secret_credential_sends_a_shoal_token(compute, group):
    # ...or the client carries the policy from conftest.AllowHttpBearer (every call).
    seen = {}

    def hook(response):
        seen["authorization"] = response.http_request.headers.get("Authorization")

    list(compute.virtual_machine_scale_sets.list(group, raw_response_hook=hook))
    token = seen["authorization"].removeprefix("Bearer ")
    c = claims(token)
    o = owner()
    assert (c["tid"], c["appid"]) == (o["tenant"], o["appId"])
    assert c["aud"] in ("https://management.azure.com/", "https://management.core.windows.net/")
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header["alg"] == "RS256" and header["kid"]


def test_no_token_or_a_foreign_token_is_401_with_a_challenge():
    status, body, headers = arm_request("GET", f"/subscriptions/{SUBSCRIPTION}/resourcegroups")
    assert status == 401 and body["error"]["code"] == "AuthenticationFailed"
    challenge = headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer authorization_uri=") and 'error="invalid_token"' in challenge
    assert owner()["tenant"] in challenge
    status, body, _ = arm_request("GET", f"/subscriptions/{SUBSCRIPTION}/resourcegroups", token="shoal-static-token")
    assert status == 401 and body["error"]["code"] == "InvalidAuthenticationToken"
    # The SDK raises its authentication error.
    compute = ComputeManagementClient(StaticTokenCredential(), SUBSCRIPTION, base_url=env("SHOAL_SDK_ENDPOINT"),
                                      retry_total=0, **http_client_kwargs())
    with pytest.raises(ClientAuthenticationError):
        list(compute.virtual_machine_scale_sets.list_all())


def test_discovery_answers_without_a_token(credential):
    status, cloud, _ = arm_request("GET", "/metadata/endpoints")
    assert status == 200
    status, subs, _ = arm_request("GET", "/subscriptions", token=credential.get_token(ARM_SCOPE).token)
    assert status == 200
    assert [s["subscriptionId"] for s in subs["value"]] == [SUBSCRIPTION]
    assert subs["value"][0]["tenantId"] == owner()["tenant"]
    status, body, _ = arm_request(
        "GET", "/subscriptions/11111111-2222-3333-4444-555555555555/resourcegroups",
        token=credential.get_token(ARM_SCOPE).token,
    )
    assert status == 404 and body["error"]["code"] == "SubscriptionNotFound"


def test_a_reader_lists_but_cannot_write(resources, group):
    reader = service_principal(unique("reader"), "Reader", f"/subscriptions/{SUBSCRIPTION}")
    as_reader = ResourceManagementClient(reader, SUBSCRIPTION, base_url=env("SHOAL_SDK_ENDPOINT"),
                                         retry_total=0, **http_client_kwargs())
    assert group in [g.name for g in as_reader.resource_groups.list()]
    other = unique("denied")
    with pytest.raises(HttpResponseError) as e:
        as_reader.resource_groups.create_or_update(other, {"location": LOCATION})
    assert e.value.status_code == 403 and e.value.error.code == "AuthorizationFailed"
    # Azure names the action as the request spelled the type (the SDK sends "resourcegroups").
    assert (
        "does not have authorization to perform action 'microsoft.resources/subscriptions/resourcegroups/write'"
        in e.value.error.message.lower()
    )
    # Nothing changed.
    assert not resources.resource_groups.check_existence(other)


def test_a_contributor_of_one_group_cannot_touch_another(resources, group):
    scope = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{group}"
    contributor = service_principal(unique("contrib"), "Contributor", scope)
    mine = ResourceManagementClient(contributor, SUBSCRIPTION, base_url=env("SHOAL_SDK_ENDPOINT"),
                                    retry_total=0, **http_client_kwargs())
    mine.resource_groups.update(group, {"tags": {"by": "contributor"}})
    assert resources.resource_groups.get(group).tags == {"by": "contributor"}
    other = unique("other")
    resources.resource_groups.create_or_update(other, {"location": LOCATION})
    try:
        with pytest.raises(HttpResponseError) as e:
            mine.resource_groups.update(other, {"tags": {"by": "contributor"}})
        assert e.value.status_code == 403
        with pytest.raises(HttpResponseError) as e:
            mine.resource_groups.begin_delete(other)
        assert e.value.status_code == 403
        assert resources.resource_groups.get(other).tags in (None, {})
    finally:
        resources.resource_groups.begin_delete(other).result(timeout=DEADLINE)


def test_default_azure_credential_with_service_principal_variables(monkeypatch, group):
    sp = service_principal(unique("env"), "Reader", f"/subscriptions/{SUBSCRIPTION}")
    for name in list(os.environ):
        if name.startswith(("AZURE_", "MSI_", "IDENTITY_", "IMDS_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AZURE_TENANT_ID", sp.shoal_sp["tenant"])
    monkeypatch.setenv("AZURE_CLIENT_ID", sp.shoal_sp["appId"])
    monkeypatch.setenv("AZURE_CLIENT_SECRET", sp.shoal_sp["password"])
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", env("SHOAL_SDK_TLS_ENDPOINT"))
    credential = DefaultAzureCredential(disable_instance_discovery=True, connection_verify=env("SHOAL_SDK_TLS_CERT"))
    as_env = ResourceManagementClient(credential, SUBSCRIPTION, base_url=env("SHOAL_SDK_ENDPOINT"),
                                      **http_client_kwargs())
    assert group in [g.name for g in as_env.resource_groups.list()]


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
    assert claims(token.token)["tid"] == owner()["tenant"]
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


def self_signed(tmp_path, name):
    """A new RSA key and self-signed certificate: (PEM file with both, certificate PEM)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path = tmp_path / f"{name}.pem"
    path.write_bytes(key_pem + cert_pem)
    return str(path), cert_pem.decode()


def test_certificate_credential_signs_in_with_a_registered_certificate(tmp_path, group):
    from azure.identity import CertificateCredential

    pem_path, cert_pem = self_signed(tmp_path, "shoal-cert-sp")
    token = owner_token()
    status, sp, _ = arm_request(
        "POST", "/providers/Shoal.Directory/servicePrincipals",
        {"displayName": unique("certsp"), "certificate": cert_pem}, token,
    )
    assert status == 201, sp
    assert sp["keyCredentials"][0]["type"] == "AsymmetricX509Cert"
    scope = f"/subscriptions/{SUBSCRIPTION}"
    status, defs, _ = arm_request(
        "GET", f"{scope}/providers/Microsoft.Authorization/roleDefinitions?$filter=roleName%20eq%20%27Reader%27",
        token=token,
    )
    assert status == 200, defs
    status, body, _ = arm_request(
        "PUT", f"{scope}/providers/Microsoft.Authorization/roleAssignments/{uuid.uuid4()}",
        {"properties": {"roleDefinitionId": defs["value"][0]["id"], "principalId": sp["id"]}}, token,
    )
    assert status in (200, 201), body

    def credential(path):
        return CertificateCredential(
            sp["tenant"], sp["appId"], certificate_path=path,
            authority=env("SHOAL_SDK_TLS_ENDPOINT"), disable_instance_discovery=True,
            connection_verify=env("SHOAL_SDK_TLS_CERT"),
        )

    client = ResourceManagementClient(credential(pem_path), SUBSCRIPTION, base_url=env("SHOAL_SDK_ENDPOINT"),
                                      **http_client_kwargs())
    assert group in [g.name for g in client.resource_groups.list()]

    # A certificate that was never registered signs nothing in.
    other_path, _ = self_signed(tmp_path, "not-registered")
    with pytest.raises(ClientAuthenticationError):
        credential(other_path).get_token("https://management.azure.com/.default")
    # A certificate that is not one is refused when registered, naming the field.
    status, err, _ = arm_request(
        "POST", "/providers/Shoal.Directory/servicePrincipals",
        {"displayName": unique("badcert"), "certificate": "not a certificate"}, token,
    )
    assert status == 400 and err["error"]["target"] == "certificate", err
