"""Issue 11: a scale set's system-assigned identity, used from inside an instance by the
real SDK: the instance runs this suite's Python with azure-identity, and an unchanged
`ManagedIdentityCredential()` (which finds IDENTITY_ENDPOINT/IDENTITY_HEADER, as on App
Service) drives a `ComputeManagementClient`. With Reader on its own set it reads the set
and is refused the delete."""

import base64
import sys
import tempfile
import uuid
from pathlib import Path

from azure.mgmt.compute import models as cm

from conftest import (
    DEADLINE,
    SUBSCRIPTION,
    arm_request,
    env,
    http_get,
    owner_token,
    shoal_cli,
    shoal_ext,
    vmss_model,
    wait_for,
)

PROBE = '''import http.server, json, os, sys
from azure.core.exceptions import HttpResponseError
from azure.core.pipeline.policies import SansIOHTTPPolicy
from azure.identity import ManagedIdentityCredential
from azure.mgmt.compute import ComputeManagementClient

endpoint, group, name = open(os.environ["SHOAL_CUSTOM_DATA"]).read().split()

class AllowHttpBearer(SansIOHTTPPolicy):
    def on_request(self, request):
        request.context["enforce_https"] = False

def report():
    client = ComputeManagementClient(ManagedIdentityCredential(), "%s", base_url=endpoint,
                                     per_call_policies=[AllowHttpBearer()])
    out = {}
    try:
        out["read"] = client.virtual_machine_scale_sets.get(group, name).name
    except HttpResponseError as e:
        out["read"] = "refused %%s" %% e.status_code
    try:
        client.virtual_machine_scale_sets.begin_delete(group, name)
        out["delete"] = "accepted"
    except HttpResponseError as e:
        out["delete"] = "refused %%s" %% e.status_code
    return out

class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps(report()).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

http.server.HTTPServer(("", int(os.environ["PORT"])), H).serve_forever()
''' % SUBSCRIPTION


def test_an_instance_uses_its_identity_through_managed_identity_credential(compute, group):
    work = Path(tempfile.mkdtemp(prefix="shoal-mi-"))
    (work / "probe.py").write_text(PROBE)
    work.chmod(0o755)
    (work / "probe.py").chmod(0o644)
    shoal_cli(
        "image", "create", "-g", group, "--gallery", "apps", "--name", "probe", "--version", "1.0.0",
        "--dir", str(work), "--command", f"{sys.executable} probe.py", "--port", "8080",
    )
    image = (
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{group}/providers/"
        "Microsoft.Compute/galleries/apps/images/probe/versions/1.0.0"
    )
    custom = f"{env('SHOAL_SDK_ENDPOINT')} {group} probe"
    model = vmss_model(image, 1, custom_data=base64.b64encode(custom.encode()).decode())
    model.identity = cm.VirtualMachineScaleSetIdentity(type="SystemAssigned")
    created = compute.virtual_machine_scale_sets.begin_create_or_update(group, "probe", model).result(
        timeout=DEADLINE
    )
    assert created.identity is not None and created.identity.principal_id, created.identity
    set_id = created.id

    token = owner_token()
    status, body, _ = arm_request(
        "PUT",
        f"{set_id}/providers/Microsoft.Authorization/roleAssignments/{uuid.uuid4()}",
        {"properties": {
            "roleDefinitionId": f"/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Authorization/"
                                "roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7",
            "principalId": created.identity.principal_id,
        }},
        token,
    )
    assert status == 201, body

    def reported():
        vm = list(compute.virtual_machine_scale_set_vms.list(group, "probe"))[0]
        address = shoal_ext(vm).get("address")
        if not address:
            return None
        import json
        report = json.loads(http_get(address, timeout=30)[1])
        return report if report.get("read") == "probe" else None

    report = wait_for("the instance reads its set with its identity", reported)
    assert report["delete"] == "refused 403", report
    assert compute.virtual_machine_scale_sets.get(group, "probe").name == "probe"
