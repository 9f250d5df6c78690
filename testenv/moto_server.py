"""moto_server with one AWS behaviour moto lacks, for the provider tests.

ELBv2 CreateLoadBalancer is idempotent on AWS: "If you attempt to create
multiple load balancers with the same settings, each call succeeds" (API
reference, CreateLoadBalancer), and a second load balancer of that name with
other settings is refused with DuplicateLoadBalancerName. moto makes a second
load balancer of the same name instead, so an SDK retry of a create whose
first answer was slow (a loaded test machine) showed up as a duplicate that
AWS would never make. Usage as moto_server: moto_server.py -H HOST -p PORT.
"""

import sys

from moto.elbv2.exceptions import DuplicateLoadBalancerName
from moto.elbv2.models import ELBv2Backend
from moto.server import main

_create_load_balancer = ELBv2Backend.create_load_balancer


def _idempotent_create_load_balancer(self, **request):
    name = request.get("name")
    for existing in self.load_balancers.values():
        if existing.name != name:
            continue
        same = (existing.scheme or "internet-facing") == (
            request.get("scheme") or "internet-facing"
        ) and (
            existing.type == (request.get("loadbalancer_type") or "application")
        )
        if same:
            return existing
        raise DuplicateLoadBalancerName()
    return _create_load_balancer(self, **request)


ELBv2Backend.create_load_balancer = _idempotent_create_load_balancer

if __name__ == "__main__":
    sys.exit(main())
