#!/usr/bin/env bash
# The README's quickstart, run as a script against a running `shoal serve`
# (SHOAL_ENDPOINT says where; `shoal` must be on PATH). Fails on the first broken step.
set -euo pipefail
cd "$(dirname "$0")/../.."

addr_of() { # instance id -> address:port, from list-instances --output json
  shoal vmss list-instances -g demo -n web --output json |
    python3 -c "import json,sys; print(next(i['properties']['shoal']['address'] for i in json.load(sys.stdin) if i['instanceId']=='$1'))"
}

shoal group create --name demo --location local >/dev/null
shoal image create -g demo --gallery apps --name web --version 1.0.0 \
      --dir examples/web --command ./shoal-web --port 8080 >/dev/null
shoal vmss create -g demo -n web --image apps/web:1.0.0 --instance-count 3 --vm-sku Shoal_1vCPU_512MB >/dev/null
shoal vmss list-instances -g demo -n web --output table
answer=$(curl -sS --max-time 5 "http://$(addr_of 0)/")
[ "$answer" = "instance 0" ] || { echo "instance 0 answered '$answer'"; exit 1; }
shoal vmss scale -g demo -n web --new-capacity 10 >/dev/null
for verb in restart stop start deallocate reimage; do
  shoal vmss "$verb" -g demo -n web --instance-ids 3 4
done
shoal vmss start -g demo -n web --instance-ids 3 4
shoal vmss delete-instances -g demo -n web --instance-ids 5 6
shoal vmss show -g demo -n web | python3 -c "import json,sys; d=json.load(sys.stdin); assert d['sku']['capacity']==8, d['sku']; assert d['properties']['provisioningState']=='Succeeded'"
shoal vmss get-instance-view -g demo -n web | python3 -c "import json,sys; d=json.load(sys.stdin); assert {'code':'PowerState/running','count':8} in d['virtualMachine']['statusesSummary'], d"
answer=$(curl -sS --max-time 5 "http://$(addr_of 3)/")
[ "$answer" = "instance 3" ] || { echo "instance 3 answered '$answer'"; exit 1; }
shoal vmss delete -g demo -n web
shoal group show --name demo | python3 -c "import json,sys; d=json.load(sys.stdin); assert d['id'].startswith('/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/demo'), d"
echo "quickstart: ok"
